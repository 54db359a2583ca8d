"""Does the data pipeline keep a GPU fed? The engine's training loop (train_one_epoch) fed by
augment_on="workers" and "device" with N loader workers each, and the same loop fed batches already
on the GPU (the ceiling). Prints img/s, data wait and peak GPU memory per row. Run by bench/gpu_check.sh.

    python bench/gpu_feed.py                       # resnext50_32x4d, 224 px, bf16 + channels_last, 4 and 14 workers
    python bench/gpu_feed.py --tiny                # any machine, seconds: proves the script runs
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_pipeline import write_sketches  # noqa: E402
from engine.data.cache import image_loader  # noqa: E402
from engine.data.device_augment import DeviceAugment  # noqa: E402
from engine.data.loader import CanvasCollate, EpochSampler, ImageDataset, make_loader, stop_workers  # noqa: E402
from engine.data.transforms import build_train_transform  # noqa: E402
from engine.models import build_model, data_config  # noqa: E402
from engine.recipe import load_recipe  # noqa: E402
from engine.train.loop import train_one_epoch  # noqa: E402
from engine.train.state import build_train_state  # noqa: E402

CLASSES = 100


def write_parallel(folder: Path, n: int, sides: tuple[int, int], processes: int) -> list[str]:
    """n synthetic sketch JPEGs, written by all cores (one seed per chunk)."""
    chunks = [(folder / f"part{k}", n // processes + (k < n % processes), *sides, k) for k in range(processes)]
    with Pool(processes) as pool:
        return [p for part in pool.starmap(write_sketches, chunks) for p in part]


def peak_gb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def timed_epochs(s, loader, sampler, epochs: int, device: torch.device) -> tuple[float, float, int]:
    """One warm-up epoch (workers start, cuDNN tunes), then `epochs` timed: (img/s, data wait share, images)."""
    seen = wait = seconds = 0.0
    for epoch in range(epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        stats = train_one_epoch(s, loader, epoch, mixing=False, show_progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if epoch:
            seconds += time.perf_counter() - t0
            seen += stats["seen"]
            wait += stats["data_wait"]
    return seen / seconds, wait / seconds, int(seen)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnext50_32x4d")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=60, help="steps per epoch (images = steps x batch)")
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per row (after one warm-up epoch)")
    p.add_argument("--workers", type=int, nargs="+", default=[4, 14])
    p.add_argument("--sides", type=int, nargs=2, default=(200, 800))
    p.add_argument("--cache", default="memory", choices=["none", "memory"])
    p.add_argument("--precision", default="bf16")
    p.add_argument("--tiny", action="store_true", help="test_resnet, 64 px, 1 and 2 workers, fp32: a smoke test")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.size, args.batch, args.steps, args.workers, args.precision = "test_resnet", 64, 16, 4, [1, 2], "fp32"
        args.sides = (60, 160)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    work = Path(tempfile.mkdtemp(prefix="sketchbook-gpu-"))
    t0 = time.perf_counter()
    paths = write_parallel(work / "images", args.steps * args.batch, tuple(args.sides), max(1, os.cpu_count() or 1))
    print(f"wrote {len(paths)} synthetic JPEGs ({args.sides[0]}-{args.sides[1]} px) in {time.perf_counter() - t0:.0f}s",
          file=sys.stderr, flush=True)
    targets = [i % CLASSES for i in range(len(paths))]
    recipe = load_recipe(None, {"model": args.model, "image_size": args.size, "batch_size": args.batch,
                                "precision": args.precision, "cache": args.cache, "data_dir": str(work / "images"),
                                "warmup_epochs": 0.0, "epochs": 1000})
    torch.manual_seed(0)
    model = build_model(args.model, CLASSES)
    cfg = data_config(model)
    s = build_train_state(recipe, model, CLASSES, cfg, args.steps, device)
    torch.backends.cudnn.benchmark = True
    images = image_loader(recipe, paths, cfg["crop_pct"], show_progress=False)  # built once, shared by every row
    rows = []

    g = torch.Generator().manual_seed(0)  # the ceiling: uint8 batches already on the GPU, nothing to wait for
    on_gpu = [(torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, generator=g).to(device),
               torch.randint(0, CLASSES, (args.batch,), generator=g).to(device)) for _ in range(args.steps)]
    s.augment = None
    rows.append(("ceiling: batches on the GPU", "-", *timed_epochs(s, on_gpu, None, args.epochs, device), peak_gb(device)))
    del on_gpu
    for workers in args.workers:
        for where in ("workers", "device"):
            tf = build_train_transform(args.size, recipe.augment, recipe.random_erase, recipe.crop_scale)
            ds = ImageDataset(paths, targets, tf if where == "workers" else None, recipe.seed, images)
            sampler = EpochSampler(len(ds), args.batch, True, recipe.seed)
            loader = make_loader(ds, args.batch, sampler, workers, True, pin_memory=device.type == "cuda",
                                 collate_fn=CanvasCollate() if where == "device" else None)
            s.augment = DeviceAugment(args.size, recipe.crop_scale, recipe.augment, recipe.random_erase,
                                      recipe.seed) if where == "device" else None
            rows.append((f"augment_on={where}", workers, *timed_epochs(s, loader, sampler, args.epochs, device),
                         peak_gb(device)))
            stop_workers()
            print(f"{rows[-1][0]} {workers} workers: {rows[-1][2]:.0f} img/s", file=sys.stderr, flush=True)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{args.model}, {args.size} px, batch {args.batch}, {args.precision}, channels_last "
          f"{s.normalize.memory_format == torch.channels_last}, cache {args.cache}, {args.steps} steps x {args.epochs} "
          f"timed epoch(s) per row, {name}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    ceiling = rows[0][2]
    print(f"{'feed':<30} {'workers':>7} {'img/s':>8} {'of ceiling':>10} {'data wait':>9} {'peak mem':>9}")
    for feed, workers, rate, wait, _, mem in rows:
        print(f"{feed:<30} {workers:>7} {rate:>8.0f} {rate / ceiling:>10.2f} {wait:>9.1%} {mem:>8.1f}G")


if __name__ == "__main__":
    main()
