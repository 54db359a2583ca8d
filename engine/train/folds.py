"""A training run: the data audit, the folds, one `fit` per fold into the run folder (engine/runs.py),
the out-of-fold results and the closing summary."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from engine import checkpoint, runs
from engine.data.demo_digits import ensure_demo_data
from engine.data.loader import stop_workers
from engine.errors import UserError
from engine.evaluate.oof import finish_folds
from engine.recipe import Recipe
from engine.system import distributed, preemption
from engine.system.distributed import Dist
from engine.system.runlog import RunLog
from engine.train.fit import fit
from engine.train.state import finished, is_finished
from engine.data.tables import Audit, apply_audit_policy, assign_folds, audit_table, read_train_table


def load_data(recipe: Recipe, d: Dist, log=print) -> tuple[pd.DataFrame, list[str], Audit]:
    """Read and audit the training table (rank 0 checks the files, the others receive the result)."""
    if d.is_main:
        ensure_demo_data(recipe.data_dir, log)
    distributed.barrier()
    result = None
    if d.is_main:
        audit = audit_table(read_train_table(recipe.data_dir, recipe.train_csv), recipe.num_classes)
        table = apply_audit_policy(audit, recipe.bad_images, log).copy()
        table["fold"] = assign_folds(table["target"].to_numpy(), recipe.folds, recipe.val_fraction, recipe.seed)
        result = (table, audit.classes, audit)
    return distributed.broadcast_object(result)


def train(recipe: Recipe, fold: int | None = None, name: str | None = None, resume: str | None = None,
          dry_run: bool = False, show_progress: bool = True,
          on_epoch: Callable[[dict], None] | None = None) -> Path | None:
    """Train every fold of the recipe (or only `fold`); returns the run folder.

    `on_epoch(metrics_row)` is called after every epoch of every fold (sweeps prune from it).
    """
    d = distributed.setup()
    say = print if d.is_main else (lambda *a, **k: None)
    run_dir = None
    if resume:
        run_dir, recipe = runs.find_resume(resume)
    if fold is not None and not 0 <= fold < recipe.folds:
        raise UserError(f"--fold {fold} is out of range: the recipe has folds = {recipe.folds} (0..{recipe.folds - 1})")
    folds = list(range(recipe.folds)) if fold is None else [fold]
    table, classes, audit = load_data(recipe, d, say)
    if dry_run:
        describe_dry_run(recipe, table, classes, d, say)
        return None
    run_dir = run_dir or runs.make_run_dir(recipe, name, d)
    log = RunLog(run_dir, d.is_main, recipe.wandb, recipe.wandb_project, recipe.wandb_entity,
                 wandb_name=f"{recipe.name}/{run_dir.name}", config=recipe.to_dict())
    log.print(f"run folder: {run_dir}")
    preemption.install()
    try:
        results = {}
        for k in folds:
            fold_dir = runs.fold_dir(run_dir, k)
            fold_dir.mkdir(parents=True, exist_ok=True)
            state = fold_state(fold_dir) if resume or name else None
            if state and finished(state):
                log.print(f"fold {k}: already trained (epoch {state['epoch']}), skipping")
                results[k] = state["metrics"]
                continue
            train_rows, val_rows = table[table["fold"] != k], table[table["fold"] == k]
            results[k] = fit(recipe, k, train_rows, val_rows, classes, fold_dir, d, log, state, show_progress, on_epoch)
        if d.is_main:
            waiting = [k for k in range(recipe.folds) if k not in results
                       and not is_finished(runs.fold_dir(run_dir, k) / runs.LAST)]
            finish_folds(run_dir, recipe, waiting, log, classes)
        checkpoint.wait_for_writes()  # the report above was drawn while the last checkpoints were written
        best = runs.fold_dir(run_dir, folds[0]) / runs.BEST
        log.print(f"done. run folder: {run_dir}\nnext: python predict.py "
                  + (f"{run_dir}{' --kfold' if recipe.folds > 1 else ''}" if len(folds) == recipe.folds
                     else f"{best}  (--kfold once every fold is trained)")
                  + f"   |   python cam.py IMAGE --ckpt {best}")
        distributed.cleanup()
    except preemption.Preempted as e:
        log.print(f"{e}\nresume with: python train.py --resume {run_dir}")
        raise
    finally:
        stop_workers()  # a pruned sweep trial or an exception must not leave data workers behind
        checkpoint.wait_for_writes()  # nor a checkpoint half written
        preemption.uninstall()
        log.close()
    return run_dir


def fold_state(fold_dir: Path) -> dict | None:
    """The fold's last.pt, or None if it never started."""
    path = fold_dir / runs.LAST
    return checkpoint.load_checkpoint(path) if path.is_file() else None


def describe_dry_run(recipe: Recipe, table: pd.DataFrame, classes: list[str], d: Dist, say) -> None:
    """Print the resolved recipe, the data, model size and steps per epoch; train nothing."""
    from engine.models import build_model, count_parameters
    say("resolved recipe:")
    for key, value in recipe.to_dict().items():
        say(f"  {key} = {value!r}")
    model = build_model(recipe.model, len(classes), False, None, recipe.drop_path)
    n_train = int((table["fold"] != 0).sum())
    per_step = recipe.batch_size * d.world
    counts = np.bincount(table["target"], minlength=len(classes))
    say(f"data: {len(table)} usable rows, {len(classes)} classes ({counts.min()}..{counts.max()} per class), "
        f"fold 0: {n_train} train / {len(table) - n_train} val")
    say(f"model: {recipe.model}, {count_parameters(model) / 1e6:.2f}M parameters")
    from engine.data.cache import cache_summary  # what cache="memory"/"disk" will take, from image headers
    from engine.models import data_config
    say(cache_summary(recipe, list(table["path"]), data_config(model)["crop_pct"]))
    say(f"steps per epoch: {n_train // per_step} (batch {recipe.batch_size} x {d.world} process(es)), "
        f"updates per epoch: {-(-(n_train // per_step) // recipe.accumulate_grad_batches)}")
