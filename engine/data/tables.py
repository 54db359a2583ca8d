"""Tables of images and labels: read the competition CSV or class folders, audit them, split them.

A table is a pandas DataFrame with `path` (absolute), `image_path` (as written in the CSV),
`class_name` and `target`. The audit finds every row training cannot use and says why.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine.data.background import Background
from engine.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TAIL_MARKERS = {b"\xff\xd8": b"\xff\xd9", b"\x89PNG": b"IEND"}  # header -> what a complete file ends with


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
    table["path"] = _paths(root, table["image_path"])  # a blank cell: "", which the audit rejects
    return table


def read_test_table(test_dir: str, csv: str) -> pd.DataFrame:
    """The unlabelled table for prediction, in the CSV's row order."""
    table = read_csv(csv, required=("image_path",))
    blank = table.index[_blank(table["image_path"])]
    if len(blank):  # every test row needs its prediction: a row without an image cannot get one
        raise UserError(f"'{csv}' row {blank[0]} has an empty image_path ({len(blank)} such rows); every row "
                        f"needs an image: fill them in or remove those rows")
    table["path"] = _paths(Path(test_dir), table["image_path"])
    return table


def _blank(column: pd.Series) -> pd.Series:
    return column.isna() | (column.astype(str).str.strip() == "")


def _paths(root: Path, column: pd.Series) -> list[str]:
    """Each image_path under root; "" for a blank cell (pandas reads it as NaN)."""
    return ["" if b else str(root / str(p)) for p, b in zip(column, _blank(column))]


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


def check_image_file(path: str) -> str | None:
    """Cheap integrity check (header, plus tail for JPEG/PNG): None if fine, else the problem."""
    p = Path(path)
    if not p.is_file():
        return "missing"
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
            f.seek(max(0, size - 4096))  # some writers pad after the end marker
            tail = f.read()
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if size == 0:
        return "unreadable (empty file)"
    from PIL import Image
    no_end = any(head.startswith(magic) and end not in tail for magic, end in TAIL_MARKERS.items())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                im.verify()
            if no_end:  # no end marker near the end: only a full decode can tell
                with Image.open(p) as im:
                    im.load()
    except Exception as e:
        return "truncated" if no_end else f"unreadable ({type(e).__name__})"
    if head.startswith(b"\xff\xd8"):  # damage in the middle of a JPEG only shows in a full decode
        from engine.data.images import jpeg_damage
        if damage := jpeg_damage(path):
            return f"corrupt ({damage})"
    return None


def check_image_files(paths: list[str]) -> list[str | None]:
    """check_image_file for many files, on every core when there are many (a JPEG check is a full decode)."""
    from engine.system.device import cpu_count
    workers = min(cpu_count(), len(paths) // 256)
    if workers < 2:
        return [check_image_file(p) for p in paths]
    from multiprocessing import get_context
    with get_context("fork").Pool(workers) as pool:
        return pool.map(check_image_file, paths, chunksize=64)


@dataclass
class Audit:
    """What the audit found: the usable table, the classes, and every rejected row with its reason."""
    table: pd.DataFrame
    classes: list[str]
    problems: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["row", "image_path", "problem"]))
    background: Background | None = None  # the paper colour, once measured (engine.data.background)
    emptied: list[str] = field(default_factory=list)  # classes that had rows, every one of them rejected

    def summary(self) -> str:
        n_bad = len(self.problems)
        head = f"data audit: {len(self.table) + n_bad} rows, {len(self.classes)} classes, {n_bad} rejected"
        if not n_bad:
            return head
        kinds = self.problems["problem"].str.split(" ").str[0].value_counts()
        return head + " (" + ", ".join(f"{k}: {v}" for k, v in kinds.items()) + ")"

    def examples(self, n: int = 5) -> str:
        rows = self.problems.head(n).itertuples()
        more = f" ... and {len(self.problems) - n} more" if len(self.problems) > n else ""
        return "; ".join(f"row {r.row} {r.image_path}: {r.problem}" for r in rows) + more


def audit_table(table: pd.DataFrame, num_classes: int | None = None, check_files: bool = True) -> Audit:
    """Find rows training cannot use: NaN / out-of-range / inconsistent labels, duplicates, bad files."""
    problems: dict[int, str] = {}
    target = pd.to_numeric(table["target"], errors="coerce")
    for i in table.index[target.isna()]:
        problems[i] = "nan_target"
    whole = target.notna() & (target == np.floor(target.fillna(0)))
    names = table["class_name"]
    # the class list: each class_name's most common target defines the mapping
    known = table[whole & names.notna()]
    mapping = (known.assign(t=target[known.index].astype(int)).groupby("class_name")["t"]
               .agg(lambda s: s.value_counts().idxmax()))
    # the class count: from the names' targets (an odd row cannot add classes), else the largest target
    valid = whole & (target >= 0)
    n = num_classes or (int(mapping.max()) + 1 if len(mapping) else int(target[valid].max()) + 1 if valid.any() else 0)
    if num_classes is None:  # 5, 7, 9 only would build a 10-class model that can predict classes never seen
        present = {int(t) for t in target[valid & (target < n)]} | {int(t) for t in mapping.values}
        missing = [t for t in range(n) if t not in present]
        if missing and missing != [0]:  # 1..K is a numbering (class 0 stays empty); 5, 7, 9 is not
            raise UserError(f"targets must be 0..K-1 (or 1..K), but {len(missing)} of 0..{n - 1} have no rows (e.g. "
                            f"{', '.join(map(str, missing[:5]))}); renumber the classes 0..{len(present) - 1} "
                            f"(predictions are class indices), or set num_classes={n} to keep empty classes")
    for i in table.index[target.notna() & (~whole | (target < 0) | (target >= n))]:
        problems.setdefault(i, f"target_out_of_range ({table.at[i, 'target']} not in 0..{n - 1})")
    for i in known.index:
        if int(target[i]) != mapping[names[i]] and i not in problems:
            problems[i] = f"label_mismatch (class_name {names[i]} is target {mapping[names[i]]}, row says {int(target[i])})"
    for i in table.index[_blank(table["image_path"])]:
        problems.setdefault(i, "empty_image_path")
    for i in table.index[table.duplicated("image_path", keep="first")]:
        problems.setdefault(i, "duplicate_row")
    if check_files:
        todo = [(i, path) for i, path in zip(table.index, table["path"]) if i not in problems]
        for (i, _), problem in zip(todo, check_image_files([path for _, path in todo])):
            if problem:
                problems[i] = problem
    classes = [str(i) for i in range(n)]
    for name, t in mapping.items():
        if 0 <= t < n:
            classes[t] = str(name)
    bad = pd.DataFrame([(i, table.at[i, "image_path"], p) for i, p in sorted(problems.items())],
                       columns=["row", "image_path", "problem"])
    good = table.drop(index=list(problems)).copy()
    good["target"] = pd.to_numeric(good["target"]).astype(int)
    good["class_name"] = [classes[t] for t in good["target"]]
    had = {int(t) for t in target[valid & (target < n)]}
    emptied = [classes[t] for t in sorted(had - set(good["target"]))]
    return Audit(good.reset_index(drop=True), classes, bad, emptied=emptied)


