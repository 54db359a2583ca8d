"""What the training loop waits for at the end of an epoch to keep best.pt and last.pt: writing both
in the loop (before) vs handing a CPU snapshot to the background writer (now). Interleaved, medians.

    python bench/checkpoint_cost.py                  # resnet18 + AdamW state, 7 rounds
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

from engine import checkpoint  # noqa: E402
from engine.models import build_model  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    model = build_model(args.model, 10)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    opt.step()  # the optimizer now holds its moments: last.pt's real size
    best = {"model": model.state_dict(), "epoch": 1}
    last = {**best, "optimizer": opt.state_dict()}
    folder = Path(tempfile.mkdtemp(prefix="sketchbook-ckpt-"))
    waits = {"in the loop (before)": [], "background: loop waits": [], "background: until on disk": []}
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        checkpoint.save_atomic(best, folder / "best.pt")
        checkpoint.save_atomic(last, folder / "last.pt")
        waits["in the loop (before)"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        checkpoint.save_in_background([(best, folder / "best.pt"), (last, folder / "last.pt")])
        waits["background: loop waits"].append(time.perf_counter() - t0)
        checkpoint.wait_for_writes()
        waits["background: until on disk"].append(time.perf_counter() - t0)
    size = sum(f.stat().st_size for f in folder.glob("*.pt")) / 2**20
    print(f"\n{args.model}: best.pt + last.pt = {size:.0f} MiB, atomic + fsync, {args.rounds} rounds")
    for name, values in waits.items():
        print(f"{name:<28} {statistics.median(values) * 1000:>8.0f} ms (median)  {min(values) * 1000:>6.0f}"
              f"-{max(values) * 1000:.0f}")


if __name__ == "__main__":
    main()
