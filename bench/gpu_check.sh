#!/usr/bin/env bash
# The GPU check: one prepared call of under 8 minutes that a lent GPU runs whole, from a clean checkout.
# Each step has its own timeout (the budgets below sum to 460 s), writes its table to $OUT (default bench/gpu_out/)
# as it goes (a step cut by its timeout keeps its finished rows), and a failing step does not stop the others:
#   profile_epoch.md  one resident epoch (resnext50 224 b128 bf16): GPU idle share and data wait vs the ceiling,
#                     top kernels, every host sync inside the epoch by engine frame (aim: none between steps)
#   feed.md     the ceiling, a bare loop with no host syncs, resident, workers / device canvas / auto (raced)
#               at 14, 4, 1 workers: img/s, of ceiling, data wait (the GPU's clock), peak memory
#   predict.md  predict_probs with flip TTA (4 views in one forward) vs a bare loop of the same forwards, on
#               resident crops and through 14 workers (aim: >= 0.95x)
#   recipes.md  every recipe in recipes/ (+ the 1st place's store): one short epoch + predict --tta + cam
#   eva.md      EVA02-L@448 bf16 img/s, share of the chip (the FLOPs each set-up runs), peak memory per set-up,
#               padded vs timm's unpadded MLPs; feature-store build vs a bare forward loop
#   eva_compile.md  the compile=True rows alone: first epoch (compilation) and img/s after it
#
#   export OUT; bash bench/gpu_check.sh > $OUT/all.log 2>&1; tail -c 11000 $OUT/all.log   # on the GPU machine
#   SKETCHBOOK_GPU_CHECK_TINY=1 bash bench/gpu_check.sh   # anywhere, in minutes: proves every step runs
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-bench/gpu_out}
mkdir -p "$OUT"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU: CPU run"
$PY -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
tiny="" scale=1
# tiny: the same steps on small models; a 2-core CPU is slower than the GPU, so its timeouts stretch
[ "${SKETCHBOOK_GPU_CHECK_TINY:-0}" = "1" ] && tiny="--tiny" scale=${SKETCHBOOK_GPU_CHECK_TINY_SCALE:-5}
step() {  # step NAME SECONDS COMMAND...: its table to $OUT/NAME.md, its log to $OUT/NAME.log
  local name=$1 seconds=$2; shift 2
  local t0=$SECONDS
  timeout "$((seconds * scale))" "$@" > "$OUT/$name.md" 2> "$OUT/$name.log"
  local code=$?
  echo "== $name: exit $code in $((SECONDS - t0))s"; cat "$OUT/$name.md"; tail -n 3 "$OUT/$name.log"
}
step profile_epoch 40 $PY bench/gpu_profile_epoch.py $tiny
step feed 100 $PY bench/gpu_feed.py $tiny --steps 16 --workers 1 4 14
step predict 40 $PY bench/predict_speed.py --gpu-row $tiny
step recipes 120 $PY bench/gpu_recipes.py $tiny
step eva 80 $PY bench/gpu_eva.py $tiny
step eva_compile 80 $PY bench/gpu_eva.py $tiny --compile-only
echo "== gpu_check: ${SECONDS}s in all"
