"""Ensemble weights chosen on out-of-fold probabilities (predict.py --weights oof), and their report.

Method: Caruana et al.'s greedy forward selection with replacement. It starts from the member with the
best OOF accuracy and adds, 50 times, the member (repeats allowed) whose addition to the running mean
gives the best OOF accuracy (ties: the lower log loss); the step with the best OOF accuracy is kept.
Why not a constrained optimiser: weights come out non-negative, summing to 1 and sparse by
construction; it optimises the competition's metric itself rather than a smooth stand-in (steering by
log loss alone kept one member on the demo runs: the best-calibrated model is not the most accurate);
and because step 1 is the best member alone, the ensemble's OOF accuracy is never below the best
member's. Weights move in steps of 1/50, coarse enough not to chase single OOF rows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from engine import run_folder
from engine.errors import UserError
from engine.evaluate.metrics import macro_f1
from engine.evaluate.predictions import class_names, read_rows_and_probs
from engine.system.atomic import write_csv, write_text

SELECTION_STEPS = 50
FOLD_KEYS = ("data_dir", "train_csv", "seed", "folds", "fold_groups")  # what decides which rows each fold validates


@dataclass
class Ensemble:
    """Runs, their OOF-chosen weights, and the OOF scores behind them."""
    runs: list[Path]
    weights: np.ndarray
    report: dict
    per_class: pd.DataFrame


def load_oof(run_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """(oof.csv, its N x C probabilities); folds = 1: the hold-out's val_predictions.csv and probabilities."""
    folds = int(run_folder.read_recipe_values(run_dir).get("folds", 1))
    table_path, probs_path = ((run_dir / run_folder.OOF, run_dir / run_folder.OOF_PROBS) if folds > 1 else
                              (run_folder.fold_dir(run_dir, 0) / run_folder.VAL_PREDICTIONS,
                               run_folder.fold_dir(run_dir, 0) / run_folder.VAL_PROBS))
    if not probs_path.is_file() or not table_path.is_file():
        raise UserError(f"{run_dir} has no {probs_path.name} (trained before out-of-fold probabilities were kept, or a "
                        f"fold has not finished); retrain it, or use --weights equal")
    return read_rows_and_probs(table_path, probs_path, "the run folder was changed by hand: retrain it, or use "
                                                       "--weights equal")


def check_same_folds(run_dirs: Sequence[Path], tables: Sequence[pd.DataFrame]) -> None:
    """Weights fit on OOF rows only make sense when every run validated the same rows in the same folds."""
    first = run_folder.read_recipe(run_dirs[0])
    for run_dir, table in zip(run_dirs[1:], tables[1:]):
        recipe = run_folder.read_recipe(run_dir)
        keys = FOLD_KEYS + (("val_fraction",) if first.folds == 1 else ())
        diff = next((k for k in keys if getattr(recipe, k) != getattr(first, k)), None)
        if diff is None and not tables[0]["image_path"].astype(str).equals(table["image_path"].astype(str)):
            diff = "out-of-fold rows"
        if diff is not None:
            what = diff if diff == "out-of-fold rows" else f"{diff} = {getattr(recipe, diff)!r} vs {getattr(first, diff)!r}"
            raise UserError(f"{run_dir} does not share the folds of {run_dirs[0]} ({what}); --weights oof needs runs "
                            f"with the same data, seed, folds and fold_groups, or use --weights equal")


def accuracy(probs: np.ndarray, targets: np.ndarray) -> float:
    return float((probs.argmax(1) == targets).mean())


def log_loss(probs: np.ndarray, targets: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-7, None)).mean())


def caruana_weights(probs: Sequence[np.ndarray], targets: np.ndarray, steps: int = SELECTION_STEPS) -> np.ndarray:
    """Greedy forward selection with replacement (see the module doc); one weight per member, summing to 1."""
    def score(total: np.ndarray, n: int) -> tuple[float, float]:
        return accuracy(total, targets), -log_loss(total / n, targets)

    scores = [score(p.astype(np.float64), 1) for p in probs]
    first = max(range(len(probs)), key=lambda i: scores[i])
    counts = np.zeros(len(probs))
    counts[first], total = 1, probs[first].astype(np.float64)
    best = (*scores[first], counts.copy())
    for step in range(2, steps + 1):
        candidates = [score(total + p, step) for p in probs]
        pick = max(range(len(probs)), key=lambda i: candidates[i])
        counts[pick] += 1
        total += probs[pick]
        if candidates[pick] > best[:2]:
            best = (*candidates[pick], counts.copy())
    return best[2] / best[2].sum()


