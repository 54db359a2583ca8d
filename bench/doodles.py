"""Small drawings: the demo digits (dark on white) and the same digits inverted (light on dark), trained by
train.py as a user would; one row per (candidate, data set, seed) with its validation accuracy and wall time.

    python bench/doodles.py demo  --repo PATH --seeds 0 1 2 --label before   # recipes/demo.py on both sets
    python bench/doodles.py grid  --seeds 0                                   # the recipes/doodles.py candidates
    python bench/doodles.py table                                             # the collected rows, as markdown

Rows are appended to --results (default /tmp/doodles_bench/results.csv), so runs can be split and resumed.
Every run is a `python train.py ...` subprocess of the chosen checkout (--repo: the code before a change).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import threading
import zlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# candidates: recipe + overrides, each at most ~1.5x the demo's compute (the demo: ~1 min on 2 quiet cores), so the
# grid fits a crowded machine; the demo itself is the baseline (`demo` mode, the same runs)
CANDIDATES = {
    "resnet18 32px 12ep augment=none": ("recipes/demo.py", {"augment": "none"}),
    "resnet18 32px 12ep trivialaugment": ("recipes/demo.py", {"augment": "trivialaugment"}),
    "resnet18 48px 8ep light": ("recipes/demo.py", {"image_size": 48, "epochs": 8}),
}


def build_sets(root: Path) -> dict[str, Path]:
    """data/demo-style digits under root/digits and the same images inverted under root/digits_inv."""
    from PIL import Image
    from engine.data.tables.demo_digits import build_demo_data
    plain = build_demo_data(root / "digits")
    inverted = root / "digits_inv"
    if not (inverted / "test.csv").is_file():
        for png in sorted(plain.rglob("*.png")):
            target = inverted / png.relative_to(plain)
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(255 - np.asarray(Image.open(png))).save(target)
        for csv in ("train.csv", "test_labels.csv", "test.csv"):  # test.csv last: marks the set complete
            (inverted / csv).write_text((plain / csv).read_text())
    return {"digits": plain, "digits_inv": inverted}


def run_one(repo: Path, recipe: str, overrides: dict, data: Path, out: Path, name: str, threads: int) -> dict:
    """One `python train.py` run: last epoch's and best epoch's (lowest val loss) validation accuracy, wall time,
    and CPU time (the run and its data workers), which moves far less than wall time on shared cores."""
    keys = {"data_dir": str(data / "train"), "train_csv": str(data / "train.csv"), "test_dir": str(data / "test"),
            "test_csv": str(data / "test.csv"), "output_dir": str(out), **overrides}
    cmd = [sys.executable, "train.py", recipe, *[f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                                                 for k, v in keys.items()], "--name", name, "--no-progress"]
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"{name}.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=repo, stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    text = log.read_text()
    if status:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{text[-3000:]}")
    metrics = pd.read_csv(next(out.glob(f"*/*-{name}/fold0/metrics.csv")))
    scored = "val_loss" in metrics and metrics["val_loss"].notna().any()  # val_fraction=0: no validation rows
    best = metrics.loc[metrics["val_loss"].idxmin()] if scored else metrics.iloc[-1]
    bg = next((line for line in text.splitlines() if line.startswith("background:")), "")
    return {"val_acc_last": round(float(metrics["val_acc"].iloc[-1]), 4) if scored else None,
            "val_acc_best_loss": round(float(best["val_acc"]), 4) if scored else None, "wall_s": round(wall, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "background_line": bg}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("demo", "grid", "table"))
    p.add_argument("--repo", default=str(ROOT), help="checkout whose train.py runs (default: this one)")
    p.add_argument("--label", default="after", help="names the code version in the results")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--sets", nargs="+", default=["digits", "digits_inv"])
    p.add_argument("--only", nargs="*", help="grid: candidate names to run (default: all)")
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each run (1 on crowded cores)")
    p.add_argument("--work", default="/tmp/doodles_bench")
    p.add_argument("--results", default=None)
    args = p.parse_args()
    work = Path(args.work)
    results = Path(args.results or work / "results.csv")
    if args.mode == "table":
        rows = pd.read_csv(results)
        print(rows.to_markdown(index=False))
        return
    sets = build_sets(work / "data")
    todo = {"demo (recipes/demo.py)": ("recipes/demo.py", {})} if args.mode == "demo" else \
        {k: v for k, v in CANDIDATES.items() if not args.only or k in args.only}
    jobs = [(seed, cand, set_name) for seed in args.seeds for cand in todo for set_name in args.sets]

    def one(job: tuple) -> None:
        seed, cand, set_name = job
        recipe, overrides = todo[cand]
        name = f"{args.label}-{zlib.crc32(cand.encode()) % 10**6}-{set_name}-s{seed}-{time.time_ns() % 10**6}"
        res = run_one(Path(args.repo), recipe, {**overrides, "seed": seed}, sets[set_name], work / "runs", name,
                      args.threads)
        row = {"label": args.label, "candidate": cand, "data": set_name, "seed": seed, **res,
               "threads": args.threads, "parallel_jobs": args.jobs,
               "load_avg_1m": round(float(open("/proc/loadavg").read().split()[0]), 2)}
        print(row, file=sys.stderr, flush=True)
        with lock:
            pd.DataFrame([row]).to_csv(results, mode="a", header=not results.is_file(), index=False)

    lock = threading.Lock()
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, jobs))


if __name__ == "__main__":
    main()
