"""Every file name in a run folder, and the names predict.py derives from its --out: the one place they are
spelled. A plain module of names, so every stage may import it (the run log too; engine/runs re-exports them).
"""
from __future__ import annotations

from pathlib import Path

RECIPE = "recipe.json"
TRAIN_LOG = "train.log"
BEST = "best.pt"
LAST = "last.pt"
METRICS = "metrics.csv"
VAL_PREDICTIONS = "val_predictions.csv"
OOF = "oof.csv"
OOF_METRICS = "oof_metrics.json"
OUTPUT = "output.csv"
VAL_PROBS = "val_probs.npy"  # a fold's validation probabilities at its best epoch, rows as val_predictions.csv
OOF_PROBS = "oof_probs.npy"  # every fold's VAL_PROBS stacked, rows as oof.csv (ensemble weights are fit on it)
ENSEMBLE = "ensemble.json"  # written by predict.py --weights oof next to its output CSV
ENSEMBLE_PER_CLASS = "ensemble_per_class.csv"
ENSEMBLE_PER_CLASS_PLOT = "ensemble_per_class.png"
SPLIT = "split.csv"  # every training row's image_path, target and fold, written when the run starts
LR_FIND = "lr_find.png"  # python train.py RECIPE --find-lr, in runs/<recipe>/ (beside the run folders)
LOCK = "train.lock"  # held while a process trains the fold (engine/system/lock.py)
WANDB_ID = "wandb_id"  # the W&B run id, so --resume continues the same W&B run
PROBS_SUFFIX = "_probs.csv"  # predict.py --save-probs: <out>_probs.csv
UNREADABLE_SUFFIX = "_unreadable.csv"  # predict.py --bad-images skip: <out>_unreadable.csv


def beside(out: Path, suffix: str) -> Path:
    """<out stem><suffix> next to predict.py's output CSV."""
    return Path(out).with_name(Path(out).stem + suffix)


def val_output(folder: Path, csv: str | Path) -> Path:
    """predict.py --val CSV's default output: val_<stem>.csv in the run folder."""
    return Path(folder) / f"val_{Path(csv).stem}.csv"
