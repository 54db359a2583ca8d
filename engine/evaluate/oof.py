"""After the folds: out-of-fold predictions, their metrics, a table of the folds' scores and the report.

With `--fold K` on several machines every machine calls `finish_folds`; the one that finds every fold
finished writes oof.csv and oof_metrics.json (atomically, so two finishing together is harmless).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from engine import run_folder
from engine.evaluate import label_issues, report_figures
from engine.evaluate.metrics import goal_of, macro_f1, per_class_accuracy
from engine.evaluate.predictions import class_names, read_fold_predictions, read_probs, write_probs
from engine.system.atomic import write_csv, write_text


def top5_hits(table: pd.DataFrame) -> np.ndarray:
    """Whether each row's target is among its top-5 predictions."""
    return np.array([str(t) in str(top).split() for t, top in zip(table["target"], table["top5"])])


def score(table: pd.DataFrame, num_classes: int) -> dict:
    """Accuracy, top-5 and macro-F1 of a predictions table."""
    pred, target = table["pred"].to_numpy(int), table["target"].to_numpy(int)
    return {"n": int(len(table)), "accuracy": float((pred == target).mean()),
            "top5": float(top5_hits(table).mean()), "macro_f1": macro_f1(pred, target, num_classes)}


def oof_metrics(table: pd.DataFrame, num_classes: int) -> dict:
    """Overall scores plus per-class accuracy (class name -> accuracy, or None for an empty class)."""
    names = class_names(table, num_classes)
    per_class = per_class_accuracy(table["pred"].to_numpy(int), table["target"].to_numpy(int), num_classes)
    return {**score(table, num_classes),
            "per_class_accuracy": {n: (None if np.isnan(a) else float(a)) for n, a in zip(names, per_class)}}


def best_epoch(fold_dir: Path, monitor: str) -> int | None:
    """The epoch best.pt came from: the first epoch with the best monitored value in metrics.csv."""
    path = fold_dir / run_folder.METRICS
    if not path.is_file():
        return None
    metrics = pd.read_csv(path)
    if monitor not in metrics or metrics.empty:
        return None
    values = metrics[monitor]
    row = values.idxmin() if goal_of(monitor) == "minimize" else values.idxmax()
    return int(metrics.at[row, "epoch"])


def fold_table(run_dir: Path, table: pd.DataFrame, num_classes: int, monitor: str) -> str:
    """The folds' scores, one line each, and the out-of-fold total."""
    lines = [f"  {'fold':<6}{'best epoch':>11}{'images':>8}{'acc':>8}{'top5':>8}{'macro-F1':>10}"]
    for k, part in table.groupby("fold"):
        s = score(part, num_classes)
        epoch = best_epoch(run_folder.fold_dir(run_dir, k), monitor)
        lines.append(f"  {k:<6}{epoch if epoch is not None else '?':>11}{s['n']:>8}{s['accuracy']:>8.4f}"
                     f"{s['top5']:>8.4f}{s['macro_f1']:>10.4f}")
    if table["fold"].nunique() < 2:
        return "\n".join(lines)
    s = score(table, num_classes)
    lines.append(f"  {'oof':<6}{'':>11}{s['n']:>8}{s['accuracy']:>8.4f}{s['top5']:>8.4f}{s['macro_f1']:>10.4f}")
    return "\n".join(lines)


def write_oof(run_dir: Path, folds: int, num_classes: int) -> pd.DataFrame:
    """oof.csv (every training row once, predicted by the fold that did not train on it) and oof_metrics.json."""
    table = read_fold_predictions(run_dir, folds)
    write_csv(table, run_dir / run_folder.OOF)
    fold_probs = [run_folder.fold_dir(run_dir, k) / run_folder.VAL_PROBS for k in range(folds)]
    if all(p.is_file() for p in fold_probs):  # runs trained before val_probs.npy existed have none
        write_probs(run_dir / run_folder.OOF_PROBS, np.concatenate([read_probs(p) for p in fold_probs]))
    metrics = oof_metrics(table, num_classes)
    metrics["folds"] = {str(k): score(part, num_classes) for k, part in table.groupby("fold")}
    write_text(run_dir / run_folder.OOF_METRICS, json.dumps(metrics, indent=2) + "\n")
    return table


def finish_folds(run_dir: Path, recipe, waiting: list[int], log, classes: list[str] | None = None) -> None:
    """Once no fold is `waiting` to train: oof.csv, oof_metrics.json, the folds' table and the report."""
    run_dir = Path(run_dir)
    if waiting:
        log.print(f"folds still to train: {', '.join(map(str, waiting))} (of {recipe.folds}); the out-of-fold "
                  f"results are written when the last one finishes")
        return
    if recipe.folds == 1 and recipe.val_fraction == 0:
        log.print("full-data refit (val_fraction = 0): no validation rows, so no out-of-fold results or report")
        return
    missing = [k for k in range(recipe.folds) if not (run_folder.fold_dir(run_dir, k) / run_folder.VAL_PREDICTIONS).is_file()]
    if missing:
        log.print(f"warning: no {run_folder.VAL_PREDICTIONS} for fold(s) {', '.join(map(str, missing))}; "
                  f"no out-of-fold results")
        return
    num_classes = len(classes) if classes else infer_num_classes(run_dir, recipe)
    if recipe.folds > 1:
        table = write_oof(run_dir, recipe.folds, num_classes)
        log.print(f"out-of-fold results ({len(table)} images) -> {run_dir / run_folder.OOF}, {run_folder.OOF_METRICS}")
        if line := label_issues.before_cleaning_line(recipe.train_csv, score(table, num_classes)["accuracy"]):
            log.print(line)
    else:
        table = read_fold_predictions(run_dir, 1)
    log.print(fold_table(run_dir, table, num_classes, recipe.monitor))
    try:
        written = report_figures.make_report(run_dir)
        log.print(f"evaluation report: {', '.join(p.name for p in written)} in {run_dir}")
        if line := label_issues.run_summary_line(run_dir):
            log.print(line)
    except Exception as e:  # the weights and predictions are safe; a plotting failure must not fail the run
        log.print(f"warning: the evaluation report failed ({type(e).__name__}: {e}); "
                  f"retry with python -m engine.report {run_dir}")


def infer_num_classes(run_dir: Path, recipe) -> int:
    """Class count without the data: the recipe's, else one more than the largest index predicted or true."""
    if recipe.num_classes:
        return int(recipe.num_classes)
    top = 0
    for path in run_folder.fold_files(run_dir, run_folder.VAL_PREDICTIONS):
        t = pd.read_csv(path, usecols=["target", "pred"])
        top = max(top, int(t.to_numpy().max()))
    return top + 1
