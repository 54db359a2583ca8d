"""Reading the tables: the training CSV or class folders, the test CSV, any CSV with required columns.

A table is a pandas DataFrame with `path` (absolute), `image_path` (as written in the CSV),
`class_name` and `target`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from engine.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def read_train_table(data_dir: str, csv: str | None) -> pd.DataFrame:
    """The labelled table: from `csv` (class_name,image_path,target) or from class folders in data_dir."""
    root = Path(data_dir)
    if csv is None:
        if not root.is_dir():
            raise UserError(f"data_dir '{root}' not found; set data_dir to a folder of class folders")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not classes:
            raise UserError(f"data_dir '{root}' has no class folders; expected {root}/<class_name>/<image>")
        rows = [(c, f"{c}/{f.name}", t) for t, c in enumerate(classes)
                for f in sorted((root / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        table = pd.DataFrame(rows, columns=["class_name", "image_path", "target"])
    else:
        table = read_csv(csv, required=("image_path", "target"))
        if "class_name" not in table:
            table["class_name"] = None
    table["path"] = absolute_paths(root, table["image_path"])  # a blank cell: "", which the audit rejects
    return table


def read_test_table(test_dir: str, csv: str) -> pd.DataFrame:
    """The unlabelled table for prediction, in the CSV's row order."""
    table = read_csv(csv, required=("image_path",))
    if table.empty:  # a header-only CSV would give a header-only output without a word
        raise UserError(f"'{csv}' has no rows (only its header); list the test images in it, one image_path a row")
    blank = table.index[blank_cells(table["image_path"])]
    if len(blank):  # every test row needs its prediction: a row without an image cannot get one
        raise UserError(f"'{csv}' row {blank[0]} has an empty image_path ({len(blank)} such rows); every row "
                        f"needs an image: fill them in or remove those rows")
    table["path"] = absolute_paths(Path(test_dir), table["image_path"])
    return table


def blank_cells(column: pd.Series) -> pd.Series:
    return column.isna() | (column.astype(str).str.strip() == "")


def absolute_paths(root: Path, column: pd.Series) -> list[str]:
    """Each image_path under root; "" for a blank cell (pandas reads it as NaN)."""
    return ["" if b else str(root / str(p)) for p, b in zip(column, blank_cells(column))]


def read_csv(csv: str, required: tuple, what: str = "CSV",
             fix: str = "check the recipe's *_csv keys (paths are relative to where you run)") -> pd.DataFrame:
    """A CSV with its `required` columns, or one UserError line naming `what` it is and, if missing, `fix`."""
    if not Path(csv).is_file():
        raise UserError(f"{what} '{csv}' not found; {fix}")
    try:
        table = pd.read_csv(csv)
    except Exception as e:
        raise UserError(f"{what} '{csv}' could not be read: {e}") from e
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise UserError(f"{what} '{csv}' lacks column(s) {', '.join(missing)}; it has "
                        f"{', '.join(map(str, table.columns))}; {fix}")
    return table


def class_list_difference(first: list, second: list) -> str | None:
    """Where two class lists first differ, in words ("10 vs 12 classes", "class 3 is 'cat' vs 'dog'"); None if equal."""
    a, b = [str(c) for c in first], [str(c) for c in second]
    if a == b:
        return None
    diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return f"{len(a)} vs {len(b)} classes" if diff is None else f"class {diff} is '{a[diff]}' vs '{b[diff]}'"
