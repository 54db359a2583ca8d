"""A training run: the data audit, the folds, one `fit` per fold into the run folder (engine/runs/),
the out-of-fold results and the closing summary."""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from engine import checkpoint, runs
from engine.data.background import resolve_background
from engine.data.demo_digits import ensure_demo_data
from engine.data.loader import stop_workers
from engine.errors import UserError
from engine.evaluate.oof import finish_folds
from engine.recipe import Recipe, differing_keys, from_dict
from engine.system import distributed, lock, preemption
from engine.system.atomic import DiskFull
from engine.system.distributed import Dist
from engine.system.runlog import RunLog, progress
from engine.train.fit import fit
from engine.checkpoint import finished, is_finished
from engine.data.near_duplicates import group_ids
from engine.data.pseudo_labels import add_pseudo_labels, read_pseudo_labels
from engine.data.split_record import keep_split
from engine.data.tables import Audit, apply_audit_policy, assign_folds, audit_table, read_train_table


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
        if recipe.pseudo_labels:
            rows = read_pseudo_labels(recipe.pseudo_labels, recipe.test_dir or ".", audit.classes, recipe.pseudo_threshold,
                                      recipe.bad_images, log)
            table = add_pseudo_labels(table, rows, recipe.pseudo_labels, recipe.pseudo_threshold, log)
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
    if name is not None:
        runs.check_run_name(name)  # also for --dry-run: it accepts only what the real run does
    if dry_run:
        describe_dry_run(recipe, d, say, show_progress)
        return None
    table, classes, audit = load_data(recipe, d, say, show_progress)
    fresh = run_dir is None and not (name and runs.named_runs(Path(recipe.output_dir) / recipe.name, name))
    run_dir = run_dir or runs.make_run_dir(recipe, name, d)
    table = keep_split(run_dir, table, recipe.train_csv, d)  # a resumed or another machine's fold: the same split
    locks = ExitStack()  # one trainer per fold: a second process on the same run and fold stops here
    if d.is_main:  # the first fold's lock before train.log is touched
        locks.enter_context(lock.exclusive(runs.fold_dir(run_dir, folds[0]) / runs.LOCK, f"{run_dir} fold {folds[0]}"))
    log = RunLog(run_dir, d.is_main, recipe.wandb, recipe.wandb_project, recipe.wandb_entity,
                 wandb_name=f"{recipe.name}/{run_dir.name}", config=recipe.to_dict())
    log.print(f"run folder: {run_dir}")
    preemption.install()
    failed_start = False
    try:
        results = {}
        for k in folds:
            fold_dir = runs.fold_dir(run_dir, k)
            fold_dir.mkdir(parents=True, exist_ok=True)
            if d.is_main and k != folds[0]:
                locks.enter_context(lock.exclusive(fold_dir / runs.LOCK, f"{run_dir} fold {k}"))
            state = fold_state(fold_dir, recipe, classes) if resume or name else None
            if state and finished(state):
                log.print(f"fold {k}: already trained (epoch {state['epoch']}), skipping")
                results[k] = state["metrics"]
                continue
            train_rows, val_rows = table[table["fold"] != k], table[table["fold"] == k]
            results[k] = fit(recipe, k, train_rows, val_rows, classes, fold_dir, d, log, state, show_progress, on_epoch,
                             audit.background.rgb)
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
    except DiskFull as e:  # one line: what, where, how much, and how to go on
        raise DiskFull(f"{e}; free some space, then: python train.py --resume {run_dir}") from None
    except UserError:  # bad input found when the fold started (model, weights, size): no run folder is left
        failed_start = fresh and d.is_main
        raise
    finally:
        locks.close()
        stop_workers()  # a pruned sweep trial or an exception must not leave data workers behind
        checkpoint.wait_for_writes()  # nor a checkpoint half written
        preemption.uninstall()
        log.close()
        if failed_start:
            runs.remove_failed_start(run_dir)
    return run_dir


def fold_state(fold_dir: Path, recipe: Recipe, classes: list[str]) -> dict | None:
    """The fold's last.pt, or None if it never started; an error if it belongs to another recipe or classes."""
    path = fold_dir / runs.LAST
    if not path.is_file():
        return None
    state = checkpoint.load_checkpoint(path)
    saved = from_dict(state["recipe"])
    changed = differing_keys(saved, recipe)
    if changed:
        what = ", ".join(f"{k} {getattr(saved, k)!r} there vs {getattr(recipe, k)!r} here" for k in changed[:3])
        raise UserError(f"{path} belongs to another run ({what}{', ...' if len(changed) > 3 else ''}); "
                        f"move it away, or resume the run it came from")
    if list(state["classes"]) != list(classes):
        theirs, ours = list(state["classes"]), list(classes)
        diff = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), None)
        where = (f"{len(theirs)} classes there vs {len(ours)} here" if diff is None
                 else f"class {diff} is '{theirs[diff]}' there vs '{ours[diff]}' here")
        raise UserError(f"{path} was trained on other classes ({where}); the data changed since: "
                        f"restore it or start a new run")
    return state


