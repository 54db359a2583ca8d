"""The prediction CSVs: one writer of val_predictions.csv and one reader for every predictions table
(a fold's val_predictions.csv, a run's oof.csv or folds, or any CSV of the same columns)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine import run_folder
from engine.errors import UserError
from engine.system.atomic import write_atomic, write_csv

REQUIRED = ("image_path", "target", "pred", "confidence")


def predictions_frame(image_paths, targets, probs: torch.Tensor, classes: list[str]) -> pd.DataFrame:
    """One row per image: target, prediction, confidence and the top-5 classes (val_predictions.csv's columns)."""
    top = probs.topk(min(5, probs.shape[1]), dim=1)
    pred = top.indices[:, 0].numpy()
    targets = [int(t) for t in targets]
    return pd.DataFrame({"image_path": list(image_paths), "target": targets,
                         "class_name": [classes[t] if 0 <= t < len(classes) else "?" for t in targets],
                         "pred": pred, "pred_name": [classes[p] for p in pred], "confidence": top.values[:, 0].numpy(),
                         "top5": [" ".join(map(str, row)) for row in top.indices.tolist()]})


def write_val_predictions(path: Path, table: pd.DataFrame, probs: torch.Tensor, classes: list[str]) -> None:
    """A fold's val_predictions.csv: its validation rows as `predictions_frame` describes them."""
    write_csv(predictions_frame(table["image_path"].values, table["target"].values, probs, classes), path)


def write_probs(path: Path, probs: torch.Tensor | np.ndarray) -> None:
    """Class probabilities as a float16 .npy (half the size; ample precision for weighting and voting)."""
    array = np.asarray(probs, dtype=np.float16)
    write_atomic(path, lambda f: np.save(f, array), binary=True)


def read_probs(path: Path) -> np.ndarray:
    """Probabilities written by write_probs, as float32."""
    return np.load(path).astype(np.float32)


def read_rows_and_probs(table_path: Path, probs_path: Path, fix: str) -> tuple[pd.DataFrame, np.ndarray]:
    """A predictions table (oof.csv, val_predictions.csv) and its probabilities, row for row; a UserError ending
    in `fix` when their row counts differ (a file of the pair replaced or cut short)."""
    table, probs = pd.read_csv(table_path, dtype={"image_path": str}), read_probs(probs_path)
    if len(table) != len(probs):
        raise UserError(f"{probs_path} has {len(probs)} rows but {table_path} has {len(table)}; {fix}")
    return table, probs


def read_predictions_csv(path: Path) -> pd.DataFrame:
    """One predictions CSV, with a `fold` column (from its fold<k> folder, else 0 where it has none)."""
    try:
        table = pd.read_csv(path)
    except Exception as e:
        raise UserError(f"'{path}' is not a predictions CSV ({type(e).__name__}); pass a run folder, "
                        f"{run_folder.OOF} or a {run_folder.VAL_PREDICTIONS}") from e
    fold = run_folder.fold_of(Path(path).parent)
    if fold is not None:
        table["fold"] = fold
    elif "fold" not in table:
        table["fold"] = 0
    return table


def read_predictions(source: Path) -> tuple[pd.DataFrame, Path]:
    """A predictions table and the folder it belongs to: a run folder's oof.csv (else its folds'
    val_predictions.csv), or the given CSV. Every row carries its fold."""
    source = Path(source)
    if source.is_dir():
        csvs = run_folder.prediction_csvs(source)
        if not csvs:
            raise UserError(f"'{source}' has no {run_folder.OOF} or {run_folder.FOLD_PREFIX}*/{run_folder.VAL_PREDICTIONS}; "
                            f"train a run first")
        table, folder = pd.concat([read_predictions_csv(c) for c in csvs], ignore_index=True), source
    elif source.is_file():
        table, folder = read_predictions_csv(source), source.parent
    else:
        raise UserError(f"'{source}' not found; pass a run folder or a predictions CSV")
    missing = [c for c in REQUIRED if c not in table]
    if missing:
        raise UserError(f"'{source}' lacks column(s) {', '.join(missing)}; expected a {run_folder.VAL_PREDICTIONS} "
                        f"or {run_folder.OOF}")
    return table, folder


def read_fold_predictions(run_dir: Path, folds: int) -> pd.DataFrame:
    """Every fold's val_predictions.csv (all must exist), one table with a `fold` column."""
    return pd.concat([read_predictions_csv(run_folder.fold_dir(run_dir, k) / run_folder.VAL_PREDICTIONS) for k in range(folds)],
                     ignore_index=True)


def class_names(table: pd.DataFrame, num_classes: int) -> list[str]:
    """Class names by index, read from the table's (target, class_name) and (pred, pred_name) pairs."""
    names = [str(i) for i in range(num_classes)]
    for idx_col, name_col in (("pred", "pred_name"), ("target", "class_name")):
        if name_col in table:
            for i, name in zip(table[idx_col], table[name_col]):
                if 0 <= int(i) < num_classes and isinstance(name, str):
                    names[int(i)] = name
    return names


def confident_mistakes(table: pd.DataFrame, count: int) -> pd.DataFrame:
    """The `count` wrong predictions the model was surest of, surest first."""
    wrong = table[table["pred"] != table["target"]]
    return wrong.sort_values("confidence", ascending=False).head(count)
