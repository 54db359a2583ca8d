"""The run folder: every file name in it (the one place they are spelled), how a run folder is made, and how runs,
folds and checkpoints are found. Every stage from data/ up imports it; `python -m engine.runs` lists the runs.

    runs/<recipe>/<YYYYmmdd-HHMMSS>[-name]/
      recipe.json  split.csv  train.log  oof.csv  oof_probs.npy  oof_metrics.json  output.csv  label_issues.csv
      ensemble.json  ensemble_per_class.csv/.png   (predict.py --weights oof)
      fold<k>/  best.pt  last.pt  metrics.csv  val_predictions.csv  val_probs.npy  train.lock
"""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from engine.checkpoint import finished
from engine.errors import UserError
from engine.recipe import Recipe, differing_keys, from_dict, save_json
from engine.system import distributed
from engine.system.distributed import Dist

RECIPE = "recipe.json"
TRAIN_LOG = "train.log"
BEST = "best.pt"
LAST = "last.pt"
METRICS = "metrics.csv"
VAL_PREDICTIONS = "val_predictions.csv"
OOF = "oof.csv"
OOF_METRICS = "oof_metrics.json"
OUTPUT = "output.csv"
VAL_PROBS = "val_probs.npy"  # a fold's validation probabilities at its best epoch, rows as val_predictions.csv
OOF_PROBS = "oof_probs.npy"  # every fold's VAL_PROBS stacked, rows as oof.csv (ensemble weights are fit on it)
ENSEMBLE = "ensemble.json"  # written by predict.py --weights oof next to its output CSV
ENSEMBLE_PER_CLASS = "ensemble_per_class.csv"
ENSEMBLE_PER_CLASS_PLOT = "ensemble_per_class.png"
LABEL_ISSUES = "label_issues.csv"  # rows whose label the out-of-fold model doubts (k-fold runs)
SPLIT = "split.csv"  # every training row's image_path, target and fold, written when the run starts
LR_FIND = "lr_find.png"  # python train.py RECIPE --find-lr, in runs/<recipe>/ (beside the run folders)
LOCK = "train.lock"  # held while a process trains the fold (engine/system/lock.py)
WANDB_ID = "wandb_id"  # the W&B run id, so --resume continues the same W&B run
PROBS_SUFFIX = "_probs.csv"  # predict.py --save-probs: <out>_probs.csv
UNREADABLE_SUFFIX = "_unreadable.csv"  # predict.py --bad-images skip: <out>_unreadable.csv
FOLD_PREFIX = "fold"  # fold<k>/
MAX_NAME = 120  # --name: the folder is <time>-<name>, and file systems stop at 255 bytes


def beside(out: Path, suffix: str) -> Path:
    """<out stem><suffix> next to predict.py's output CSV."""
    return Path(out).with_name(Path(out).stem + suffix)


def val_output(folder: Path, csv: str | Path) -> Path:
    """predict.py --val CSV's default output: val_<stem>.csv in the run folder."""
    return Path(folder) / f"val_{Path(csv).stem}.csv"

def fold_dir(run_dir: Path, fold: int) -> Path:
    """fold<k>/ of a run (also for folds = 1)."""
    return Path(run_dir) / f"{FOLD_PREFIX}{fold}"


def fold_of(folder: Path) -> int | None:
    """k for a fold<k> folder, else None."""
    rest = folder.name[len(FOLD_PREFIX):]
    return int(rest) if folder.name.startswith(FOLD_PREFIX) and rest.isdigit() else None


def is_run_dir(path: Path) -> bool:
    """A run folder holds recipe.json."""
    return (Path(path) / RECIPE).is_file()


def read_recipe(run_dir: Path) -> Recipe:
    """The recipe a run was trained with (its recipe.json)."""
    return from_dict(read_recipe_values(run_dir), Path(run_dir) / RECIPE)


def read_recipe_values(run_dir: Path) -> dict:
    """recipe.json as a dict; a clear error when it is missing or damaged."""
    path = Path(run_dir) / RECIPE
    if not path.is_file():
        raise UserError(f"'{run_dir}' is not a run folder (no {RECIPE}); pass a run folder under runs/ or a .pt file")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is damaged ({type(e).__name__}: {e}); every checkpoint also carries its recipe: "
                        f"restore the file from a checkpoint or pass the .pt file itself") from e
    if not isinstance(values, dict):
        raise UserError(f"{path} does not hold a recipe (a JSON object of recipe keys)")
    return values


def make_run_dir(recipe: Recipe, name: str | None, d: Dist) -> Path:
    """A new run folder (rank 0 picks the name), or the existing one named `name` for this recipe."""
    base = Path(recipe.output_dir) / recipe.name
    run_dir = None
    if name is not None:
        check_run_name(name)
    if d.is_main:
        existing = named_runs(base, name) if name else []
        if existing:
            run_dir = existing[-1]
            changed = differing_keys(read_recipe(run_dir), recipe)
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
            save_json(recipe, run_dir / RECIPE)
    return Path(distributed.broadcast_object(str(run_dir)))


