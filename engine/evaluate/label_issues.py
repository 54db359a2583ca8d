"""Training rows whose given label the out-of-fold model disagrees with: label_issues.csv of a k-fold run.

Confident learning (Northcutt et al., the `cleanlab` package): per class, a threshold is the mean
out-of-fold probability of the rows given that class; the joint of given and confidently predicted
classes estimates the noise rates, and the rows each off-diagonal cell most clearly holds are flagged.
Every flagged row gets a label-quality score (its out-of-fold probability of the given class, lowest
first) and the class the out-of-fold model suggests. Rows are those of oof.csv, so every probability
comes from a model that never trained on that row.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from engine import run_folder
from engine.evaluate.predictions import class_names, read_rows_and_probs
from engine.system.atomic import write_csv
from engine.system.outputs import ledger_entry

METHOD = "cleanlab find_label_issues(prune_by_noise_rate), score self_confidence"
COLUMNS = ["image_path", "fold", "target", "class_name", "suggested", "suggested_name", "label_quality", "method"]


def oof_inputs(run_dir: Path) -> tuple[pd.DataFrame, np.ndarray] | None:
    """oof.csv and its probabilities (rows renormalised; float16 rounding), or None when the run has none."""
    oof, probs = Path(run_dir) / run_folder.OOF, Path(run_dir) / run_folder.OOF_PROBS
    if not (oof.is_file() and probs.is_file()):
        return None
    table, p = read_rows_and_probs(oof, probs, f"remake them with python -m engine.report {run_dir}")
    p = p.astype(np.float64)
    return table, p / np.clip(p.sum(1, keepdims=True), 1e-12, None)


def find_issues(table: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """The suspect rows of an out-of-fold table, most suspect (lowest label quality) first."""
    from cleanlab.filter import find_label_issues  # late: only runs that look for label issues load it
    from cleanlab.rank import get_label_quality_scores
    labels = table["target"].to_numpy(int)
    names = class_names(table, probs.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about classes with few rows; it still ranks them
        # n_jobs=1: cleanlab's pool of forked processes hung once a run's loader workers had been alive
        flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate",
                                    return_indices_ranked_by="self_confidence", n_jobs=1)
        quality = get_label_quality_scores(labels, probs, method="self_confidence")
    rows = table.iloc[flagged]
    suggested = probs[flagged].argmax(1)
    return pd.DataFrame({"image_path": rows["image_path"].to_numpy(), "fold": rows["fold"].to_numpy(int),
                         "target": labels[flagged], "class_name": [names[t] for t in labels[flagged]],
                         "suggested": suggested, "suggested_name": [names[s] for s in suggested],
                         "label_quality": quality[flagged].round(6), "method": METHOD}, columns=COLUMNS)


def write_label_issues(run_dir: Path, table: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """label_issues.csv in the run folder, from its out-of-fold table and probabilities."""
    issues = find_issues(table, probs)
    write_csv(issues, Path(run_dir) / run_folder.LABEL_ISSUES)
    return issues


def run_summary_line(run_dir: Path) -> str | None:
    """The summary line of a run's label_issues.csv, or None when it has none."""
    path, oof = Path(run_dir) / run_folder.LABEL_ISSUES, Path(run_dir) / run_folder.OOF
    if not (path.is_file() and oof.is_file()):
        return None
    metrics = Path(run_dir) / run_folder.OOF_METRICS
    accuracy = json.loads(metrics.read_text()).get("accuracy") if metrics.is_file() else None
    return summary_line(len(pd.read_csv(path, usecols=["image_path"])), len(pd.read_csv(oof, usecols=["image_path"])),
                        accuracy)


TRUST_ACCURACY = 0.8  # below this out-of-fold accuracy most disagreements are the model's own mistakes


def summary_line(found: int, rows: int, oof_accuracy: float | None = None) -> str:
    """The run summary's line about suspect labels (with a caution when the model is too weak to judge them)."""
    line = (f"{found} rows look mislabelled ({found / max(rows, 1):.1%} of {rows}), see {run_folder.LABEL_ISSUES} "
            f"(drop them: python -m engine.explore RECIPE --write-clean clean.csv --drop RUN/{run_folder.LABEL_ISSUES})")
    if oof_accuracy is not None and oof_accuracy < TRUST_ACCURACY:
        line += (f"\ncaution: the out-of-fold accuracy is only {oof_accuracy:.2f}: most of these rows are likely the "
                 f"model's own mistakes, not wrong labels; train it better before dropping rows")
    return line


def typical_rows(table: pd.DataFrame, probs: np.ndarray, suspects: set[str]) -> dict[int, str]:
    """Per class, the image_path of its most typical row: given that class, not a suspect, the highest OOF
    probability of it."""
    labels = table["target"].to_numpy(int)
    own = probs[np.arange(len(labels)), labels]
    ok = ~table["image_path"].isin(suspects).to_numpy()
    typical = {}
    for c in np.unique(labels):
        where = np.flatnonzero((labels == c) & ok)
        if len(where):
            typical[int(c)] = str(table["image_path"].iloc[where[own[where].argmax()]])
    return typical


def original_run(train_csv: str | None) -> tuple[Path, dict] | None:
    """(run folder, its oof_metrics.json) of the run whose label issues `explore --drop` removed from
    `train_csv`, or None when the table was not made so (or the run is gone)."""
    source = ledger_entry(train_csv).get("label_issues") if train_csv else None
    metrics = Path(source).parent / run_folder.OOF_METRICS if source else None
    if metrics is None or not metrics.is_file():
        return None
    return metrics.parent, json.loads(metrics.read_text())


def before_cleaning_line(train_csv: str | None, oof_accuracy: float) -> str | None:
    """For a run on a table that `explore --drop` cleaned: its out-of-fold accuracy beside the original run's."""
    if (found := original_run(train_csv)) is None:
        return None
    run_dir, before = found
    return (f"out-of-fold accuracy {oof_accuracy:.4f} on the cleaned table; before cleaning ({run_dir}): "
            f"{before['accuracy']:.4f} on {before['n']} rows")
