"""Splitting a table: stratified, seeded folds (or one validation split), near-duplicate groups kept together."""
from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold, train_test_split

from engine.errors import UserError


def assign_folds(targets: np.ndarray, folds: int, val_fraction: float, seed: int,
                 groups: np.ndarray | None = None) -> np.ndarray:
    """Stratified, seeded fold index per row. folds = 1: validation rows get 0, training rows -1
    (val_fraction = 0: every row trains). Rows sharing a `groups` id always land in the same fold."""
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
    if stratify is None:  # few_rows_warning says so
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(n), np.zeros(n))
    else:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(n), targets)
    for k, (_, val) in enumerate(splitter):
        fold[val] = k
    return fold


def few_rows_warning(targets: np.ndarray, classes: list[str], folds: int) -> str | None:
    """One line naming the classes with fewer rows than folds (k-fold cannot stratify them), else None."""
    counts = np.bincount(targets, minlength=len(classes))
    few = [f"{classes[c]} ({counts[c]})" for c in np.flatnonzero((counts > 0) & (counts < folds))]
    if folds < 2 or not few:
        return None
    return (f"warning: {len(few)} class(es) have fewer rows than folds={folds}: {', '.join(few[:5])}"
            f"{' ...' if len(few) > 5 else ''}; some folds validate on none of their rows, and the folds are not "
            f"stratified by class (that needs {folds} rows of every class); fewer folds or more rows fix it")


def _assign_group_folds(targets: np.ndarray, folds: int, val_fraction: float, seed: int, groups: np.ndarray,
                        stratified: bool) -> np.ndarray:
    """Stratified group k-fold; folds = 1 holds out the first of round(1 / val_fraction) group folds."""
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
