#!/bin/bash
# Usage: scripts/run_standalone_eval.sh DEVICE CONFIG CKPT DATA_PATH
# DEVICE: CPU or GPU; CKPT: a training checkpoint, 'default', or any weight file;
# DATA_PATH: a Kinetics root or a val list file. Per-video predictions: ${CSV:-eval.csv}.
set -euo pipefail
if [ $# -ne 4 ]; then
  echo "Usage: $0 DEVICE CONFIG CKPT DATA_PATH" >&2; exit 2
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
I3D="${I3D:-$ROOT/.venv/bin/i3d}"
exec "$I3D" eval --device "$1" --config "$2" --checkpoint "$3" --data "$4" --csv "${CSV:-eval.csv}"