def remove_failed_start(run_dir: Path) -> bool:
    """Remove a run folder this process created whose start failed (no checkpoint in it); whether it did."""
    if any(Path(run_dir).rglob("*.pt")):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


def check_run_name(name: str) -> None:
    """--name becomes part of one folder name: no separators, no '..', nothing a shell must quote."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
        raise UserError(f"--name {name!r}: use letters, digits, '.', '_' and '-' only (it names one folder "
                        f"inside the recipe's runs folder), e.g. --name cv5")
    if len(name) > MAX_NAME:  # the folder is <time>-<name>, and file systems stop at 255 bytes
        raise UserError(f"--name is {len(name)} characters; use at most {MAX_NAME} (it names one folder)")


def named_runs(base: Path, name: str) -> list[Path]:
    """Run folders <time>-<name> under base, oldest first."""
    return sorted(p for p in Path(base).glob(f"*-{name}") if p.name.split("-", 2)[2:] == [name])


def find_resume(target: str) -> tuple[Path, Recipe]:
    """--resume accepts a run folder or any checkpoint inside one; returns (run folder, saved recipe)."""
    p = Path(target)
    if not p.exists():
        raise UserError(f"--resume {target}: not found; pass a run folder (runs/<recipe>/<time>) or its {LAST}")
    run_dir = p if p.is_dir() else p.parent.parent if fold_of(p.parent) is not None else p.parent
    if not is_run_dir(run_dir):
        raise UserError(f"--resume {target}: no {RECIPE} in {run_dir}; pass a run folder under runs/")
    return run_dir, read_recipe(run_dir)


def find_run_dir(path: Path) -> Path | None:
    """The run folder a folder, CSV or checkpoint belongs to (itself, its parent or grandparent), if any."""
    path = Path(path)
    for folder in ((path,) if path.is_dir() else ()) + (path.parent, path.parent.parent):
        if is_run_dir(folder):
            return folder
    return None


def output_folder_of(path: Path) -> Path:
    """Where outputs for a checkpoint go: its run folder, else the checkpoint's own folder."""
    return find_run_dir(path) or Path(path).parent


def resolve_checkpoint(run_or_ckpt: str | Path, name: str = LAST, fold: int = 0) -> Path:
    """A checkpoint file, or a run folder -> its fold<k>/<name>."""
    p = Path(run_or_ckpt)
    if p.is_file():
        return p
    for candidate in (fold_dir(p, fold) / name, p / name):
        if candidate.is_file():
            return candidate
    raise UserError(f"no {name} in '{p}' (looked in {fold_dir(p, fold)}/); pass a run folder or a .pt file")


def newest_run(output_dir: str | Path = "runs") -> Path:
    """The most recently created run folder under output_dir that holds a checkpoint (a run that failed to
    start has only recipe.json and must not be picked)."""
    started = [p.parent for p in Path(output_dir).glob(f"*/*/{RECIPE}")]
    runs = [p for p in started if fold_files(p, BEST)]
    if not runs:
        empty = f" ({len(started)} run folder(s) there hold no {BEST} yet)" if started else ""
        raise UserError(f"no trained runs under '{output_dir}/'{empty}; train one first: python train.py")
    return max(runs, key=lambda p: (p.joinpath(RECIPE).stat().st_mtime, p.name))


def trial_run_dir(recipe: Recipe, run_name: str) -> Path | None:
    """The run folder train() made for `--name run_name` (None if it never got that far)."""
    found = named_runs(Path(recipe.output_dir) / recipe.name, run_name)
    return found[-1] if found else None


def fold_files(run_dir: Path, name: str) -> list[Path]:
    """Every fold<k>/<name> that exists, in fold order."""
    found = [p for p in Path(run_dir).glob(f"{FOLD_PREFIX}*/{name}") if fold_of(p.parent) is not None]
    return sorted(found, key=lambda p: fold_of(p.parent))


def prediction_csvs(run_dir: Path) -> list[Path]:
    """A run's validation predictions: oof.csv once every fold finished, else each fold's val_predictions.csv."""
    oof = Path(run_dir) / OOF
    return [oof] if oof.is_file() else fold_files(run_dir, VAL_PREDICTIONS)


def copied_in(last: Path, state: dict, recorded: int | None) -> str | None:
    """Why a fold's last.pt (its fields `state`) is not its own: it says more epochs than the fold's metrics.csv
    records (`recorded`; a row is written before every last.pt of that epoch); None when not (or not known)."""
    epoch = int(state.get("epoch", 0))
    if recorded is None or epoch <= recorded:
        return None
    done = " and the fold finished" if finished(state) else ""
    return (f"{last} says {epoch} epochs were trained{done}, but {last.parent / METRICS} records {recorded}: it was "
            f"copied from another run")