def describe_dry_run(recipe: Recipe, d: Dist, say, show_progress: bool = True) -> None:
    """Print the resolved recipe, the data, model size, what trains at which LR, steps per epoch; train nothing.
    Without the data (a recipe checked on another machine) the model part still runs if num_classes is set."""
    from engine.models import check_input_size, count_parameters, data_config, model_from_recipe, small_map_warning
    say("resolved recipe:")
    for key, value in recipe.to_dict().items():
        say(f"  {key} = {value!r}")
    try:
        table, classes, audit = load_data(recipe, d, say, show_progress)
    except UserError as e:
        if recipe.num_classes is None:
            raise
        say(f"data: not checked ({e}); the model below has num_classes = {recipe.num_classes}")
        table, classes = None, [str(i) for i in range(recipe.num_classes)]
    model = model_from_recipe(recipe, classes, weights=False)
    check_input_size(model, recipe.model, recipe.image_size)  # what the real run refuses, the dry run refuses
    say(f"model: {recipe.model}, {count_parameters(model) / 1e6:.2f}M parameters, head {recipe.head!r}"
        f"{', gradient checkpointing' if recipe.grad_checkpointing else ''}")
    if small_map := small_map_warning(model, recipe.image_size, recipe.model):
        say(small_map)
    n_train = int((table["fold"] != 0).sum()) if table is not None else 0
    per_step = recipe.batch_size * d.world
    updates = -(-(n_train // per_step) // recipe.accumulate_grad_batches)
    describe_training(recipe, model, max(1, updates), say)
    if table is None:
        return
    counts = np.bincount(table["target"], minlength=len(classes))
    say(f"data: {len(table)} usable rows, {len(classes)} classes ({counts.min()}..{counts.max()} per class), "
        f"fold 0: {n_train} train / {len(table) - n_train} val")
    from engine.data.cache import cache_summary  # what cache="memory"/"disk" will take, from image headers
    from engine.data.sources import PATH_NAMES, choose_path
    path, why = choose_path(recipe, d.device, list(table["path"]), data_config(model)["crop_pct"])
    say(f"batches on {d.device.type}: {PATH_NAMES[path]} ({why})")
    say(cache_summary(recipe, list(table["path"]), data_config(model)["crop_pct"]))
    if recipe.feature_views:
        from engine.data.store_source import describe_stores  # the stores' size, and whether they exist
        for line in describe_stores(recipe, table, model, {**data_config(model), "background": audit.background.rgb},
                                    d.device):
            say(line)
    say(f"steps per epoch: {n_train // per_step} (batch {recipe.batch_size} x {d.world} process(es)), "
        f"updates per epoch: {updates}")


def describe_training(recipe: Recipe, model, updates_per_epoch: int, say) -> None:
    """Trainable and frozen parameter counts, each optimizer group's peak LR and weight decay, and what joins
    at unfreeze_epoch."""
    from engine.train.freezing import apply_freeze, count, trainable_names
    from engine.train.optim import build_optimizer, joining_groups
    from engine.train.schedule import join_warmup_updates
    apply_freeze(model, trainable_names(model, recipe.freeze))
    trainable, frozen = count(model)
    say(f"trainable: {trainable / 1e6:.3f}M parameters, frozen: {frozen / 1e6:.3f}M (freeze = {recipe.freeze!r})")
    optimizer = build_optimizer(model, recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.momentum,
                                recipe.layer_decay, recipe.head_lr_scale)
    say(f"parameter groups ({recipe.optimizer}; peak lr, before the schedule):")
    for g in optimizer.param_groups:
        say(f"  {g['name']:<18} {sum(p.numel() for p in g['params']) / 1e6:9.3f}M  lr {g['lr']:.3e}  "
            f"weight decay {g['weight_decay']:g}")
    if recipe.unfreeze_epoch is None:
        say("unfreezes: never (unfreeze_epoch = None)" if frozen else "unfreezes: nothing is frozen")
        return
    already = {n for n, p in model.named_parameters() if p.requires_grad}
    apply_freeze(model, {n for n, _ in model.named_parameters()})
    warmup = join_warmup_updates(recipe.warmup_epochs, updates_per_epoch)
    say(f"unfreezes at epoch {recipe.unfreeze_epoch}: {frozen / 1e6:.3f}M parameters join, warming up over "
        f"{warmup} updates:")
    for g in joining_groups(model, already, recipe.weight_decay, recipe.layer_decay, recipe.head_lr_scale):
        say(f"  + {g['name']:<16} {sum(p.numel() for p in g['params']) / 1e6:9.3f}M  "
            f"lr {recipe.lr * g['lr_scale']:.3e}  weight decay {g['weight_decay']:g}")