def hard_vote(probs: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Majority of the members' top classes; a tie goes to the class with the higher mean probability."""
    votes = np.zeros((len(probs[0]), num_classes))
    for p in probs:
        votes[np.arange(len(p)), p.argmax(1)] += 1
    return (votes + 0.5 * np.mean(probs, axis=0)).argmax(1)  # a mean probability < 1 never outweighs a vote


def run_label(run_dir: Path) -> str:
    return f"{Path(run_dir).parent.name}/{Path(run_dir).name}"


def plan_ensemble(run_dirs: Sequence[str | Path], kfold: bool = True) -> Ensemble:
    """OOF weights for runs that share their folds, with the members' and the ensemble's OOF scores."""
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs or not kfold:
        raise UserError("--weights oof needs run folders and --kfold (each run predicts with all the folds its "
                        "out-of-fold predictions came from): python predict.py RUN_A RUN_B --kfold --weights oof")
    not_runs = [str(r) for r in run_dirs if not run_folder.is_run_dir(r)]
    if not_runs:
        raise UserError(f"--weights oof weighs run folders by their out-of-fold predictions; '{not_runs[0]}' is not "
                        f"a run folder (pass run folders, or use --weights equal)")
    loaded = [load_oof(r) for r in run_dirs]
    tables, probs = [t for t, _ in loaded], [p for _, p in loaded]
    check_same_folds(run_dirs, tables)
    targets = tables[0]["target"].to_numpy(int)
    num_classes = probs[0].shape[1]
    if any(p.shape[1] != num_classes for p in probs):
        raise UserError("the runs' out-of-fold probabilities have different class counts; ensemble runs of one class list")
    weights = caruana_weights(probs, targets)
    mixed = sum(w * p for w, p in zip(weights, probs))
    members = [{"run": str(r), "weight": round(float(w), 4), "oof_acc": accuracy(p, targets),
                "oof_f1": macro_f1(p.argmax(1), targets, num_classes)} for r, w, p in zip(run_dirs, weights, probs)]
    report = {"weights": "oof", "method": f"greedy forward selection with replacement (Caruana), {SELECTION_STEPS} "
              f"steps by OOF accuracy (ties: log loss), best step kept", "oof_rows": int(len(targets)), "members": members,
              "oof_acc": accuracy(mixed, targets), "oof_f1": macro_f1(mixed.argmax(1), targets, num_classes),
              "soft_vote_oof_acc": accuracy(np.mean(probs, axis=0), targets),
              "hard_vote_oof_acc": float((hard_vote(probs, num_classes) == targets).mean())}
    per_class = per_class_recall(tables[0], targets, [p.argmax(1) for p in probs], mixed.argmax(1),
                                 [run_label(r) for r in run_dirs], num_classes)
    return Ensemble(run_dirs, weights, report, per_class)


def per_class_recall(table: pd.DataFrame, targets: np.ndarray, member_preds: Sequence[np.ndarray],
                     ensemble_pred: np.ndarray, labels: Sequence[str], num_classes: int) -> pd.DataFrame:
    """Recall per class of each member and of the ensemble; the classes the members disagree on most first."""
    total = np.bincount(targets, minlength=num_classes).astype(float)

    def recall(pred: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.bincount(targets[pred == targets], minlength=num_classes) / total

    out = pd.DataFrame({"class": class_names(table, num_classes), "rows": total.astype(int)})
    for label, pred in zip(labels, member_preds):
        out[label] = recall(pred)
    member_cols = list(out.columns[2:])
    out["ensemble"] = recall(ensemble_pred)
    out["member_spread"] = out[member_cols].max(axis=1) - out[member_cols].min(axis=1)
    return out[out["rows"] > 0].sort_values(["member_spread", "ensemble"], ascending=[False, True], kind="stable")


def write_ensemble_report(ensemble: Ensemble, folder: Path) -> list[Path]:
    """ensemble.json, the per-class recall table and its plot (top classes), next to the output CSV."""
    folder = Path(folder)
    paths = [folder / name for name in (run_folder.ENSEMBLE, run_folder.ENSEMBLE_PER_CLASS,
                                        run_folder.ENSEMBLE_PER_CLASS_PLOT)]
    write_text(paths[0], json.dumps(ensemble.report, indent=2) + "\n")
    write_csv(ensemble.per_class, paths[1], float_format="%.4f")
    from engine.evaluate.ensemble_plot import plot_per_class  # late: matplotlib (~0.4 s) only for --weights oof
    plot_per_class(ensemble.per_class, paths[2])
    return paths


def checkpoint_weights(run_weights: Sequence[float], checkpoints_per_run: Sequence[int]) -> list[float]:
    """A run's weight shared equally by its fold checkpoints (a run predicts with the mean of its folds)."""
    return [w / n for w, n in zip(run_weights, checkpoints_per_run) for _ in range(n)]
