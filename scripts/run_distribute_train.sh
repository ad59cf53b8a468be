#!/bin/bash
# Usage: scripts/run_distribute_train.sh DEVICE_NUM VISIBLE_DEVICES CONFIG [PRETRAINED_CKPT]
# e.g.   scripts/run_distribute_train.sh 8 0,1,2,3,4,5,6,7 config/kinetics400_finetune_8gpu.yaml
# Data-parallel over DEVICE_NUM workers started by msrun (NCCL on GPU); logs in
# $LOG_DIR (default: msrun_log). Extra settings: EXTRA="train.steps=100 data.workers=4".
set -euo pipefail
if [ $# -lt 3 ] || [ $# -gt 4 ]; then
  echo "Usage: $0 DEVICE_NUM VISIBLE_DEVICES CONFIG [PRETRAINED_CKPT]" >&2; exit 2
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$ROOT/.venv/bin}"
export CUDA_VISIBLE_DEVICES="$2"
export PATH="$BIN:$PATH"   # msrun starts each worker with the `python` found on PATH
exec "$BIN/msrun" --worker_num="$1" --local_worker_num="$1" --master_port="${MASTER_PORT:-8118}" \
  --log_dir="${LOG_DIR:-msrun_log}" --join=True \
  "$BIN/i3d" train --config "$3" ${4:+--pretrained "$4"} ${EXTRA:-}
