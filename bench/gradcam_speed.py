"""GradCAM speed on the CPU: ms per image for a plain forward and for GradCAM (one forward + one backward).

    python bench/gradcam_speed.py [--threads 2] [--repeats 5]

Random weights (no download); the automatic layer is found once, outside the timing, as cam.py does.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.cam.gradcam import compute_cams, find_target_layer  # noqa: E402

CASES = [("test_resnet", 64), ("test_resnet", 224), ("resnet18", 64), ("resnet18", 224)]
BATCH = 8


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000 / BATCH


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} threads, batch {BATCH}, best of {args.repeats}; ms per image")
    print(f"{'model':<12} {'size':>5} {'layer':<8} {'forward':>8} {'gradcam':>8} {'gradcam top-3':>14}")
    for name, size in CASES:
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=100).eval()
        x = torch.randn(BATCH, 3, size, size)
        layer = find_target_layer(model, size)
        with torch.no_grad():
            forward = best_ms(lambda: model(x), args.repeats)
        cam = best_ms(lambda: compute_cams(model, x, layer=layer), args.repeats)
        top3 = best_ms(lambda: compute_cams(model, x, layer=layer, top_k=3), args.repeats)
        print(f"{name:<12} {size:>5} {layer:<8} {forward:>8.2f} {cam:>8.2f} {top3:>14.2f}")


if __name__ == "__main__":
    main()
