"""Run one sweep trial: a normal training run, in this process or under torchrun, reporting each epoch.

In-process, `on_epoch` is called by fit() itself. Under torchrun the trial is a subprocess
(`torchrun train.py <trial recipe>`); its fold's metrics.csv is polled and each new row is passed to
`on_epoch`. Raising `TrialPruned` from `on_epoch` stops the trial (SIGTERM to torchrun, which the
workers answer by writing last.pt).
"""
from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from engine import run_folder
from engine.evaluate.metrics import is_better
from engine.recipe import Recipe
from engine.sweep.config import SweepSpec
from engine.sweep.results import write_recipe_file
from engine.system import preemption as preempt

TRAIN_PY = Path(__file__).resolve().parents[2] / "train.py"  # run as a program, never imported
POLL_S = 2.0


class TrialPruned(Exception):
    """Raised from on_epoch when the pruner stops a trial whose metric is worse than its peers'."""


class BestValue:
    """The best metric seen in a trial's epochs (the trial's score)."""

    def __init__(self, goal: str):
        self.goal, self.value = goal, None

    def update(self, value: float) -> None:
        if not math.isfinite(value):
            return
        if self.value is None or is_better(self.goal, value, self.value):
            self.value = value


def trial_fold(recipe: Recipe) -> int | None:
    """A trial trains one split: fold 0 of a K-fold recipe (settings are compared on the same split)."""
    return 0 if recipe.folds > 1 else None


def run_in_process(recipe: Recipe, run_name: str, on_epoch: Callable[[dict], None], show_progress: bool) -> None:
    """Train the trial recipe here; exceptions (TrialPruned included) propagate."""
    # late: a worker joins the sweep's storage and claims a trial before the training stack loads (~5 s), and a
    # --nproc sweep, whose trials run under torchrun, never loads it in this process
    from engine.train.orchestrator import train
    train(recipe, fold=trial_fold(recipe), name=run_name, show_progress=show_progress, on_epoch=on_epoch)


def run_torchrun(recipe: Recipe, run_name: str, on_epoch: Callable[[dict], None], nproc: int,
                 recipe_dir: Path) -> None:
    """Train the trial under `torchrun --nproc_per_node nproc`, feeding on_epoch from metrics.csv."""
    recipe_file = recipe_dir / f"{run_name}.py"
    write_recipe_file(recipe, recipe_file, f"trial recipe of {run_name}, written by sweep.py")
    fold = trial_fold(recipe)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(TRAIN_PY), str(recipe_file), "--name", run_name, "--no-progress"]
    cmd += ["--fold", str(fold)] if fold is not None else []
    proc = subprocess.Popen(cmd)
    seen = 0
    try:
        while True:
            finished = proc.poll() is not None  # read the rows after knowing, so none is missed
            seen = _feed_rows(recipe, run_name, fold or 0, seen, on_epoch)
            if finished:
                break
            time.sleep(POLL_S)
    except BaseException:
        _stop(proc)
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exited with code {proc.returncode}; see the trial's train.log")


def _feed_rows(recipe: Recipe, run_name: str, fold: int, seen: int, on_epoch: Callable[[dict], None]) -> int:
    run_dir = run_folder.trial_run_dir(recipe, run_name)
    path = run_folder.fold_dir(run_dir, fold) / run_folder.METRICS if run_dir else None
    if path is None or not path.is_file():
        return seen
    try:
        rows = pd.read_csv(path).to_dict("records")
    except (pd.errors.EmptyDataError, pd.errors.ParserError):  # caught mid-write: read it next time
        return seen
    for row in rows[seen:]:
        on_epoch(row)
        seen += 1
    return seen


def _stop(proc: subprocess.Popen, grace_s: float = 60) -> None:
    """SIGTERM (workers checkpoint and exit), then SIGKILL if it does not end in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def trial_recipe(recipe: Recipe, point: dict, **changes) -> Recipe:
    """The base recipe with a trial's values (a UserError here fails the trial, e.g. mixup + cutmix > 1)."""
    return recipe.replace(**{**point, "sweep": {}, **changes})


def score_trial(spec: SweepSpec, r: Recipe, run_name: str, runner, report: Callable[[float, int], bool] | None,
                log_row: Callable[[dict], None] | None = None) -> float:
    """Train one trial; `report(value, epoch)` returns True to prune. Returns the best epoch's metric."""
    best = BestValue(spec.goal)

    def on_epoch(row: dict) -> None:
        value = float(row[spec.metric])
        best.update(value)
        if log_row:
            log_row(row)
        if report is not None and report(value, int(row["epoch"])):
            raise TrialPruned(f"pruned at epoch {row['epoch']}: {spec.metric} {value:.4f}")

    try:
        runner(r, run_name, on_epoch)
    except preempt.Preempted as e:  # Ctrl-C / SIGTERM stops the sweep, not just this trial
        raise KeyboardInterrupt(str(e)) from e
    if best.value is None:
        raise RuntimeError(f"trial {run_name} reported no finite {spec.metric}")
    return best.value