def apply_audit_policy(audit: Audit, policy: str, log=print) -> pd.DataFrame:
    """`skip`: warn and drop the rejected rows; `error`: stop with the list."""
    if len(audit.problems) and policy == "error":
        raise UserError(f"{audit.summary()}: {audit.examples()}; fix the data or set bad_images='skip'")
    log(audit.summary())
    if len(audit.problems):
        log(f"warning: skipping {len(audit.problems)} rows: {audit.examples()}")
    if audit.table.empty:
        raise UserError("no usable rows left after the data audit; check data_dir and train_csv")
    if audit.emptied:  # the model keeps an output for the class, which no step ever trains
        log(f"warning: every row of class(es) {', '.join(audit.emptied[:5])}{' ...' if len(audit.emptied) > 5 else ''} "
            f"was rejected: they train as empty classes the model never predicts; fix their images or drop them")
    return audit.table


def assign_folds(targets: np.ndarray, folds: int, val_fraction: float, seed: int,
                 groups: np.ndarray | None = None) -> np.ndarray:
    """Stratified, seeded fold index per row. folds = 1: validation rows get 0, training rows -1
    (val_fraction = 0: every row trains). Rows sharing a `groups` id always land in the same fold."""
    from sklearn.model_selection import StratifiedKFold, train_test_split
    n = len(targets)
    fold = np.full(n, -1, dtype=int)
    if folds == 1 and val_fraction == 0:
        return fold  # a full-data refit: no validation rows
    counts = np.bincount(targets)
    stratify = targets if counts[counts > 0].min() >= max(2, folds) else None
    if groups is not None and len(np.unique(groups)) < n:  # no shared ids: the ungrouped split, unchanged
        return _assign_group_folds(targets, folds, val_fraction, seed, groups, stratify is not None)
    if folds == 1:
        n_val = max(1, math.ceil(n * val_fraction))
        # a class with one image trains on it (it cannot be split); the others stay stratified
        pool = np.flatnonzero(counts[targets] >= 2) if stratify is None else np.arange(n)
        stratify = targets[pool] if len(pool) > n_val and n_val >= len(np.unique(targets[pool])) else None
        if len(pool) <= n_val:  # too few rows of split-able classes: a plain random split of everything
            pool = np.arange(n)
        _, val = train_test_split(pool, test_size=n_val, random_state=seed, stratify=stratify)
        fold[val] = 0
        return fold
    if n < folds:
        raise UserError(f"folds = {folds} needs at least {folds} rows; the data has {n}")
    if stratify is None:
        warnings.warn(f"some class has fewer than {folds} rows: folds are not stratified")
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(n), np.zeros(n))
    else:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(n), targets)
    for k, (_, val) in enumerate(splitter):
        fold[val] = k
    return fold


def _assign_group_folds(targets: np.ndarray, folds: int, val_fraction: float, seed: int, groups: np.ndarray,
                        stratified: bool) -> np.ndarray:
    """Stratified group k-fold; folds = 1 holds out the first of round(1 / val_fraction) group folds."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
    n_splits = folds if folds > 1 else max(2, round(1 / val_fraction))
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise UserError(f"{n_splits} folds need at least {n_splits} groups of near duplicates; the data has "
                        f"{n_groups}; set fold_groups='none' or fewer folds")
    fold = np.full(len(targets), -1, dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when a class has fewer rows than folds; folds still form
        splitter = (StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed) if stratified
                    else GroupKFold(n_splits))
        for k, (_, val) in enumerate(splitter.split(np.zeros(len(targets)), targets, groups)):
            if folds > 1 or k == 0:
                fold[val] = k
    return fold


def class_list_difference(first: list, second: list) -> str | None:
    """Where two class lists first differ, in words ("10 vs 12 classes", "class 3 is 'cat' vs 'dog'"); None if equal."""
    a, b = [str(c) for c in first], [str(c) for c in second]
    if a == b:
        return None
    diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return f"{len(a)} vs {len(b)} classes" if diff is None else f"class {diff} is '{a[diff]}' vs '{b[diff]}'"
