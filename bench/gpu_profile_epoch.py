"""Where one resident epoch's GPU time goes, and does a step ever wait on the host? resnext50_32x4d at 224 px,
batch 128, bf16 + channels_last, random init, synthetic sketches, through the engine's own build_fold_batches
(cache="device": images resident, a batch is a gather + a warp) + build_train_state + train_one_epoch:

  - img/s and data wait (the loop's StepClock: CUDA events), resident vs the ceiling (the same loop on batches
    already on the GPU)
  - EVERY host sync inside one epoch (torch.cuda.set_sync_debug_mode("warn")), grouped by the innermost engine
    frame of its stack and by where in the epoch it came: before the 2nd step, between the 2nd and the last
    step (the aim: none), the last step and the epoch's end
  - the GPU idle share of one profiled epoch of each (the union of the profiler's kernel intervals)
  - the top kernels by CUDA time (whole table in $OUT/profile_epoch_kernels.txt). Run by bench/gpu_check.sh.

    python bench/gpu_profile_epoch.py          # on the GPU
    python bench/gpu_profile_epoch.py --tiny   # anywhere: test_resnet at 64 px; on the CPU `.item()` stands in
                                               # for a sync, so the grouping is rehearsed too
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import pandas as pd
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from feeds import OnDevice  # noqa: E402
from gpu_feed import CLASSES, write_parallel  # noqa: E402
from engine.data.batches.factory import build_fold_batches  # noqa: E402
from engine.data.pixels.transforms import Normalize  # noqa: E402
from engine.models import build_model, data_config  # noqa: E402
from engine.recipe import load_recipe  # noqa: E402
from engine.system.distributed import Dist  # noqa: E402
from engine.train.loop import train_one_epoch  # noqa: E402
from engine.train.state import build_train_state  # noqa: E402

OUT = Path(os.environ.get("OUT", "bench/gpu_out"))


class Counted:
    """A batch source that counts the batches it has handed over (`given`), so a sync can be placed in the epoch."""

    def __init__(self, source):
        self.source, self.given = source, 0

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self):
        self.given = 0
        for batch in self.source:
            self.given += 1
            yield batch

    def __getattr__(self, name):
        return getattr(self.source, name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_epoch(s, batches, epoch: int, device: torch.device) -> tuple[float, float]:
    """(img/s, data-wait share) of one epoch, timed on CUDA events (host clock on the CPU)."""
    batches.set_epoch(epoch)
    sync(device)
    t0 = time.perf_counter()
    start = torch.cuda.Event(enable_timing=True) if device.type == "cuda" else None
    if start is not None:
        start.record()
    stats = train_one_epoch(s, batches, epoch, mixing=False, show_progress=False)
    if start is not None:
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000
    else:
        seconds = time.perf_counter() - t0
    return stats["seen"] / seconds, stats["data_wait"] / seconds


def busy_share(prof) -> float | None:
    """Share of the span from the first kernel's start to the last one's end that some kernel (or copy) ran."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == DeviceType.CUDA)
    if not spans:
        return None
    busy, (lo, hi) = 0.0, spans[0]
    for a, b in spans[1:]:  # the union of the intervals: overlapping streams count once
        if a > hi:
            busy, lo, hi = busy + hi - lo, a, b
        else:
            hi = max(hi, b)
    busy += hi - lo
    return busy / max(spans[-1][1] - spans[0][0], 1e-9)


def profiled_epoch(s, batches, epoch: int, device: torch.device):
    """One epoch under torch.profiler: (the profile, GPU idle share or None on the CPU)."""
    batches.set_epoch(epoch)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        train_one_epoch(s, batches, epoch, mixing=False, show_progress=False)
        sync(device)
    busy = busy_share(prof)
    return prof, None if busy is None else 1 - busy


def kernel_table(prof, device: torch.device, rows: int) -> str:
    """torch.profiler's table sorted by self CUDA time (CPU time on the CPU)."""
    for key in (("self_device_time_total", "self_cuda_time_total") if device.type == "cuda" else ()) + (
            "self_cpu_time_total",):
        try:
            return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60)
        except (AttributeError, KeyError, ValueError):
            continue
    return "(no table)"


def top_kernels(prof, device: torch.device, rows: int) -> str:
    """A compact markdown table of the ops with the most self time on the device (the CPU's on the CPU)."""
    def self_time(e) -> float:
        if device.type != "cuda":
            return e.self_cpu_time_total
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)

    events = [e for e in prof.key_averages() if self_time(e) > 0]
    kernels = [e for e in events if getattr(e, "device_type", None) == DeviceType.CUDA]
    events = kernels or events  # the kernels themselves: an op's device time counts its kernels again
    total = sum(self_time(e) for e in events) or 1.0
    lines = [f"| {'CUDA' if device.type == 'cuda' else 'CPU'} op / kernel | self ms | share | calls |",
             "|---|---:|---:|---:|"]
    for e in sorted(events, key=self_time, reverse=True)[:rows]:
        lines.append(f"| {e.key[:70]} | {self_time(e) / 1000:.1f} | {self_time(e) / total:.1%} | {e.count} |")
    return "\n".join(lines)


def engine_frame(stack: list[traceback.FrameSummary]) -> str:
    """The innermost engine frame of a stack and its engine caller: where in the engine a sync comes from."""
    root = str(Path(__file__).resolve().parent.parent)
    inside = [f for f in stack if f.filename.startswith(root) and "/engine/" in f.filename]
    if not inside:
        return "outside the engine: " + " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in stack[-2:])
    at = [f"{Path(f.filename).relative_to(root)}:{f.lineno} {f.name}" for f in inside[-2:]]
    return " <- ".join(reversed(at))


