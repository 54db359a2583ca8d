"""The data audit: every row training cannot use (missing, damaged, unreadable image, bad target) and why."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from engine.data.pixels.background import Background
from engine.data.pixels.images import jpeg_damage
from engine.data.tables.read import blank_cells
from engine.errors import UserError
from engine.system.device import cpu_count

TAIL_MARKERS = {b"\xff\xd8": b"\xff\xd9", b"\x89PNG": b"IEND"}  # header -> what a complete file ends with


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
        if damage := jpeg_damage(path):
            return f"corrupt ({damage})"
    return None


def check_image_files(paths: list[str]) -> list[str | None]:
    """check_image_file for many files, on every core when there are many (a JPEG check is a full decode)."""
    workers = min(cpu_count(), len(paths) // 256)
    if workers < 2:
        return [check_image_file(p) for p in paths]
    with get_context("fork").Pool(workers) as pool:
        return pool.map(check_image_file, paths, chunksize=64)


@dataclass
class Audit:
    """What the audit found: the usable table, the classes, and every rejected row with its reason."""
    table: pd.DataFrame
    classes: list[str]
    problems: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["row", "image_path", "problem"]))
    background: Background | None = None  # the paper colour, once measured (engine.data.pixels.background)
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
    for i in table.index[blank_cells(table["image_path"])]:
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
