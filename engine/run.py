"""A training run: the run folder, the data audit, the folds, one `fit` per fold, the closing summary.

    runs/<recipe>/<YYYYmmdd-HHMMSS>[-name]/  recipe.json  train.log  fold<k>/{best,last}.pt ...
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from engine import checkpoint, distributed, preempt
from engine.data import stop_workers
from engine.demo import ensure_demo_data
from engine.distributed import Dist
from engine.errors import UserError
from engine.fit import fit
from engine.oof import finish_folds
from engine.recipe import Recipe, differing_keys, from_dict, save_json
from engine.runlog import RunLog
from engine.tables import Audit, apply_audit_policy, assign_folds, audit_table, read_train_table


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


def make_run_dir(recipe: Recipe, name: str | None, d: Dist) -> Path:
    """A new run folder (rank 0 picks the name), or the existing one named `name` for this recipe."""
    base = Path(recipe.output_dir) / recipe.name
    run_dir = None
    if d.is_main:
        existing = sorted(p for p in base.glob(f"*-{name}") if p.name.split("-", 2)[2:] == [name]) if name else []
        if existing:
            run_dir = existing[-1]
            changed = differing_keys(from_dict(json.loads((run_dir / "recipe.json").read_text())), recipe)
            if changed:
                raise UserError(f"run folder {run_dir} was trained with other values of {', '.join(changed)}; "
                                f"use the same recipe or pick a new --name")
        else:
            for _ in range(10):  # two runs started in the same second must not share a folder
                run_dir = base / (time.strftime("%Y%m%d-%H%M%S") + (f"-{name}" if name else ""))
                try:
                    run_dir.mkdir(parents=True)
                    break
                except FileExistsError:
                    time.sleep(1.0)
            else:
                raise UserError(f"could not create a new run folder in {base}; is another run starting there?")
            save_json(recipe, run_dir / "recipe.json")
    return Path(distributed.broadcast_object(str(run_dir)))


def find_resume(target: str) -> tuple[Path, Recipe]:
    """--resume accepts a run folder or any checkpoint inside one; returns (run folder, saved recipe)."""
    p = Path(target)
    if not p.exists():
        raise UserError(f"--resume {target}: not found; pass a run folder (runs/<recipe>/<time>) or its last.pt")
    run_dir = p if p.is_dir() else p.parent.parent if p.parent.name.startswith("fold") else p.parent
    if not (run_dir / "recipe.json").is_file():
        raise UserError(f"--resume {target}: no recipe.json in {run_dir}; pass a run folder under runs/")
    return run_dir, from_dict(json.loads((run_dir / "recipe.json").read_text()))


def fold_state(fold_dir: Path) -> dict | None:
    """The fold's last.pt, or None if it never started."""
    path = fold_dir / "last.pt"
    return checkpoint.load_checkpoint(path) if path.is_file() else None


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
        run_dir, recipe = find_resume(resume)
    if fold is not None and not 0 <= fold < recipe.folds:
        raise UserError(f"--fold {fold} is out of range: the recipe has folds = {recipe.folds} (0..{recipe.folds - 1})")
    folds = list(range(recipe.folds)) if fold is None else [fold]
    table, classes, audit = load_data(recipe, d, say)
    if dry_run:
        describe_dry_run(recipe, table, classes, d, say)
        return None
    run_dir = run_dir or make_run_dir(recipe, name, d)
    log = RunLog(run_dir, d.is_main, recipe.wandb, recipe.wandb_project, recipe.wandb_entity,
                 wandb_name=f"{recipe.name}/{run_dir.name}", config=recipe.to_dict())
    log.print(f"run folder: {run_dir}")
    preempt.install()
    try:
        results = {}
        for k in folds:
            fold_dir = run_dir / f"fold{k}"
            fold_dir.mkdir(parents=True, exist_ok=True)
            state = fold_state(fold_dir) if resume or name else None
            if state and state["progress"].get("finished"):
                log.print(f"fold {k}: already trained (epoch {state['epoch']}), skipping")
                results[k] = state["metrics"]
                continue
            train_rows, val_rows = table[table["fold"] != k], table[table["fold"] == k]
            results[k] = fit(recipe, k, train_rows, val_rows, classes, fold_dir, d, log, state, show_progress, on_epoch)
        if d.is_main:
            finish_folds(run_dir, recipe, results, log, classes)
        k = folds[0]
        log.print(f"done. run folder: {run_dir}\nnext: python predict.py "
                  + (f"{run_dir}{' --kfold' if recipe.folds > 1 else ''}" if len(folds) == recipe.folds
                     else f"{run_dir}/fold{k}/best.pt  (--kfold once every fold is trained)")
                  + f"   |   python cam.py IMAGE --ckpt {run_dir}/fold{k}/best.pt")
        distributed.cleanup()
    except preempt.Preempted as e:
        log.print(f"{e}\nresume with: python train.py --resume {run_dir}")
        raise
    finally:
        stop_workers()  # a pruned sweep trial or an exception must not leave data workers behind
        preempt.uninstall()
        log.close()
    return run_dir


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
    from engine.cache import cache_summary  # what cache="memory"/"disk" will take, from image headers
    from engine.models import data_config
    say(cache_summary(recipe, list(table["path"]), data_config(model)["crop_pct"]))
    say(f"steps per epoch: {n_train // per_step} (batch {recipe.batch_size} x {d.world} process(es)), "
        f"updates per epoch: {-(-(n_train // per_step) // recipe.accumulate_grad_batches)}")
