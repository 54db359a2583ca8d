"""Does each batch source keep a GPU fed? The engine's own sources (engine/data/batches/factory.py: workers, device
canvas, images resident on the device, and augment_on="auto", which races the canvas against the workers:
feed_race.py) with N loader workers each, through train_one_epoch, against the same loop fed batches already on
the GPU (the ceiling) and a bare loop on those batches with no host syncs at all (plain forward, backward, fused
AdamW: what the engine's own extras cost). Prints img/s, share of the ceiling, data wait (the loop's StepClock:
the GPU's clock on CUDA), peak memory and, for the canvas path, how many bytes each step sends per image it trains
on. Rows print as they finish (a timeout keeps the finished ones). Run by bench/gpu_check.sh.

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
import torch.nn.functional as F

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


def bare_rate(s, batches: OnDevice, epochs: int, device: torch.device) -> float:
    """img/s of a bare loop on the same model and batches: autocast forward, cross-entropy, backward, fused AdamW,
    nothing read back (no schedule, EMA, non-finite checks or sums): one warm-up epoch, then `epochs` timed."""
    opt = torch.optim.AdamW(s.model.parameters(), lr=1e-4, fused=True if device.type == "cuda" else None)
    s.model.train()
    seen, seconds = 0, 0.0
    for epoch in range(epochs + 1):
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for x, y in batches:
            with torch.autocast(device.type, dtype=s.amp_dtype or torch.float32, enabled=s.amp_dtype is not None):
                loss = F.cross_entropy(s.model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        sync(device)
        if epoch:
            seconds += time.perf_counter() - t0
            seen += sum(len(y) for _, y in batches.batches)
    return seen / seconds


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_epochs(s, batches, epochs: int, device: torch.device) -> tuple[float, float]:
    """One warm-up epoch (workers start, cuDNN tunes), then `epochs` timed: (img/s, data wait share)."""
    seen = wait = seconds = 0.0
    for epoch in range(epochs + 1):
        batches.set_epoch(epoch)
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        stats = train_one_epoch(s, batches, epoch, mixing=False, show_progress=False)
        sync(device)
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
    p.add_argument("--workers", type=int, nargs="+", default=[1, 4, 14], help="worker counts (rows: most first)")
    p.add_argument("--sides", type=int, nargs=2, default=(200, 800))
    p.add_argument("--cache", default="memory", choices=["none", "memory"], help="host cache of the worker rows")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--tiny", action="store_true", help="test_resnet, 64 px, 1 and 2 workers, fp32: a smoke test")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.size, args.batch, args.steps, args.workers, args.precision = "test_resnet", 64, 8, 3, [1, 2], "fp32"
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
    channels_last = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{args.model}, {args.size} px, batch {args.batch}, {args.precision}, channels_last {channels_last}, "
          f"host cache {args.cache} (worker rows), {args.steps} steps x {args.epochs} timed epoch(s) per row, {name}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}\n")
    print(f"| {'feed':<28} | {'workers':>7} | {'img/s':>7} | {'of ceiling':>10} | {'data wait':>9} | {'peak mem':>8} | note |")
    print("|---|---:|---:|---:|---:|---:|---|", flush=True)
    top = 0.0

    def row(feed: str, workers: str, rate: float, wait: float | None, note: str = "") -> None:
        wait_text = "-" if wait is None else f"{wait:.1%}"
        print(f"| {feed:<28} | {workers:>7} | {rate:>7.0f} | {rate / top:>10.2f} | {wait_text:>9} | "
              f"{peak_gb(device):>7.1f}G | {note} |", flush=True)
        print(f"{feed} {workers} workers: {rate:.0f} img/s", file=sys.stderr, flush=True)

    g = torch.Generator().manual_seed(0)
    on_gpu = [(torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, generator=g).to(device),
               torch.randint(0, CLASSES, (args.batch,), generator=g).to(device)) for _ in range(args.steps)]
    ceiling = OnDevice(on_gpu, device, Normalize(cfg["mean"], cfg["std"], channels_last).to(device))
    top, wait = timed_epochs(s, ceiling, args.epochs, device)
    row("ceiling: batches on the GPU", "-", top, wait, "the engine's loop")
    row("bare loop, no host syncs", "-", bare_rate(s, ceiling, args.epochs, device), None,
        "same batches: fwd, bwd, fused AdamW")
    del on_gpu, ceiling
    sent = {"bytes": 0, "images": 0}
    real_to = device_augment.Canvas.to

    def counting_to(canvas, *a, **k):  # what the canvas path sends per trained image
        sent["bytes"] += canvas.images.numel()
        sent["images"] += len(canvas)
        return real_to(canvas, *a, **k)

    device_augment.Canvas.to = counting_to
    plans = [("resident", max(args.workers), {"cache": "device"})] + [
        (where, w, {"augment_on": where, "cache": args.cache})
        for w in sorted(args.workers, reverse=True) for where in ("workers", "device", "auto")]
    for where, workers, keys in plans:
        recipe = load_recipe(None, {**base, **keys, "num_workers": workers})
        t0 = time.perf_counter()
        batches = build_fold_batches(recipe, model, cfg, table, table.iloc[:0], 0, Dist(device=device), False,
                                     race_feeds=where == "auto")
        ready_s = time.perf_counter() - t0
        sent.update(bytes=0, images=0)
        rate, wait = timed_epochs(s, batches.train, args.epochs, device)
        per_image = sent["bytes"] / max(1, sent["images"]) / (3 * args.size * args.size)
        note = (f"{per_image:.1f}x the output's bytes sent per image" if batches.path == "device" else "")
        if where == "resident":
            note = f"images to the device once: {ready_s:.0f}s"
        elif where == "auto":
            note = f"race {ready_s:.0f}s, {batches.why.split(': ', 1)[-1]}" + (f"; {note}" if note else "")
        feed = f"auto (raced): {batches.path}" if where == "auto" else batches.path
        row(feed, str(workers) if where != "resident" else "0", rate, wait, note)
        batches.stop()
        stop_workers()


if __name__ == "__main__":
    main()
