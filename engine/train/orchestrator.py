"""The run orchestrator, `train()`: the run's data, its folder and locks, one `fit` per fold, the out-of-fold
results and the closing summary; preemption, a full disk and a failed start end it cleanly."""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import pandas as pd

from engine import checkpoint, run_folder
from engine.checkpoint import finished, is_finished
from engine.data.batches.loader import stop_workers
from engine.data.tables.read import class_list_difference
from engine.errors import UserError
from engine.evaluate.oof import finish_folds
from engine.recipe import Recipe, differing_keys, from_dict
from engine.system import distributed, lock, preemption
from engine.system.atomic import DiskFull
from engine.system.distributed import Dist
from engine.train.dry_run import describe_dry_run
from engine.train.fit import fit
from engine.train.run_log import RunLog
from engine.train.split_record import fingerprint, keep_split
from engine.train.training_data import load_data


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
        run_dir, recipe = run_folder.find_resume(resume)
    if fold is not None and not 0 <= fold < recipe.folds:
        raise UserError(f"--fold {fold} is out of range: the recipe has folds = {recipe.folds} (0..{recipe.folds - 1})")
    folds = list(range(recipe.folds)) if fold is None else [fold]
    if name is not None:
        run_folder.check_run_name(name)  # also for --dry-run: it accepts only what the real run does
    if dry_run:
        describe_dry_run(recipe, d, say, show_progress)
        return None
    table, classes, audit = load_data(recipe, d, say, show_progress)
    fresh = run_dir is None and not (name and run_folder.named_runs(Path(recipe.output_dir) / recipe.name, name))
    run_dir = run_dir or run_folder.make_run_dir(recipe, name, d)
    table = keep_split(run_dir, table, recipe.train_csv, d)  # a resumed or another machine's fold: the same split
    locks = ExitStack()  # one trainer per fold: a second process on the same run and fold stops here
    if d.is_main:  # the first fold's lock before train.log is touched
        locks.enter_context(lock.exclusive(run_folder.fold_dir(run_dir, folds[0]) / run_folder.LOCK,
                                           f"{run_dir} fold {folds[0]}"))
    log = RunLog(run_dir, d.is_main, recipe.wandb, recipe.wandb_project, recipe.wandb_entity,
                 wandb_name=f"{recipe.name}/{run_dir.name}", config=recipe.to_dict())
    log.print(f"run folder: {run_dir}")
    preemption.install()
    failed_start = False
    try:
        trained = train_folds(recipe, folds, run_dir, table, classes, audit.background.rgb, d, log, locks,
                              saved=bool(resume or name), show_progress=show_progress, on_epoch=on_epoch)
        if d.is_main:
            waiting = [k for k in range(recipe.folds) if k not in trained
                       and not is_finished(run_folder.fold_dir(run_dir, k) / run_folder.LAST)]
            finish_folds(run_dir, recipe, waiting, log, classes)
        checkpoint.wait_for_writes()  # the report above was drawn while the last checkpoints were written
        log.print(done_line(run_dir, recipe, folds))
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
            run_folder.remove_failed_start(run_dir)
    return run_dir


def train_folds(recipe: Recipe, folds: list[int], run_dir: Path, table: pd.DataFrame, classes: list[str],
                background: tuple[int, int, int], d: Dist, log: RunLog, locks: ExitStack, saved: bool,
                show_progress: bool, on_epoch: Callable[[dict], None] | None) -> dict[int, dict]:
    """`fit` each fold in turn (a finished one is skipped when the run folder already has it); {fold: metrics}."""
    results = {}
    for k in folds:
        fold_dir = run_folder.fold_dir(run_dir, k)
        fold_dir.mkdir(parents=True, exist_ok=True)
        if d.is_main and k != folds[0]:
            locks.enter_context(lock.exclusive(fold_dir / run_folder.LOCK, f"{run_dir} fold {k}"))
        state = fold_state(fold_dir, recipe, classes, table) if saved else None
        if state and finished(state):
            log.print(f"fold {k}: already trained (epoch {state['epoch']}), skipping")
            results[k] = state["metrics"]
            continue
        train_rows, val_rows = table[table["fold"] != k], table[table["fold"] == k]
        results[k] = fit(recipe, k, train_rows, val_rows, classes, fold_dir, d, log, state, show_progress, on_epoch,
                         background)
    return results


def done_line(run_dir: Path, recipe: Recipe, folds: list[int]) -> str:
    """The run's last line: where it is and the commands that use it next."""
    best = run_folder.fold_dir(run_dir, folds[0]) / run_folder.BEST
    predict_args = (f"{run_dir}{' --kfold' if recipe.folds > 1 else ''}" if len(folds) == recipe.folds
                    else f"{best}  (--kfold once every fold is trained)")
    return f"done. run folder: {run_dir}\nnext: python predict.py {predict_args}   |   python cam.py IMAGE --ckpt {best}"


def fold_state(fold_dir: Path, recipe: Recipe, classes: list[str], table: pd.DataFrame | None = None) -> dict | None:
    """The fold's last.pt, or None if it never started; an error if it belongs to another recipe, classes, split
    (`table`: the run's rows with their folds) or is ahead of the fold's metrics.csv."""
    path = fold_dir / run_folder.LAST
    if not path.is_file():
        return None
    try:
        state = checkpoint.load_checkpoint(path)
    except UserError as e:  # a truncated copy or a full disk's leftover: name the way on
        raise UserError(f"{e}; to go on, move {path} away and resume again: fold {run_folder.fold_of(fold_dir)} then trains "
                        f"from its start (its best.pt is kept until a better epoch replaces it)") from None
    saved_recipe, saved_classes, _ = checkpoint.saved_base(state)
    saved = from_dict(saved_recipe, path)
    changed = differing_keys(saved, recipe)
    if changed:
        what = ", ".join(f"{k} {getattr(saved, k)!r} there vs {getattr(recipe, k)!r} here" for k in changed[:3])
        raise UserError(f"{path} belongs to another run ({what}{', ...' if len(changed) > 3 else ''}); "
                        f"move it away, or resume the run it came from")
    if where := class_list_difference(saved_classes, classes):
        raise UserError(f"{path} was trained on other classes ({where}, there vs here); the data changed since: "
                        f"restore it or start a new run")
    check_belongs(path, state, table)
    return state


def check_belongs(path: Path, state: dict, table: pd.DataFrame | None) -> None:
    """A last.pt copied in from another run of the same recipe: trained on another split, or further than this
    fold's metrics.csv records (a row is written before every last.pt of that epoch), is refused in one line."""
    move = (f"move it away and resume (fold {run_folder.fold_of(path.parent)} then trains from its start), or put back this "
            f"run's own {path.name}")
    if table is not None and isinstance(state.get("split"), str) and state["split"] != fingerprint(table):
        raise UserError(f"{path} was trained on another split than this run's {run_folder.SPLIT}: it belongs to another "
                        f"run; {move}")
    if copied := run_folder.copied_in(path, state, recorded_epochs(path.parent / run_folder.METRICS)):
        raise UserError(f"{copied}; {move}")


def recorded_epochs(metrics: Path) -> int | None:
    """The last epoch a metrics.csv records (0: none or no file); None when it cannot be read (then not checked)."""
    if not metrics.is_file():
        return 0
    try:
        epochs = pd.read_csv(metrics, usecols=["epoch"])["epoch"]
        return int(epochs.max()) if len(epochs) else 0
    except (ValueError, KeyError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
