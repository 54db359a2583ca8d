#!/usr/bin/env bash
# Does augment_on="device" keep a GPU fed? From a clean checkout on a machine with one GPU, in under
# 8 minutes: writes its own synthetic sketch JPEGs, then trains resnext50_32x4d at 224 px, bf16 +
# channels_last, with 4 and 14 loader workers, augment_on workers vs device, plus the same loop fed
# batches already on the GPU (the ceiling). One row each: img/s, share of the ceiling, data wait, peak memory.
#
#   bash bench/gpu_check.sh                        # on the GPU machine
#   SKETCHBOOK_GPU_CHECK_TINY=1 bash bench/gpu_check.sh   # anywhere, in seconds: proves it runs
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import timm, torchvision, pandas" 2>/dev/null || pip install -q -r requirements.txt
export WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU: CPU run"
if [ "${SKETCHBOOK_GPU_CHECK_TINY:-0}" = "1" ]; then
  exec timeout 480 python bench/gpu_feed.py --tiny
fi
# 60 steps x 128 images a row (7,680 images, 200-800 px), one warm-up epoch + one timed epoch per row
exec timeout 480 python bench/gpu_feed.py --model resnext50_32x4d --size 224 --batch 128 --steps 60 \
  --workers 4 14 --precision bf16 --cache memory
