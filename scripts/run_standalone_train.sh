#!/bin/bash
# Usage: scripts/run_standalone_train.sh CONFIG [PRETRAINED_CKPT]
# The seed's entry point, now a thin wrapper over `i3d train`.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "Usage: $0 CONFIG [PRETRAINED_CKPT]" >&2; exit 2
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
I3D="${I3D:-$ROOT/.venv/bin/i3d}"
exec "$I3D" train --config "$1" ${2:+--pretrained "$2"}
