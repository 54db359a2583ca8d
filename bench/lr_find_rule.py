"""Which LR-finder rule's suggestion trains well: for each set-up, one range test (100 updates) read by every
candidate rule, then 3 epochs at each rule's lr, at the recipe's own lr and on a small grid; final val_acc.

    python bench/lr_find_rule.py [OUT [SETUP ...]]      # ~2 min a set-up on 1 core; the table is in bench/README.md

Data: 400 training rows (+100 validation) of the demo digits at 32 px, test_resnet, AdamW lr 1e-3, batch 16,
images in memory, 1 thread.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.data.tables.demo_digits import build_demo_data  # noqa: E402
from engine.recipe import load_recipe  # noqa: E402
from engine.train import lr_find  # noqa: E402
from engine.train.orchestrator import train  # noqa: E402

GRID = [3e-4, 1e-3, 3e-3, 1e-2]
SETUPS = {"normal": {}, "layer_decay": {"layer_decay": 0.6}, "frozen": {"freeze": "backbone"}}


def valley(lrs: list[float], smoothed: list[float]) -> float:
    """fastai's `valley`: two thirds down the longest stretch where the loss keeps falling."""
    n, lds, start, end = len(smoothed), [1] * len(smoothed), 0, 0
    for i in range(1, n):
        for j in range(i):
            if smoothed[i] < smoothed[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[end] < lds[i]:
            end, start = i, i - lds[i]
    third = (end - start) / 3
    return lrs[start + int(third) + int(third / 2)]


def rules(r: lr_find.LrFind) -> dict[str, float | None]:
    """Every candidate rule on one range test's curve."""
    low = int(np.argmin(r.smoothed))
    steepest = r.suggestion  # the shipped rule (None on a flat curve)
    return {"steepest": steepest, "min/10": r.lrs[low] / 10,
            "valley": valley(r.lrs, r.smoothed),
            "min(steepest, min/10)": None if steepest is None else min(steepest, r.lrs[low] / 10)}


def final_acc(recipe) -> float:
    run = train(recipe, show_progress=False)
    return float(pd.read_csv(run / "fold0" / "metrics.csv")["val_acc"].iloc[-1])


def main(out: Path, setups: list[str]) -> None:
    torch.set_num_threads(1)  # 2 threads spin against the other users of the 2 cores
    data = build_demo_data(out / "demo")
    small = out / "train400.csv"
    pd.read_csv(data / "train.csv").head(500).to_csv(small, index=False)
    base = dict(model="test_resnet", data_dir=str(data / "train"), train_csv=str(small), image_size=32,
                batch_size=16, epochs=3, lr=1e-3, optimizer="AdamW", val_fraction=0.2, num_workers=0, cache="memory",
                output_dir=str(out / "runs"), wandb="disabled", seed=0)
    rows = []
    for setup in setups:
        recipe = load_recipe(None, {**base, **SETUPS[setup], "name": setup})
        t = time.time()
        found = lr_find.find_lr(recipe, 100, show_progress=False, say=lambda *a: None)
        picks = rules(found)
        grid = GRID if found.suggestion is not None else []  # a flat test: only the recipe's own lr is trained
        lrs = sorted({recipe.lr, *grid, *(v for v in picks.values() if v and grid)})
        scores = {lr: final_acc(recipe.replace(lr=lr)) for lr in lrs}
        row = {"setup": setup, "recipe_lr": recipe.lr, "recipe_acc": scores[recipe.lr],
               "grid_best": max(scores, key=scores.get), "best_acc": max(scores.values()),
               **{k: f"{v:.2g} -> {scores[v]:.3f}" if v in scores else f"{v:.2g}" if v else "none" for k, v in picks.items()},
               "grid": {f"{k:g}": round(v, 3) for k, v in scores.items()}, "seconds": round(time.time() - t)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(out / "lr_find_rule.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/lr_find_rule"), sys.argv[2:] or list(SETUPS))
