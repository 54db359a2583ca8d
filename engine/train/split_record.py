"""The split a run trains on, kept in its run folder (split.csv: image_path, target, fold) when it starts.

--resume and --fold K (on this or another machine) train on the recorded folds, and refuse in one line
when the training table no longer holds the same rows with the same labels: continuing would train a
fold on rows it validated before, end the schedule at another step and mix two splits in oof.csv.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from engine import run_folder
from engine.checkpoint import peek
from engine.errors import UserError
from engine.system import distributed
from engine.system.atomic import write_csv
from engine.system.distributed import Dist

COLUMNS = ["image_path", "target", "fold"]


def row_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """image_path and target as strings, plus the occurrence of that pair (a row listed twice is two rows)."""
    keys = pd.DataFrame({"image_path": frame["image_path"].astype(str), "target": frame["target"].astype(int)})
    return keys.assign(n=keys.groupby(["image_path", "target"]).cumcount())


def describe_change(recorded: pd.DataFrame, table: pd.DataFrame) -> str | None:
    """'3 rows dropped, 1 label changed (first: cat/7.png)' when the rows differ, else None."""
    old, new = row_keys(recorded), row_keys(table)
    both = old.merge(new, how="outer", on=["image_path", "target", "n"], indicator=True)
    dropped, added = both[both["_merge"] == "left_only"], both[both["_merge"] == "right_only"]
    if dropped.empty and added.empty:
        return None
    relabelled = set(dropped["image_path"]) & set(added["image_path"])
    parts = [f"{len(dropped) - len(relabelled)} rows dropped", f"{len(added) - len(relabelled)} added",
             f"{len(relabelled)} labels changed"]
    first = sorted(relabelled)[0] if relabelled else (dropped if len(dropped) else added)["image_path"].iloc[0]
    return f"{', '.join(parts)}; first: {first}"


def fingerprint(table: pd.DataFrame) -> str:
    """A short hash of the split (each row's image_path, target and fold, in any order): what last.pt records
    it was trained on, so that a split.csv edited since (folds swapped, rows deleted) is caught on --resume."""
    rows = sorted(zip(table["image_path"].astype(str), table["target"].astype(int), table["fold"].astype(int)))
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


def trained_on(run_dir: Path) -> tuple[Path, str] | None:
    """(a fold's last.pt, the split fingerprint it recorded), from the first fold that has one; None if none does
    (no fold started yet, or checkpoints from before the fingerprint was saved)."""
    for last in run_folder.fold_files(run_dir, run_folder.LAST):
        split = (peek(last) or {}).get("split")  # a damaged last.pt is reported where it is resumed
        if isinstance(split, str):
            return last, split
    return None


def check_recorded(path: Path, recorded: pd.DataFrame, run_dir: Path) -> None:
    """A UserError naming split.csv when it no longer holds the split a fold's last.pt was trained on."""
    trained = trained_on(run_dir)
    if trained is not None and trained[1] != fingerprint(recorded):
        counts = recorded["fold"].value_counts().sort_index()
        raise UserError(f"{path} changed since {trained[0]} was trained on it (it now holds {len(recorded)} rows, "
                        f"folds {dict(counts.items())}): resuming would train on rows a fold validated on and mix two "
                        f"splits in oof.csv; restore {path.name} as the run wrote it, or start a new run (a new --name)")


def recorded_folds(path: Path, table: pd.DataFrame, train_csv: str, run_dir: Path) -> np.ndarray:
    """The folds split.csv records for the table's rows (also where another machine would split otherwise); a
    UserError when split.csv changed since a fold trained on it, or no longer holds the table's rows."""
    recorded = pd.read_csv(path, dtype={"image_path": str})
    check_recorded(path, recorded, run_dir)
    if change := describe_change(recorded, table):
        raise UserError(f"{train_csv} and {path} no longer hold the same rows ({change}): resuming would mix two "
                        f"splits; restore whichever of them changed, or start a new run (a new --name)")
    order = row_keys(table).merge(row_keys(recorded).assign(fold=recorded["fold"].to_numpy()),
                                  how="left", on=["image_path", "target", "n"])
    return order["fold"].to_numpy()


def keep_split(run_dir: Path, table: pd.DataFrame, train_csv: str, d: Dist) -> pd.DataFrame:
    """The table with the folds recorded in run_dir's split.csv (written now if the run has none); a UserError
    if the rows or labels changed since. Rank 0 reads and writes; every rank gets the same folds."""
    folds = None
    if d.is_main:
        path = Path(run_dir) / run_folder.SPLIT
        if not path.is_file():
            write_csv(table[COLUMNS], path)
            folds = table["fold"].to_numpy()
        else:
            try:
                folds = recorded_folds(path, table, train_csv, run_dir)
            except UserError as e:  # every rank raises it, after the broadcast
                folds = e
    folds = distributed.broadcast_object(folds)
    if isinstance(folds, UserError):
        raise folds
    return table.assign(fold=folds)
