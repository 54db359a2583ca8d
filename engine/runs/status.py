"""What one run folder says about itself: its recipe, each fold's progress and validation curve, and whether it
finished, stopped (and how to resume it), failed before its first checkpoint, or is being trained now."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from engine import run_folder
from engine.checkpoint import is_finished, peek
from engine.errors import UserError
from engine.recipe import Recipe
from engine.system import lock


@dataclass
class RunState:
    """A run folder as the table shows it."""
    path: Path
    name: str  # relative to the folder listed: <recipe>/<time>[-name]
    recipe: Recipe | None  # None: recipe.json is damaged
    status: str  # finished | stopped | failed | training | damaged
    detail: str  # the resume command, the lock holder, or why it failed
    folds_done: int = 0
    curves: dict[int, pd.DataFrame] = field(default_factory=dict)  # fold -> its metrics.csv rows
    oof_acc: float | None = None

    @property
    def folds_planned(self) -> int:
        return self.recipe.folds if self.recipe else 0

    def best(self, column: str) -> float | None:
        """The mean over folds of each fold's best `column` (val_acc, val_f1); None without validation."""
        values = [c[column].max() for c in self.curves.values() if column in c and c[column].notna().any()]
        return float(sum(values) / len(values)) if values else None

    @property
    def wall_s(self) -> float:
        """Seconds spent in epochs, every fold together (metrics.csv's time_s)."""
        return float(sum(c["time_s"].sum() for c in self.curves.values() if "time_s" in c))

    def curve(self, column: str = "val_acc") -> pd.Series:
        """`column` by epoch, averaged over the folds that reached the epoch."""
        parts = [c.set_index("epoch")[column] for c in self.curves.values() if {"epoch", column} <= set(c)]
        return pd.concat(parts, axis=1).mean(axis=1).dropna() if parts else pd.Series(dtype=float)


def read_curve(path: Path) -> pd.DataFrame | None:
    """A fold's metrics.csv with every cell a number (an edited, non-numeric cell reads as empty), or None when
    it has none yet (or it cannot be read while being written)."""
    try:
        frame = pd.read_csv(path) if path.is_file() else None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError):
        return None
    return None if frame is None else frame.apply(pd.to_numeric, errors="coerce")


def read_oof_accuracy(run_dir: Path) -> float | None:
    """oof_metrics.json's accuracy (written once every fold finished), else None."""
    path = run_dir / run_folder.OOF_METRICS
    try:
        value = json.loads(path.read_text()).get("accuracy") if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def read_run(run_dir: Path, listed: Path) -> RunState:
    """The state of one run folder (`listed`: the folder the table lists, for the run's short name); a folder
    that cannot be read is one "damaged" row saying why, never an error for the whole table."""
    name = str(run_dir.relative_to(listed)) if run_dir != listed else run_dir.name
    try:
        return _read_run(run_dir, name)
    except UserError as e:
        return RunState(run_dir, name, None, "damaged", str(e))
    except Exception as e:  # noqa: BLE001  one odd folder must not hide every other run
        return RunState(run_dir, name, None, "damaged", f"cannot be read ({type(e).__name__}: {e})")


def _read_run(run_dir: Path, name: str) -> RunState:
    if not run_folder.is_run_dir(run_dir):
        raise UserError(f"{run_folder.RECIPE} is missing; every checkpoint also carries its recipe: restore it from "
                        f"{next(run_dir.glob('fold*/*.pt'), run_dir / 'fold0' / run_folder.LAST)}")
    recipe = run_folder.read_recipe(run_dir)
    state = RunState(run_dir, name, recipe, "", "")
    for k in range(recipe.folds):
        curve = read_curve(run_folder.fold_dir(run_dir, k) / run_folder.METRICS)
        if curve is not None and not curve.empty:
            state.curves[k] = curve
    finished = [k for k in range(recipe.folds) if is_finished(run_folder.fold_dir(run_dir, k) / run_folder.LAST)]
    state.folds_done = len(finished)
    state.oof_acc = read_oof_accuracy(run_dir) if len(finished) == recipe.folds else None
    state.status, state.detail = status_of(run_dir, recipe, finished, state.curves)
    return state


def status_of(run_dir: Path, recipe: Recipe, finished: list[int], curves: dict) -> tuple[str, str]:
    """(status, detail): a held fold lock wins, then every fold finished, then any checkpoint to resume from."""
    for k in range(recipe.folds):
        who = lock.holder(run_folder.fold_dir(run_dir, k) / run_folder.LOCK)
        if who:
            return "training", f"fold {k}: {who}"
    for k in finished:
        last, epochs = run_folder.fold_dir(run_dir, k) / run_folder.LAST, curves.get(k, {}).get("epoch")
        recorded = int(epochs.max()) if epochs is not None and epochs.notna().any() else None
        if (state := peek(last)) is not None and (copied := run_folder.copied_in(last, state, recorded)):
            return "damaged", f"{copied}; move it away, then python train.py --resume {run_dir}"
    if len(finished) == recipe.folds:
        return "finished", ""
    started = [k for k in range(recipe.folds) if (run_folder.fold_dir(run_dir, k) / run_folder.LAST).is_file()]
    broken = [k for k in started if k not in finished and peek(run_folder.fold_dir(run_dir, k) / run_folder.LAST) is None]
    if broken:
        last = run_folder.fold_dir(run_dir, broken[0]) / run_folder.LAST
        return "damaged", (f"{last} is damaged (truncated?) and cannot be resumed: move it away, then "
                           f"python train.py --resume {run_dir} trains fold {broken[0]} again from its start")
    if started:
        epochs = {k: int(curves[k]["epoch"].max()) for k in started if k in curves and "epoch" in curves[k]}
        where = ", ".join(f"fold {k} at epoch {epochs[k]}/{recipe.epochs}" for k in started
                          if k not in finished and k in epochs)
        return "stopped", f"{where + ': ' if where else ''}python train.py --resume {run_dir}"
    return "failed", f"no checkpoint was written; see {run_dir / run_folder.TRAIN_LOG}"
