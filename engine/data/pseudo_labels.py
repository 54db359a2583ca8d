"""Pseudo-labels (recipe keys pseudo_labels, pseudo_threshold): confident test images from a
`predict.py --save-probs` file join every fold's training rows with their predicted class.

The rows get fold -1, which every fold trains on and none validates on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from engine.data.tables import read_csv
from engine.errors import UserError

PSEUDO_FOLD = -1  # trained on by every fold, validated by none


def read_pseudo_labels(probs_csv: str, test_dir: str, classes: list[str], threshold: float) -> pd.DataFrame:
    """Rows (class_name, image_path, target, path, pseudo) of the test images whose top probability >= threshold."""
    probs = read_csv(probs_csv, ("image_path",), "pseudo_labels", "write it with python predict.py RUN --save-probs")
    names = [str(c) for c in probs.columns if c != "image_path"]
    if names != [str(c) for c in classes]:
        diff = next((i for i, (a, b) in enumerate(zip(names, classes)) if a != str(b)), None)
        where = (f"{len(names)} vs {len(classes)} classes" if diff is None
                 else f"column {diff + 1} is '{names[diff]}', class {diff} is '{classes[diff]}'")
        raise UserError(f"pseudo_labels '{probs_csv}' was predicted with another class list ({where}); "
                        f"use probabilities from a model trained on this data's classes")
    values = probs[names].to_numpy(dtype=np.float64)
    top, pred = values.max(axis=1), values.argmax(axis=1)
    keep = top >= threshold
    rows = pd.DataFrame({"class_name": [classes[t] for t in pred[keep]],
                         "image_path": probs["image_path"].astype(str).to_numpy()[keep], "target": pred[keep]})
    rows["path"] = [str(Path(test_dir) / p) for p in rows["image_path"]]
    missing = [p for p in rows["path"] if not Path(p).is_file()]
    if missing:
        raise UserError(f"{len(missing)} pseudo-labelled images not found under test_dir '{test_dir}' "
                        f"(first: {missing[0]}); set test_dir to the folder predict.py read them from")
    rows["pseudo"] = True
    return rows


def add_pseudo_labels(table: pd.DataFrame, rows: pd.DataFrame, source: str, threshold: float, log=print) -> pd.DataFrame:
    """The training table plus the pseudo-labelled rows (fold -1: training of every fold, never validation)."""
    counts = rows["class_name"].value_counts()
    log(f"pseudo-labels: {len(rows)} test images from {source} reach pseudo_threshold {threshold} and join every "
        f"fold's training rows" + (": " + ", ".join(f"{c}: {n}" for c, n in counts.items()) if len(rows) else ""))
    table = table.assign(pseudo=False)
    return pd.concat([table, rows.assign(fold=PSEUDO_FOLD)], ignore_index=True)
