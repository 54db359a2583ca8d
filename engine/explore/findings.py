"""Audit and repair for exploring: the training audit plus duplicates, leakage, blanks and odd sizes.

Every finding is one row of one table (kind, split, row, image, class, the other image, detail,
action). Labels that the rest of the table can vouch for are repaired; what training would reject
is dropped from the cleaned table; what needs a human (label noise, leakage) is kept and flagged.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.data.tables.audit import Audit, audit_table, check_image_file
from engine.data.tables.near_duplicates import NEAR_DUPLICATE_BITS, duplicate_groups, hash_words
from engine.system.atomic import write_csv

FINDING_COLUMNS = ["kind", "split", "row", "image_path", "class_name", "other_image_path", "other_class_name",
                   "detail", "action"]
BLANK_INK = 0.001  # less than 0.1% of the pixels differ from the paper
EXTREME_SIDE_FACTOR = 4  # a side 4x smaller (or larger) than the data set's median side
EXTREME_ASPECT = 3.0  # longer side / shorter side
AUDIT_DETAILS = {"nan_target": "target is empty: training drops the row (fill in its target to keep it)",
                 "empty_image_path": "image_path is empty",
                 "duplicate_row": "the same image_path appears on an earlier row", "missing": "file not found",
                 "truncated": "the file ends early (an interrupted copy or download)"}


@dataclass
class Findings:
    """What exploring found: one row per finding, the cleaned training table and the audit it came from."""
    findings: pd.DataFrame
    clean: pd.DataFrame
    audit: Audit
    repaired: int


def _finding(kind: str, split: str, row, image_path: str, class_name=None, other_path=None, other_class=None,
             detail: str = "", action: str = "kept") -> dict:
    return dict(zip(FINDING_COLUMNS, (kind, split, row, image_path, class_name, other_path, other_class,
                                      detail, action)))


def repair_labels(table: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Fill a missing class_name from its target by the table's mapping, as training names it. A NaN target is
    not filled from its class_name: the training audit drops that row, and the report says what training does."""
    table = table.copy()
    target = pd.to_numeric(table["target"], errors="coerce")
    whole = target.notna() & (target == np.floor(target.fillna(0)))
    named = table["class_name"].notna() & (table["class_name"].astype(str).str.strip() != "")
    known = table[whole & named]
    # the mapping both ways, by majority, as the training audit defines it
    to_target = known.assign(t=target[known.index].astype(int)).groupby("class_name")["t"].agg(
        lambda s: s.value_counts().idxmax())
    to_name = {t: n for n, t in to_target.items()}
    repairs = []
    for i in table.index[whole & ~named]:
        t = int(target[i])
        if t in to_name:
            table.at[i, "class_name"] = to_name[t]
            repairs.append(_finding("missing_class_name", "train", i, table.at[i, "image_path"], to_name[t],
                                    detail=f"class_name was empty; target {t} is '{to_name[t]}'", action="repaired"))
    return table, repairs


def _audit_findings(audit: Audit, table: pd.DataFrame) -> list[dict]:
    rows = []
    for r in audit.problems.itertuples():
        kind, _, detail = r.problem.partition(" ")
        name = table.at[r.row, "class_name"]
        rows.append(_finding(kind, "train", r.row, r.image_path, None if pd.isna(name) else name,
                             detail=detail.strip("()") or AUDIT_DETAILS.get(kind, ""), action="dropped"))
    return rows


def _file_findings(test: pd.DataFrame | None) -> list[dict]:
    if test is None:
        return []
    out = []
    for i, image_path, path in zip(test.index, test["image_path"], test["path"]):
        if problem := check_image_file(path):
            kind, _, detail = problem.partition(" ")
            out.append(_finding(kind, "test", i, image_path, detail=detail.strip("()") or AUDIT_DETAILS.get(kind, "")))
    return out


