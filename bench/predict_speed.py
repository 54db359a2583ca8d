"""Prediction speed: engine.predict.inference.predict_probs against a bare `model(x)` loop, same data/model/batch.

    python bench/predict_speed.py [--model resnet18] [--image-size 64] [--images 512] [--batch-size 64]
                                  [--workers 1] [--rounds 5] [--device cpu|cuda]

Both read the same decoded-and-resized uint8 images through the same DataLoader settings; the bare loop
does only what any hand-written predict must (to device, normalise, model(x), softmax), with the same
precision and memory format, so the ratio is the engine's own overhead. Rounds are interleaved
(engine, bare, engine, ...) so background load hits both alike; the table shows medians.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.data.batches.loader import ImageDataset  # noqa: E402
from engine.data.tables.demo_digits import build_demo_data  # noqa: E402
from engine.predict.inference import load_ensemble, predict_probs  # noqa: E402
from engine.system.device import autocast_dtype  # noqa: E402
from engine.models import build_model, data_config  # noqa: E402
from engine.recipe import Recipe  # noqa: E402
from engine.data.pixels.transforms import build_eval_transform  # noqa: E402


def make_checkpoint(model_name: str, image_size: int, classes: list[str], path: Path) -> Path:
    model = build_model(model_name, len(classes))
    recipe = Recipe(model=model_name, image_size=image_size)
    torch.save({"model": model.state_dict(), "recipe": recipe.to_dict(), "classes": classes,
                "data": data_config(model), "epoch": 0, "metrics": {}}, path)
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_pass(members, paths, batch_size: int, workers: int) -> float:
    device = next(members[0].model.parameters()).device
    t0 = time.perf_counter()
    predict_probs(members, paths, batch_size, num_workers=workers, show_progress=False)
    sync(device)
    return len(paths) / (time.perf_counter() - t0)


@torch.inference_mode()
def bare_pass(member, paths, batch_size: int, workers: int) -> float:
    """The minimal loop: DataLoader -> device -> normalise -> model(x) -> softmax, results kept on the device."""
    model, device = member.model, next(member.model.parameters()).device
    dataset = ImageDataset(paths, None, build_eval_transform(member.recipe.image_size, member.crop_pct))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    amp = autocast_dtype("auto", device)
    outputs = []
    t0 = time.perf_counter()
    for x, _ in loader:
        x = member.normalize(x.to(device, non_blocking=True))
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            outputs.append(model(x).float().softmax(1))
    torch.cat(outputs).cpu()
    sync(device)
    return len(paths) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = build_demo_data(Path(tmp) / "demo")
        paths = sorted(str(f) for f in (root / "train").glob("*/*.png"))
        paths = (paths * (args.images // len(paths) + 1))[:args.images]
        ckpt = make_checkpoint(args.model, args.image_size, [str(i) for i in range(10)], Path(tmp) / "m.pt")
        members = load_ensemble([ckpt], torch.device(args.device))
        engine_pass(members, paths[:args.batch_size], args.batch_size, 0)  # warm-up: allocator, kernels
        bare_pass(members[0], paths[:args.batch_size], args.batch_size, 0)
        engine, bare = [], []
        for _ in range(args.rounds):
            engine.append(engine_pass(members, paths, args.batch_size, args.workers))
            bare.append(bare_pass(members[0], paths, args.batch_size, args.workers))
    ratios = [e / b for e, b in zip(engine, bare)]
    print(f"device {args.device} ({torch.get_num_threads()} threads), {args.model} at {args.image_size}px, "
          f"{args.images} images, batch {args.batch_size}, {args.workers} workers, {args.rounds} interleaved rounds")
    print(f"| {'loop':<34} | {'img/s (median)':>14} | {'min':>8} | {'max':>8} |")
    print(f"|{'-' * 36}|{'-' * 16}|{'-' * 10}|{'-' * 10}|")
    for name, values in (("engine.predict.inference.predict_probs", engine), ("bare model(x) loop", bare)):
        print(f"| {name:<34} | {statistics.median(values):>14.1f} | {min(values):>8.1f} | {max(values):>8.1f} |")
    print(f"ratio engine / bare: median {statistics.median(ratios):.3f} (per round: "
          + ", ".join(f"{r:.3f}" for r in ratios) + ")")


if __name__ == "__main__":
    main()
