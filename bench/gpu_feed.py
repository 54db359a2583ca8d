"""Does each batch source keep a GPU fed? The engine's own sources (engine/data/batches/factory.py: workers, device
canvas, images resident on the device) with N loader workers each, through train_one_epoch, against the same
loop fed batches already on the GPU (the ceiling). Prints img/s, share of the ceiling, data wait, peak memory
and, for the canvas path, how many bytes each step sends per image it trains on. Run by bench/gpu_check.sh.

    python bench/gpu_feed.py                       # resnext50_32x4d, 224 px, bf16 + channels_last, 1/4/14 workers
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

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_pipeline import write_sketches  # noqa: E402
from feeds import OnDevice  # noqa: E402
from engine.data.pixels import device_augment  # noqa: E402
from engine.data.batches.loader import stop_workers  # noqa: E402
from engine.data.batches.factory import build_fold_batches  # noqa: E402
from engine.data.pixels.transforms import Normalize  # noqa: E402
from engine.models import build_model, data_config  # noqa: E402
from engine.recipe import load_recipe  # noqa: E402
from engine.system.distributed import Dist  # noqa: E402
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


def timed_epochs(s, batches, epochs: int, device: torch.device) -> tuple[float, float]:
    """One warm-up epoch (workers start, cuDNN tunes), then `epochs` timed: (img/s, data wait share)."""
    seen = wait = seconds = 0.0
    for epoch in range(epochs + 1):
        batches.set_epoch(epoch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        stats = train_one_epoch(s, batches, epoch, mixing=False, show_progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if epoch:
            seconds += time.perf_counter() - t0
            seen += stats["seen"]
            wait += stats["data_wait"]
    return seen / seconds, wait / seconds


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnext50_32x4d")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=40, help="steps per epoch (images = steps x batch)")
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per row (after one warm-up epoch)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 4, 14])
    p.add_argument("--sides", type=int, nargs=2, default=(200, 800))
    p.add_argument("--cache", default="memory", choices=["none", "memory"], help="host cache of the worker rows")
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
    table = pd.DataFrame({"path": paths, "target": [i % CLASSES for i in range(len(paths))]})
    torch.manual_seed(0)
    model = build_model(args.model, CLASSES)
    cfg = {**data_config(model), "background": (255, 255, 255)}
    base = {"model": args.model, "image_size": args.size, "batch_size": args.batch, "precision": args.precision,
            "data_dir": str(work / "images"), "warmup_epochs": 0.0, "epochs": 1000}
    recipe = load_recipe(None, base)
    s = build_train_state(recipe, model, CLASSES, args.steps, device)
    torch.backends.cudnn.benchmark = True
    rows = []
    g = torch.Generator().manual_seed(0)
    on_gpu = [(torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, generator=g).to(device),
               torch.randint(0, CLASSES, (args.batch,), generator=g).to(device)) for _ in range(args.steps)]
    channels_last = device.type == "cuda"
    ceiling = OnDevice(on_gpu, device, Normalize(cfg["mean"], cfg["std"], channels_last).to(device))
    rows.append(("ceiling: batches on the GPU", "-", *timed_epochs(s, ceiling, args.epochs, device), peak_gb(device), ""))
    del on_gpu, ceiling
    sent = {"bytes": 0, "images": 0}
    real_to = device_augment.Canvas.to

    def counting_to(canvas, *a, **k):  # what the canvas path sends per trained image
        sent["bytes"] += canvas.images.numel()
        sent["images"] += len(canvas)
        return real_to(canvas, *a, **k)

    device_augment.Canvas.to = counting_to
    plans = [("resident", 14, {"cache": "device"})] + [
        (where, w, {"augment_on": where, "cache": args.cache}) for w in args.workers for where in ("workers", "device")]
    for where, workers, keys in plans:
        recipe = load_recipe(None, {**base, **keys, "num_workers": workers})
        t0 = time.perf_counter()
        batches = build_fold_batches(recipe, model, cfg, table, table.iloc[:0], 0, Dist(device=device), False)
        ready_s = time.perf_counter() - t0
        sent.update(bytes=0, images=0)
        rate, wait = timed_epochs(s, batches.train, args.epochs, device)
        per_image = sent["bytes"] / max(1, sent["images"]) / (3 * args.size * args.size)
        note = (f"{per_image:.1f}x the output's bytes sent per image" if where == "device" else
                f"images to the device once: {ready_s:.0f}s" if where == "resident" else "")
        rows.append((f"{batches.path}", workers if where != "resident" else "0", rate, wait, peak_gb(device), note))
        batches.stop()
        stop_workers()
        print(f"{where} {workers} workers: {rate:.0f} img/s", file=sys.stderr, flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{args.model}, {args.size} px, batch {args.batch}, {args.precision}, channels_last {channels_last}, "
          f"host cache {args.cache} (worker rows), {args.steps} steps x {args.epochs} timed epoch(s) per row, {name}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}")
    top = rows[0][2]
    print(f"| {'feed':<28} | {'workers':>7} | {'img/s':>7} | {'of ceiling':>10} | {'data wait':>9} | {'peak mem':>8} | note |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for feed, workers, rate, wait, mem, note in rows:
        print(f"| {feed:<28} | {workers:>7} | {rate:>7.0f} | {rate / top:>10.2f} | {wait:>9.1%} | {mem:>7.1f}G | {note} |")


if __name__ == "__main__":
    main()
