"""Pseudo-labels (recipe keys pseudo_labels, pseudo_threshold): confident test images from a
`predict.py --save-probs` file join every fold's training rows with their predicted class.

The rows get fold -1, which every fold trains on and none validates on. They are audited like the
training table: probabilities must be numbers in 0..1 (else one line naming the row), rows without
them are counted, files are checked (a truncated image is dropped up front, not met mid-epoch), an
image listed twice joins once, and an image that is already a training row never joins (it would
enter training under a second label, and leak into the validation of the fold that holds it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from engine.data.tables.audit import audit_table
from engine.data.tables.read import class_list_difference, read_csv
from engine.errors import UserError

PSEUDO_FOLD = -1  # trained on by every fold, validated by none
TOLERANCE = 1e-3  # probabilities written with %.6g may sit a rounding step outside 0..1


def _probabilities(probs: pd.DataFrame, names: list[str], probs_csv: str) -> pd.DataFrame:
    """The class columns as numbers; one line for a cell that is not a number or not in 0..1."""
    values = probs[names].apply(pd.to_numeric, errors="coerce")
    for bad, what in ((values.isna() & probs[names].notna(), "is not a number"),
                      ((values < -TOLERANCE) | (values > 1 + TOLERANCE), "is not a probability in 0..1")):
        if bad.to_numpy().any():
            row, col = np.argwhere(bad.to_numpy())[0]
            raise UserError(f"pseudo_labels '{probs_csv}' row {probs.index[row]}: column '{names[col]}' = "
                            f"{probs[names].iat[row, col]!r} {what} ({int(bad.to_numpy().sum())} such cells); "
                            f"use the probabilities file of python predict.py RUN --save-probs")
    return values


def read_pseudo_labels(probs_csv: str, test_dir: str, classes: list[str], threshold: float,
                       bad_images: str = "skip", log=print) -> pd.DataFrame:
    """Rows (class_name, image_path, target, path, pseudo) of the test images whose top probability >= threshold,
    audited as training rows are."""
    probs = read_csv(probs_csv, ("image_path",), "pseudo_labels", "write it with python predict.py RUN --save-probs")
    names = [str(c) for c in probs.columns if c != "image_path"]
    if where := class_list_difference(names, classes):
        raise UserError(f"pseudo_labels '{probs_csv}' was predicted with another class list ({where}); "
                        f"use probabilities from a model trained on this data's classes")
    values = _probabilities(probs, names, probs_csv)
    empty = values.isna().any(axis=1).to_numpy()
    if empty.any():
        log(f"warning: pseudo_labels: {int(empty.sum())} rows have empty probabilities and are skipped "
            f"(first: row {probs.index[np.argmax(empty)]})")
    filled = values.fillna(-1).to_numpy(dtype=np.float64)
    top, pred = filled.max(axis=1), filled.argmax(axis=1)
    keep = (top >= threshold) & ~empty
    rows = pd.DataFrame({"class_name": [classes[t] for t in pred[keep]],
                         "image_path": probs["image_path"].astype(str).to_numpy()[keep], "target": pred[keep]})
    rows["path"] = [str(Path(test_dir) / p) for p in rows["image_path"]]
    missing = [p for p in rows["path"] if not Path(p).is_file()]
    if missing:
        raise UserError(f"{len(missing)} pseudo-labelled images not found under test_dir '{test_dir}' "
                        f"(first: {missing[0]}); set test_dir to the folder predict.py read them from")
    audit = audit_table(rows, num_classes=len(classes)) if len(rows) else None  # damaged files, an image twice
    if audit is not None and len(audit.problems):
        if bad_images == "error":
            raise UserError(f"pseudo_labels '{probs_csv}': {audit.summary()}: {audit.examples()}; fix the file "
                            f"or set bad_images='skip'")
        log(f"warning: pseudo_labels: skipping {len(audit.problems)} rows: {audit.examples()}")
        rows = audit.table
    return rows.assign(pseudo=True)


def add_pseudo_labels(table: pd.DataFrame, rows: pd.DataFrame, source: str, threshold: float, log=print) -> pd.DataFrame:
    """The training table plus the pseudo-labelled rows (fold -1: training of every fold, never validation);
    a pseudo row whose image is a training row is dropped, with a warning."""
    training = {str(Path(p).resolve()) for p in table["path"]}
    overlap = np.array([str(Path(p).resolve()) in training for p in rows["path"]], dtype=bool)
    if overlap.any():
        log(f"warning: pseudo_labels: {int(overlap.sum())} rows are images of the training table (first: "
            f"{rows['path'][overlap].iloc[0]}) and are dropped: they would be trained on under a second label "
            f"and leak into validation")
        rows = rows[~overlap]
    counts = rows["class_name"].value_counts()
    log(f"pseudo-labels: {len(rows)} test images from {source} reach pseudo_threshold {threshold} and join every "
        f"fold's training rows" + (": " + ", ".join(f"{c}: {n}" for c, n in counts.items()) if len(rows) else ""))
    table = table.assign(pseudo=False)
    return pd.concat([table, rows.assign(fold=PSEUDO_FOLD)], ignore_index=True)