def host_syncs(s, batches: Counted, epoch: int, device: torch.device) -> collections.Counter:
    """(phase, engine frame, message) -> count of every synchronising CUDA call in one epoch. On the CPU (no sync
    debug mode) each Tensor.item() warns instead: a rehearsal of the catching and grouping."""
    seen: collections.Counter = collections.Counter()
    n = len(batches)

    def show(message, category, filename, lineno, file=None, line=None):
        phase = "start" if batches.given <= 1 else "end" if batches.given >= n else "inside"
        seen[(phase, engine_frame(traceback.extract_stack()[:-1]), str(message).split("\n")[0][:70])] += 1

    real_item = torch.Tensor.item

    def warning_item(t):  # the CPU stand-in for a sync
        warnings.warn("rehearsal on the CPU: Tensor.item()")
        return real_item(t)

    batches.set_epoch(epoch)
    old = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        try:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            else:
                torch.Tensor.item = warning_item
            train_one_epoch(s, batches, epoch, mixing=False, show_progress=False)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode(0)
            torch.Tensor.item = real_item
            warnings.showwarning = old
    return seen


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnext50_32x4d")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=12, help="steps per epoch")
    p.add_argument("--workers", type=int, default=14, help="workers decoding the images once")
    p.add_argument("--tiny", action="store_true", help="test_resnet at 64 px, batch 8, 4 steps, fp32")
    args = p.parse_args(argv)
    precision, sides = "bf16", (200, 800)
    if args.tiny:
        args.model, args.size, args.batch, args.steps, args.workers, precision, sides = \
            "test_resnet", 64, 8, 4, 1, "fp32", (60, 160)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sketchbook-profile-"))
    paths = write_parallel(work / "images", args.steps * args.batch, sides, max(1, os.cpu_count() or 1))
    table = pd.DataFrame({"path": paths, "target": [i % CLASSES for i in range(len(paths))]})
    torch.manual_seed(0)
    model = build_model(args.model, CLASSES)
    cfg = {**data_config(model), "background": (255, 255, 255)}
    recipe = load_recipe(None, {"model": args.model, "image_size": args.size, "batch_size": args.batch,
                                "precision": precision, "data_dir": str(work / "images"), "warmup_epochs": 0.0,
                                "epochs": 1000, "cache": "device", "num_workers": args.workers})
    s = build_train_state(recipe, model, CLASSES, args.steps, device)
    torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    fold = build_fold_batches(recipe, model, cfg, table, table.iloc[:0], 0, Dist(device=device), False)
    print(f"{len(paths)} images resident ({fold.path}) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    resident = Counted(fold.train)
    g = torch.Generator().manual_seed(0)
    made = [(torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, generator=g).to(device),
             torch.randint(0, CLASSES, (args.batch,), generator=g).to(device)) for _ in range(args.steps)]
    ceiling = OnDevice(made, device, Normalize(cfg["mean"], cfg["std"], device.type == "cuda").to(device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{args.model}, {args.size} px, batch {args.batch}, {precision}, {args.steps} steps per epoch, {name}, "
          f"torch {torch.__version__}\n")
    print("| feed | img/s | of ceiling | data wait (StepClock) |\n|---|---:|---:|---:|", flush=True)
    feeds, top = (("ceiling: batches on the GPU", ceiling), ("resident", resident)), 0.0
    for feed, batches in feeds:  # each part printed as soon as measured: a timeout keeps what came before
        timed_epoch(s, batches, 0, device)  # warm-up: cuDNN tunes, the allocator settles
        rate, wait = timed_epoch(s, batches, 1, device)
        top = top or rate
        print(f"| {feed} | {rate:.0f} | {rate / top:.2f} | {wait:.1%} |", flush=True)
    syncs = host_syncs(s, resident, 2, device)
    inside = sum(n for (phase, _, _), n in syncs.items() if phase == "inside")
    per_step = inside / max(1, args.steps - 2)
    print(f"\nhost syncs in one resident epoch: {sum(syncs.values())} in all; between the 2nd and the last step "
          f"{inside} ({per_step:.2f} per step; aim 0)"
          + (" [CPU rehearsal: each Tensor.item() counted as a sync]" if device.type != "cuda" else ""))
    print("\n| where in the epoch | count | engine frame (<- its engine caller) | warning |\n|---|---:|---|---|")
    order = {"start": 0, "inside": 1, "end": 2}
    for (phase, where, message), n in sorted(syncs.items(), key=lambda kv: (order[kv[0][0]], -kv[1])):
        print(f"| {phase} | {n} | {where} | {message} |", flush=True)
    print("\nGPU idle share of one profiled epoch (the kernels' timeline; the profiler slows the host a little):")
    for feed, batches in reversed(feeds):
        prof, idle = profiled_epoch(s, batches, 3, device)
        print(f"- {feed}: {'n/a (CPU)' if idle is None else f'{idle:.1%}'}", flush=True)
        if feed == "resident":
            (OUT / "profile_epoch_kernels.txt").write_text(kernel_table(prof, device, 40) + "\n")
            print(f"\ntop kernels of the resident epoch (self time; profiler's table in "
                  f"{OUT / 'profile_epoch_kernels.txt'}):\n\n{top_kernels(prof, device, 12)}\n", flush=True)
    fold.stop()


if __name__ == "__main__":
    main()
