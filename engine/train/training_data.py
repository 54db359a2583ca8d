"""The data of a training run: the table read and audited, its paper colour measured, near-duplicate groups,
folds assigned, pseudo-labels added and (distillation) the teachers' targets mixed in; rank 0 does the work and
the other processes receive it."""
from __future__ import annotations

import numpy as np
import pandas as pd

from engine.data.pixels.background import resolve_background
from engine.data.tables.audit import Audit, apply_audit_policy, audit_table
from engine.data.tables.demo_digits import ensure_demo_data
from engine.data.tables.folds import assign_folds, few_rows_warning
from engine.data.tables.near_duplicates import group_ids
from engine.data.tables.pseudo_labels import add_pseudo_labels, read_pseudo_labels
from engine.data.tables.read import read_train_table
from engine.recipe import Recipe
from engine.system import distributed
from engine.system.distributed import Dist
from engine.system.progress import progress
from engine.train.distill import add_teacher_targets


def load_data(recipe: Recipe, d: Dist, log=print, show_progress: bool = True) -> tuple[pd.DataFrame, list[str], Audit]:
    """Read and audit the training table and measure its paper colour (rank 0 checks the files, the others
    receive the result)."""
    if d.is_main:
        ensure_demo_data(recipe.data_dir, log)
    distributed.barrier()
    result = None
    if d.is_main:
        audit = audit_table(read_train_table(recipe.data_dir, recipe.train_csv), recipe.num_classes)
        table = apply_audit_policy(audit, recipe.bad_images, log).copy()
        audit.background = resolve_background(recipe.background, table["path"],
                                              progress=lambda it, n: progress(it, n, "background", show_progress))
        log(audit.background.describe())
        groups = fold_groups(recipe, table, log)
        table["fold"] = assign_folds(table["target"].to_numpy(), recipe.folds, recipe.val_fraction, recipe.seed, groups)
        if few := few_rows_warning(table["target"].to_numpy(), audit.classes, recipe.folds):
            log(few)
        if recipe.pseudo_labels:
            rows = read_pseudo_labels(recipe.pseudo_labels, recipe.test_dir or ".", audit.classes, recipe.pseudo_threshold,
                                      recipe.bad_images, log)
            table = add_pseudo_labels(table, rows, recipe.pseudo_labels, recipe.pseudo_threshold, log)
        if recipe.teacher:
            table = add_teacher_targets(table, audit.classes, recipe, log)
        result = (table, audit.classes, audit)
    return distributed.broadcast_object(result)


def fold_groups(recipe: Recipe, table: pd.DataFrame, log=print) -> np.ndarray | None:
    """Near-duplicate group per row when the recipe keeps them together (None: rows split freely)."""
    if recipe.fold_groups == "none" or (recipe.folds == 1 and recipe.val_fraction == 0):
        return None
    groups = group_ids(table["path"].tolist())
    sizes = np.bincount(np.unique(groups, return_inverse=True)[1])
    log(f"fold groups: {int((sizes > 1).sum())} groups of near duplicates ({int(sizes[sizes > 1].sum())} rows) "
        f"kept on one side of every split" + ("" if (sizes > 1).any() else "; folds as without fold_groups"))
    return groups
