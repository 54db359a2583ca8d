"""Prediction speed: engine.predict.inference.predict_probs against a bare `model(x)` loop, same data/model/batch.

    python bench/predict_speed.py [--model resnet18] [--image-size 64] [--images 512] [--batch-size 64]
                                  [--workers 1] [--rounds 5] [--device cpu|cuda] [--flip none|h|hv]
                                  [--feeds workers resident] [--sketches]
    python bench/predict_speed.py --gpu-row [--tiny]   # the GPU check's row (bench/gpu_check.sh)

Both read the same eval crops: through the same DataLoader settings (feed "workers"), or already on the device
(feed "resident": predict_probs(resident=True) against a loop over the same resident crops). The bare loop does
only what any hand-written predict must (normalise, every TTA view concatenated into one forward, softmax summed
per image, kept on the device until the end), with the same precision and memory format, so the ratio is the
engine's own overhead. `--flip hv`: the checkpoint trained with flip="hv", predicted with TTA (4 views).
`--gpu-row`: resnext50_32x4d at 224, 2,048 synthetic sketches, batch 128, 14 workers, flip hv, both feeds.
Rounds are interleaved (engine, bare, engine, ...) so background load hits both alike; the table shows medians.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine.data.batches import resident as resident_images  # noqa: E402
from engine.data.batches.loader import eval_dataset  # noqa: E402
from engine.data.pixels.transforms import FLIP_VIEWS  # noqa: E402
from engine.data.tables.demo_digits import build_demo_data  # noqa: E402
from engine.predict.inference import load_ensemble, predict_probs  # noqa: E402
from engine.system.device import autocast_dtype  # noqa: E402
from engine.models import build_model, data_config  # noqa: E402
from engine.recipe import Recipe  # noqa: E402


def make_checkpoint(model_name: str, image_size: int, classes: list[str], path: Path, flip: str = "h") -> Path:
    model = build_model(model_name, len(classes))
    recipe = Recipe(model=model_name, image_size=image_size, flip=flip)
    torch.save({"model": model.state_dict(), "recipe": recipe.to_dict(), "classes": classes,
                "data": data_config(model), "epoch": 0, "metrics": {}}, path)
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_pass(members, paths, batch_size: int, workers: int, tta: bool, resident: bool | None) -> float:
    device = next(members[0].model.parameters()).device
    t0 = time.perf_counter()
    predict_probs(members, paths, batch_size, flip=tta, num_workers=workers, show_progress=False, resident=resident)
    sync(device)
    return len(paths) / (time.perf_counter() - t0)


@torch.inference_mode()
def bare_pass(member, paths, batch_size: int, workers: int, views: tuple, crops: torch.Tensor | None) -> float:
    """The minimal loop: eval crops (a DataLoader, or `crops` already on the device) -> normalise -> every view
    concatenated -> model(x) -> softmax summed per image, results kept on the device until the end."""
    model, device = member.model, next(member.model.parameters()).device
    amp = autocast_dtype("auto", device)
    t0 = time.perf_counter()
    if crops is None:
        loader = torch.utils.data.DataLoader(eval_dataset(paths, member.recipe.image_size, member.crop_pct),
                                             batch_size=batch_size, num_workers=workers,
                                             pin_memory=device.type == "cuda")
        batches = (x.to(device, non_blocking=True) for x, _ in loader)
    else:
        batches = crops.split(batch_size)
    outputs = []
    for x in batches:
        x = member.normalize(x)
        batch = torch.cat([x.flip(dims) if dims else x for dims in views]) if len(views) > 1 else x
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            outputs.append(model(batch).float().softmax(1).view(len(views), len(x), -1).sum(0))
    (torch.cat(outputs) / len(views)).cpu()
    sync(device)
    return len(paths) / (time.perf_counter() - t0)


def image_paths(folder: Path, n: int, sketches: bool) -> list[str]:
    """n image paths: synthetic JPEG sketches of 200-800 px (written by every core), or the demo digits repeated."""
    if sketches:
        from gpu_feed import write_parallel  # the GPU benches' own sketches
        return write_parallel(folder / "sketches", n, (200, 800), max(1, os.cpu_count() or 1))
    paths = sorted(str(f) for f in (build_demo_data(folder / "demo") / "train").glob("*/*.png"))
    return (paths * (n // len(paths) + 1))[:n]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--flip", default="none", choices=sorted(FLIP_VIEWS), help="TTA views: the checkpoint's flip")
    p.add_argument("--feeds", nargs="+", default=["workers"], choices=["workers", "resident"])
    p.add_argument("--sketches", action="store_true", help="synthetic JPEG sketches instead of the demo digits")
    p.add_argument("--gpu-row", action="store_true", help="resnext50_32x4d 224 px, 2,048 sketches, batch 128, "
                                                          "14 workers, flip hv, both feeds, 3 rounds")
    p.add_argument("--tiny", action="store_true", help="with --gpu-row: test_resnet, 64 px, 64 images: any machine")
    args = p.parse_args(argv)
    if args.gpu_row:
        args.model, args.image_size, args.images, args.batch_size, args.workers, args.rounds = \
            ("test_resnet", 64, 64, 16, 1, 1) if args.tiny else ("resnext50_32x4d", 224, 2048, 128, 14, 3)
        args.flip, args.feeds, args.sketches = "hv", ["resident", "workers"], True
    device, tta = torch.device(args.device), args.flip != "none"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = image_paths(Path(tmp), args.images, args.sketches)
        ckpt = make_checkpoint(args.model, args.image_size, [str(i) for i in range(10)], Path(tmp) / "m.pt", args.flip)
        members = load_ensemble([ckpt], device)
        m, views = members[0], FLIP_VIEWS[args.flip]
        for feed in args.feeds:
            resident = feed == "resident"
            engine_pass(members, paths, args.batch_size, args.workers, tta, resident)  # warm-up; resident: loads
            on = next(m.model.parameters()).device  # "cuda:0", as the engine keys its resident crops
            crops = torch.stack(resident_images.eval_crops(args.image_size, m.crop_pct, on, args.workers)
                                .get(paths, False)) if resident else None  # the crops the engine made resident
            bare_pass(m, paths[:args.batch_size], args.batch_size, 0, views, None if crops is None else crops[:64])
            engine, bare = [], []
            for _ in range(args.rounds):
                engine.append(engine_pass(members, paths, args.batch_size, args.workers, tta, resident))
                bare.append(bare_pass(m, paths, args.batch_size, args.workers, views, crops))
            results[feed] = engine, bare
            print(f"{feed}: engine {statistics.median(engine):.0f}, bare {statistics.median(bare):.0f} img/s",
                  file=sys.stderr, flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {args.device} ({name}), {args.model} at {args.image_size}px, {args.images} "
          f"{'sketches' if args.sketches else 'images'}, batch {args.batch_size}, {args.workers} workers, "
          f"TTA flip {args.flip} ({len(FLIP_VIEWS[args.flip])} view(s) in one forward), {args.rounds} interleaved rounds")
    print("| feed | loop | img/s (median) | min | max | engine / bare (median; per round) |\n|---|---|---:|---:|---:|---|")
    for feed, (engine, bare) in results.items():
        ratios = [e / b for e, b in zip(engine, bare)]
        for loop, values in (("predict_probs", engine), ("bare loop", bare)):
            ratio = (f"{statistics.median(ratios):.3f}; " + ", ".join(f"{r:.3f}" for r in ratios)
                     if loop == "bare loop" else "")
            print(f"| {feed} | {loop} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} | "
                  f"{ratio} |")
    if tta:
        print("aim: engine / bare >= 0.95")


if __name__ == "__main__":
    main()