def _duplicate_findings(images: pd.DataFrame, max_bits: int) -> tuple[list[dict], set[int]]:
    """Exact (same bytes) and near (close pHash) duplicates, one row per image against its group's first
    (training images come first, so a test image is compared with a training one); and train rows to drop."""
    out, drop = [], set()
    words = hash_words(list(images["phash"]))
    for group in duplicate_groups(list(images["phash"]), max_bits):
        x = images.iloc[group[0]]
        for member in group[1:]:
            y = images.iloc[member]
            exact = x["sha1"] == y["sha1"]
            kinds = {("train", "test"): "leakage_train_test", ("test", "test"): "duplicate_within_test"}
            kind = kinds.get((x["split"], y["split"]))
            if kind is None:
                kind = "duplicate_within_class" if x["class_name"] == y["class_name"] else "duplicate_across_classes"
            action = "kept"
            if exact and kind == "duplicate_within_class":
                action = "dropped (a copy)"
                drop.add(y["row"])
            elif exact and kind == "duplicate_across_classes":
                action = "dropped (same image, two labels)"
                drop.update((x["row"], y["row"]))
            elif kind == "duplicate_across_classes":
                action = "kept (check the labels)"
            elif kind == "leakage_train_test":
                action = "kept (validation overstates test accuracy)"
            bits = int(np.bitwise_count(words[group[0]] ^ words[member]).sum())
            detail = "identical files" if exact else f"near duplicate: pHash differs in {bits} of 255 bits"
            if len(group) > 2:
                detail += f" (a group of {len(group)})"
            out.append(_finding(kind, y["split"], y["row"], y["image_path"], y["class_name"], x["image_path"],
                                x["class_name"], detail, action))
    return out, drop


def _image_findings(images: pd.DataFrame, blank_ink: float) -> tuple[list[dict], set[int]]:
    """Blank images (dropped from training) and extreme sizes or aspect ratios (kept, flagged)."""
    out, drop = [], set()
    short = np.minimum(images["width"], images["height"]).astype(float)
    long = np.maximum(images["width"], images["height"]).astype(float)
    median_short, median_long = short.median(), long.median()
    for k, r in enumerate(images.itertuples()):
        where = (r.split, r.row, r.image_path, r.class_name)
        if r.ink < blank_ink:
            dropped = r.split == "train"
            out.append(_finding("blank", *where, detail=f"ink covers {100 * r.ink:.3f}% of the image",
                                action="dropped" if dropped else "kept"))
            if dropped:
                drop.add(r.row)
        if short.iloc[k] * EXTREME_SIDE_FACTOR < median_short or long.iloc[k] > EXTREME_SIDE_FACTOR * median_long:
            out.append(_finding("extreme_size", *where, detail=f"{r.width:.0f}x{r.height:.0f}; the median image is "
                                f"{median_short:.0f} px on its shorter side, {median_long:.0f} on its longer"))
        if long.iloc[k] > EXTREME_ASPECT * short.iloc[k]:
            out.append(_finding("extreme_aspect", *where,
                                detail=f"{r.width:.0f}x{r.height:.0f}: aspect ratio {long.iloc[k] / short.iloc[k]:.1f}"))
    return out, drop


def find_problems(train: pd.DataFrame, test: pd.DataFrame | None, facts: pd.DataFrame,
                  num_classes: int | None = None, near_bits: int = NEAR_DUPLICATE_BITS,
                  blank_ink: float = BLANK_INK) -> Findings:
    """Repair the labels, audit the table, then look at the images themselves; returns every finding."""
    repaired, rows = repair_labels(train)
    audit = audit_table(repaired, num_classes)
    rows += _audit_findings(audit, repaired)
    rows += _file_findings(test)
    clean = audit.table.copy()
    # the audit renumbers the rows it keeps; findings speak of the rows of the user's CSV
    rejected = set(audit.problems["row"])
    clean["row"] = [i for i in repaired.index if i not in rejected]
    parts = [clean.assign(split="train")[["split", "row", "image_path", "path", "class_name"]]]
    if test is not None:
        parts.append(test.assign(split="test", row=test.index, class_name=None)[
            ["split", "row", "image_path", "path", "class_name"]])
    images = pd.concat(parts, ignore_index=True).drop_duplicates("path")
    images = images.join(facts.drop(columns="path"), on="path")
    images = images[images["error"].fillna("x") == ""].reset_index(drop=True)  # broken files: the audit said so
    found, blank_rows = _image_findings(images, blank_ink)
    dup, dup_rows = _duplicate_findings(images[images["ink"] >= blank_ink].reset_index(drop=True), near_bits)
    rows += found + dup
    drop = (blank_rows | dup_rows)
    clean = clean[~clean["row"].isin(drop)].reset_index(drop=True)
    findings = pd.DataFrame(rows, columns=FINDING_COLUMNS)
    n_repaired = int((findings["action"] == "repaired").sum())
    return Findings(findings, clean, audit, n_repaired)


def write_clean_csv(clean: pd.DataFrame, path: str | Path) -> Path:
    """The cleaned table as a train.csv training can use (class_name,image_path,target), written atomically."""
    write_csv(clean[["class_name", "image_path", "target"]], path)
    return Path(path)
