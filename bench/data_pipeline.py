"""Images/s of the training data pipeline alone (decode or cache -> train transforms -> batches), for
cache none / memory / disk, 1 / 2 dataloader workers and augment_on workers / device, interleaved in one run.

augment_on="device" here: the workers pad decoded images onto a canvas and the batched warp
(engine/data/pixels/device_augment.py) runs in this process on the CPU (no GPU): it counts in the time.

By default it writes N synthetic sketch JPEGs of varied sizes (ink strokes on white paper) into a
temporary folder; --data DIR uses your own images instead. The disk cache goes to a temporary folder
too, so nothing under ~/.cache is touched.

    python bench/data_pipeline.py                                       # full run
    python bench/data_pipeline.py --images 64 --rounds 2 --batch 16     # smoke test
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.data.pixels.device_augment import DeviceAugment  # noqa: E402
from engine.data.batches.loader import CanvasCollate, EpochSampler, ImageDataset, make_loader  # noqa: E402
from engine.data.pixels.transforms import DEFAULT_CROP_PCT, build_train_transform  # noqa: E402


def write_sketches(folder: Path, n: int, min_side: int, max_side: int, seed: int = 0) -> list[str]:
    """n JPEGs: random dark strokes on white, sides between min_side and max_side."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
        im = Image.new("RGB", (w, h), "white")
        draw = ImageDraw.Draw(im)
        for _ in range(12):
            points = [tuple(int(v) for v in rng.integers(0, (w, h))) for _ in range(4)]
            draw.line(points, fill=(int(rng.integers(0, 80)),) * 3, width=int(rng.integers(1, 5)))
        paths.append(str(folder / f"{i:06d}.jpg"))
        im.save(paths[-1], quality=90)
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="a folder of images (searched recursively); default: synthetic JPEGs")
    p.add_argument("--images", type=int, default=2000, help="synthetic images to write")
    p.add_argument("--sides", type=int, nargs=2, default=(200, 500), metavar=("MIN", "MAX"))
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--augment", default="light")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--caches", nargs="+", default=["none", "memory", "disk"])
    p.add_argument("--augment-on", nargs="+", default=["workers", "device"], choices=["workers", "device"])
    p.add_argument("--rounds", type=int, default=3, help="timed epochs per setting (median reported)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    work = Path(tempfile.mkdtemp(prefix="sketchbook-bench-"))
    os.environ["SKETCHBOOK_CACHE_DIR"] = str(work / "cache")  # a throw-away disk cache
    if args.data:
        root = Path(args.data)
        paths = sorted(str(q) for q in root.rglob("*") if q.suffix.lower() in (".jpg", ".jpeg", ".png"))
    else:
        root = work / "images"
        t0 = time.perf_counter()
        paths = write_sketches(root, args.images, *args.sides)
        print(f"wrote {len(paths)} synthetic JPEGs in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    from engine.data.stores.image_cache import image_loader
    transform = build_train_transform(args.image_size, args.augment)
    loaders, build_s = {}, {}
    for cache in args.caches:
        recipe = SimpleNamespace(cache=cache, image_size=args.image_size, data_dir=str(root))
        t0 = time.perf_counter()
        image_at = image_loader(recipe, paths, DEFAULT_CROP_PCT)
        build_s[cache] = time.perf_counter() - t0
        for workers in args.workers:
            for where in args.augment_on:
                ds = ImageDataset(paths, [0] * len(paths), transform if where == "workers" else None, 0, image_at)
                sampler = EpochSampler(len(ds), args.batch, True, 0)
                collate = CanvasCollate() if where == "device" else None
                loaders[cache, workers, where] = (make_loader(ds, args.batch, sampler, workers, True,
                                                              collate_fn=collate), sampler)
    device_augment = DeviceAugment(args.image_size, augment=args.augment)
    if "disk" in args.caches:  # what a later run, fold or trial pays to reuse the disk cache
        t0 = time.perf_counter()
        image_loader(SimpleNamespace(cache="disk", image_size=args.image_size, data_dir=str(root)), paths,
                     DEFAULT_CROP_PCT)
        reuse_s = time.perf_counter() - t0
    rates = {key: [] for key in loaders}
    names = list(loaders)
    for r in range(args.rounds + 1):  # round 0 starts the (persistent) workers and is not counted
        for key in names[r % len(names):] + names[:r % len(names)]:
            loader, sampler = loaders[key]
            sampler.set_epoch(r)
            t0 = time.perf_counter()
            seen = 0
            for step, (x, y) in enumerate(loader):
                if key[2] == "device":
                    x = device_augment(x, r, step)
                seen += len(y)
            if r:
                rates[key].append(seen / (time.perf_counter() - t0))
        if r:
            print(f"round {r}/{args.rounds}: " + "  ".join(f"{c}/{w}/{a} {rates[c, w, a][-1]:.0f}" for c, w, a in names),
                  file=sys.stderr, flush=True)

    print(f"\n{len(paths)} images, train transform '{args.augment}' at {args.image_size} px, batch {args.batch}, "
          f"{args.rounds} epochs per setting, {len(os.sched_getaffinity(0))} CPUs, torch {torch.__version__}")
    print(f"{'cache':<8} {'workers':>7} {'augment_on':>10} {'img/s (median)':>15} {'min':>8} {'max':>8} "
          f"{'vs none':>8} {'build s':>8}")
    for cache, workers, where in names:
        median = statistics.median(rates[cache, workers, where])
        none = rates.get(("none", workers, where))
        ratio = f"{median / statistics.median(none):.2f}x" if none else "-"
        print(f"{cache:<8} {workers:>7} {where:>10} {median:>15.0f} {min(rates[cache, workers, where]):>8.0f} "
              f"{max(rates[cache, workers, where]):>8.0f} {ratio:>8} {build_s[cache]:>8.1f}")
    if "disk" in args.caches:
        print(f"reopening the disk cache (a later run / fold / trial): {reuse_s:.2f}s")
    del loaders
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
