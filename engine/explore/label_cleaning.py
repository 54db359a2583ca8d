"""`python -m engine.explore RECIPE --write-clean clean.csv --drop RUN/label_issues.csv [--relabel]`: the recipe's
training table without the rows a k-fold run flagged as mislabelled (or with the suggested label instead),
as a train.csv training can use. Reads only the tables: no image is decoded.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from engine import run_folder
from engine.data.tables.demo_digits import ensure_demo_data
from engine.data.tables.read import read_train_table
from engine.errors import UserError
from engine.explore.findings import write_clean_csv
from engine.recipe import Recipe
from engine.system.outputs import OutputGuard

NEEDED = ("image_path", "target", "suggested", "suggested_name")


def read_issues(path: str | Path) -> pd.DataFrame:
    """A label_issues.csv; one line when the file is missing or is something else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--drop {path}: not found; pass a run's {run_folder.LABEL_ISSUES} (written after a k-fold run, "
                        f"or by python -m engine.report RUN)")
    try:
        issues = pd.read_csv(path, dtype={"image_path": str})
    except Exception as e:
        raise UserError(f"--drop {path} is not a {run_folder.LABEL_ISSUES} ({type(e).__name__}); pass a run's "
                        f"{run_folder.LABEL_ISSUES}") from e
    missing = [c for c in NEEDED if c not in issues]
    if missing:
        raise UserError(f"--drop {path} is not a {run_folder.LABEL_ISSUES} (no column {', '.join(missing)}); pass the "
                        f"{run_folder.LABEL_ISSUES} of a k-fold run on this recipe's data")
    return issues


def check_same_data(issues: pd.DataFrame, train: pd.DataFrame, path: Path, train_csv: str | None) -> None:
    """Every flagged row must be a row of this training table with the label it was flagged under."""
    given = dict(zip(train["image_path"].astype(str), train["target"].astype(int)))
    unknown = [p for p in issues["image_path"] if p not in given]
    if unknown:
        raise UserError(f"--drop {path} comes from another run's data: {len(unknown)} of its rows are not in "
                        f"{train_csv or 'the class folders'} (first: {unknown[0]}); use the {run_folder.LABEL_ISSUES} of "
                        f"a run trained on this table")
    changed = [p for p, t in zip(issues["image_path"], issues["target"]) if given[p] != int(t)]
    if changed:
        raise UserError(f"--drop {path} comes from another run's data: {len(changed)} of its rows have another "
                        f"label here (first: {changed[0]}); use the {run_folder.LABEL_ISSUES} of a run trained on this table")


def clean_table(train: pd.DataFrame, issues: pd.DataFrame, relabel: bool) -> pd.DataFrame:
    """The table without the flagged rows, or (relabel) with their suggested class in their place."""
    flagged = train["image_path"].astype(str).isin(set(issues["image_path"]))
    if not relabel:
        return train[~flagged]
    suggested = issues.drop_duplicates("image_path").set_index("image_path")
    out = train.copy()
    paths = out.loc[flagged, "image_path"].astype(str)
    out.loc[flagged, "target"] = suggested.loc[paths, "suggested"].to_numpy(int)
    out.loc[flagged, "class_name"] = suggested.loc[paths, "suggested_name"].astype(str).to_numpy()
    return out


def write_without_issues(recipe: Recipe, issues_path: str | Path, out_path: str | Path, relabel: bool = False,
                         log=print) -> Path:
    """Write the cleaned train.csv (checked by the output rule first); returns its path."""
    guard = OutputGuard("explore --write-clean", [recipe.train_csv, recipe.test_csv, issues_path],
                        example="train_clean.csv")
    guard.check(out_path)
    issues = read_issues(issues_path)
    ensure_demo_data(recipe.data_dir, log)
    train = read_train_table(recipe.data_dir, recipe.train_csv)
    check_same_data(issues, train, Path(issues_path), recipe.train_csv)
    clean = clean_table(train, issues, relabel)
    written = write_clean_csv(clean, guard.check(out_path))
    # the ledger keeps where the table came from: the retrain's summary and the runs table name the original
    guard.wrote(written, note={"label_issues": str(Path(issues_path).resolve())})
    what = f"relabelled {len(issues)} rows" if relabel else f"dropped {len(train) - len(clean)} rows"
    log(f"{what} flagged in {issues_path}: {len(clean)} of {len(train)} rows -> {written}\n"
        f"retrain: python train.py RECIPE train_csv={written}  (python -m engine.runs shows both runs' oof_acc)")
    return written
