"""Distillation: training targets that mix each row's own label with its teachers' out-of-fold probabilities.

    target = (1 - teacher_weight) * smoothed one-hot label + teacher_weight * mean over teachers of p^(1/T) / sum

A teacher is a finished k-fold run; its oof_probs.npy holds, for every training row, the probabilities of the
fold model that never trained on that row, so no row's target comes from a model that saw its label. A
teacher must hold exactly this data's rows and labels, its classes, and (where the student validates) the
same folds: otherwise the student's validation rows would have trained the teacher that made their targets'
neighbours, and its scores would flatter it. Pseudo-labelled rows have no out-of-fold probability: they keep
their own label. The targets reach the batch sources as a column of the table (engine/data/batches/targets.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from engine import run_folder
from engine.checkpoint import is_finished
from engine.data.batches.targets import SOFT
from engine.data.tables.pseudo_labels import add_pseudo_labels, read_pseudo_labels
from engine.data.tables.read import class_list_difference
from engine.errors import UserError
from engine.evaluate.predictions import class_names, read_rows_and_probs
from engine.recipe import Recipe
from engine.train.split_record import describe_change, row_keys


def read_teacher(run: str) -> tuple[pd.DataFrame, np.ndarray]:
    """A finished k-fold run's oof.csv and out-of-fold probabilities; one line for anything else."""
    run_dir = Path(run)
    values = run_folder.read_recipe_values(run_dir) if run_folder.is_run_dir(run_dir) else None
    if values is None:
        raise UserError(f"teacher={run}: not a run folder (no {run_folder.RECIPE}); name a finished k-fold run folder, "
                        f"e.g. runs/<recipe>/<time>")
    folds = int(values.get("folds", 1))
    if folds < 2:
        raise UserError(f"teacher={run} was trained with folds={folds}: only a k-fold run has out-of-fold "
                        f"probabilities for every row; train the teacher with folds=5")
    if not (run_dir / run_folder.OOF).is_file():
        waiting = [k for k in range(folds) if not is_finished(run_folder.fold_dir(run_dir, k) / run_folder.LAST)]
        raise UserError(f"teacher={run} is unfinished (fold(s) {', '.join(map(str, waiting)) or '?'} of {folds} to "
                        f"train, no {run_folder.OOF}); finish it: python train.py --resume {run}")
    if not (run_dir / run_folder.OOF_PROBS).is_file():
        raise UserError(f"teacher={run} has no {run_folder.OOF_PROBS} (trained before runs kept their probabilities); "
                        f"retrain it, or name another teacher")
    return read_rows_and_probs(run_dir / run_folder.OOF, run_dir / run_folder.OOF_PROBS,
                               f"teacher={run} is damaged: retrain it or name another teacher")


def align(run: str, oof: pd.DataFrame, probs: np.ndarray, table: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """The teacher's probabilities in the order of the student's rows, after checking classes, rows and folds."""
    if where := class_list_difference(class_names(oof, probs.shape[1]), classes):
        raise UserError(f"teacher={run} was trained on other classes ({where}, there vs here); name a teacher "
                        f"trained on this data")
    if change := describe_change(oof, table):
        raise UserError(f"teacher={run} was trained on other rows ({change}); a teacher needs exactly the "
                        f"student's training rows and labels")
    order = row_keys(table).merge(row_keys(oof).assign(at=np.arange(len(oof)), teacher_fold=oof["fold"].to_numpy()),
                                  how="left", on=["image_path", "target", "n"])
    validates = table["fold"].to_numpy() >= 0  # rows the student validates on somewhere
    moved = validates & (order["teacher_fold"].to_numpy() != table["fold"].to_numpy())
    if moved.any():
        first = table["image_path"].to_numpy()[moved][0]
        raise UserError(f"teacher={run} split the rows into other folds ({int(moved.sum())} rows differ, first: "
                        f"{first}); train the student with the teacher's folds, seed and fold_groups")
    return probs[order["at"].to_numpy()]


def sharpen(probs: np.ndarray, temperature: float) -> np.ndarray:
    """p^(1/T), renormalised per row (T = 1: unchanged)."""
    p = np.clip(probs.astype(np.float64), 1e-12, None) ** (1.0 / temperature)
    return p / p.sum(1, keepdims=True)


def test_probs(recipe: Recipe, classes: list[str], log=print) -> tuple[pd.DataFrame, np.ndarray]:
    """teacher_test: the test images (audited as pseudo-label rows) and the teachers' mean sharpened probabilities."""
    found = []
    for run in recipe.teacher:
        path = Path(run) / (Path(run_folder.OUTPUT).stem + run_folder.PROBS_SUFFIX)  # output_probs.csv
        if not path.is_file():
            raise UserError(f"teacher_test=True: teacher {run} has no {path.name}; write it with python predict.py "
                            f"{run} --kfold --save-probs (or set teacher_test=False)")
        probs = pd.read_csv(path, dtype={"image_path": str}).set_index("image_path")
        found.append((path, probs))
    rows = read_pseudo_labels(str(found[0][0]), recipe.test_dir or ".", classes, 1e-9, recipe.bad_images, log)
    names = [str(c) for c in classes]
    mean = np.mean([sharpen(probs.reindex(rows["image_path"])[names].to_numpy(np.float64), recipe.teacher_temperature)
                    for path, probs in found], axis=0)
    if np.isnan(mean).any():
        raise UserError(f"teacher_test=True: the teachers' {found[0][0].name} files hold other test images; predict "
                        f"the same test.csv with every teacher")
    return rows.assign(target=mean.argmax(1), class_name=[classes[t] for t in mean.argmax(1)]), mean


def add_teacher_targets(table: pd.DataFrame, classes: list[str], recipe: Recipe, log=print) -> pd.DataFrame:
    """The table with its SOFT column: every row's own label mixed with its teachers' out-of-fold probabilities
    (teacher_test: plus the test images, whose targets are the teachers' predictions)."""
    test_rows, test_soft = test_probs(recipe, classes, log) if recipe.teacher_test else (None, None)
    if test_rows is not None:
        table = add_pseudo_labels(table, test_rows, "the teachers' test predictions", 0.0, log)
    own = table[~table["pseudo"]] if "pseudo" in table else table
    teacher = np.mean([sharpen(align(run, *read_teacher(run), own, classes), recipe.teacher_temperature)
                       for run in recipe.teacher], axis=0)
    n, w, ls = len(classes), recipe.teacher_weight, recipe.label_smoothing
    hard = np.full((len(table), n), ls / n)
    hard[np.arange(len(table)), table["target"].to_numpy(int)] += 1.0 - ls
    soft = hard.copy()
    rows = np.flatnonzero(~table["pseudo"].to_numpy(bool)) if "pseudo" in table else np.arange(len(table))
    soft[rows] = (1 - w) * hard[rows] + w * teacher
    if test_rows is not None:  # add_pseudo_labels appends its rows last, in their order (less those it dropped)
        kept = test_rows.set_index("image_path").index.get_indexer(table["image_path"].iloc[len(own):])
        soft[len(own):] = test_soft[kept]
    log(f"distillation: {len(rows)} rows' targets are {1 - w:g} x their label + {w:g} x the out-of-fold "
        f"probabilities of {len(recipe.teacher)} teacher run(s) at temperature {recipe.teacher_temperature:g}"
        + (f"; {len(table) - len(rows)} test images learn the teachers' predictions" if test_rows is not None
           else f"; {len(table) - len(rows)} pseudo-labelled rows keep their label" if len(rows) < len(table) else ""))
    return table.assign(**{SOFT: list(soft.astype(np.float32))})
