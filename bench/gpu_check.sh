#!/usr/bin/env bash
# The GPU check: one prepared call of under 8 minutes that a lent GPU runs whole, from a clean checkout.
# Each step has its own timeout and writes its table to $OUT (default bench/gpu_out/):
#   feed.md     every batch source (workers / device canvas / resident) at 1, 4, 14 workers vs the ceiling
#   recipes.md  every recipe in recipes/ (+ the 1st place's store): one short epoch + predict --tta + cam
#   eva.md      EVA02-L@448 bf16 img/s, share of the chip (the FLOPs each set-up runs), peak memory per set-up,
#               padded vs timm's unpadded MLPs; feature-store build vs a bare forward loop
#   eva_compile.md  the compile=True rows alone: first epoch (compilation) and img/s after it
#
#   bash bench/gpu_check.sh                               # on the GPU machine
#   SKETCHBOOK_GPU_CHECK_TINY=1 bash bench/gpu_check.sh   # anywhere, in minutes: proves every step runs
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/gpu_out}
mkdir -p "$OUT"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU: CPU run"
$PY -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
tiny=""
[ "${SKETCHBOOK_GPU_CHECK_TINY:-0}" = "1" ] && tiny="--tiny"
step() {  # step NAME SECONDS COMMAND...: its table to $OUT/NAME.md, its log to $OUT/NAME.log
  local name=$1 seconds=$2; shift 2
  local t0=$SECONDS
  timeout "$seconds" "$@" > "$OUT/$name.md" 2> "$OUT/$name.log"
  local code=$?
  echo "== $name: exit $code in $((SECONDS - t0))s"; cat "$OUT/$name.md"; tail -n 3 "$OUT/$name.log"
}
step feed 120 $PY bench/gpu_feed.py $tiny --steps 40 --workers 1 4 14
step recipes 160 $PY bench/gpu_recipes.py $tiny
step eva 90 $PY bench/gpu_eva.py $tiny
step eva_compile 100 $PY bench/gpu_eva.py $tiny --compile-only
