"""Hyper-parameter sweeps from a recipe's `sweep` dict (W&B sweep format): Optuna offline, W&B online.

    runs/sweeps/<name>/  study.db  trials.csv  best_recipe.py  history.png  importances.png  trials/

Each trial is a normal run folder (runs/<recipe>/<time>-sweep-<name>-t<NNN>/) scored by the best
epoch's value of the sweep metric; a trial that crashes is recorded as failed and the sweep goes on.
"""
from __future__ import annotations

import netrc
import os
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from engine import run_folder
from engine.errors import UserError
from engine.recipe import Recipe
from engine.system.outputs import OutputGuard, csv_header, drawn_by_matplotlib
from engine.sweep.config import SweepSpec, as_key_type, parse_sweep
from engine.sweep.results import best_table, plot_history, plot_importances, ranked, write_recipe_file, write_trials_csv
from engine.sweep.trial import run_in_process, run_torchrun, score_trial, trial_recipe

DEFAULT_COUNT = 10


RESULT_FILES = ("trials.csv", "history.png", "importances.png", "best_recipe.py")


def sweep_dir_for(recipe: Recipe, name: str) -> Path:
    return Path(recipe.output_dir) / "sweeps" / name


def _sweep_wrote(path: Path) -> bool:
    """A result an earlier sweep wrote (before the output ledger, or rewritten per trial): by its name and start."""
    if path.suffix == ".png":
        return path.name in RESULT_FILES and drawn_by_matplotlib(path)
    first = csv_header(path)
    return (path.name == "trials.csv" and first.startswith("trial,")) or (
        path.name == "best_recipe.py" and first.startswith("# best trial"))


def result_guard() -> OutputGuard:
    """The sweep folder's rule: its results replace only the results of an earlier run of the same sweep."""
    return OutputGuard("sweep.py", example="trials.csv", recognise=_sweep_wrote)


def wandb_logged_in() -> bool:
    """W&B credentials in the environment or ~/.netrc, judged without any network call."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def choose_backend(requested: str | None, recipe: Recipe) -> str:
    """--backend, or W&B only when credentials are set, WANDB_MODE allows online and the recipe logs online."""
    if requested:
        return requested
    mode_online = os.environ.get("WANDB_MODE", "online") in ("online", "run")
    return "wandb" if wandb_logged_in() and mode_online and recipe.wandb == "online" else "optuna"


def run_sweep(recipe: Recipe, count: int | None = None, backend: str | None = None, storage: str | None = None,
              resume: bool = False, nproc: int = 1, name: str | None = None, show_progress: bool = False,
              log: Callable[[str], None] = print, heartbeat_s: int | None = None) -> Path:
    """Run `count` trials of the recipe's sweep; write the results; return the sweep folder."""
    spec = parse_sweep(recipe.sweep, recipe)
    backend = choose_backend(backend, recipe)
    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}")
    if count is not None and count < 1:  # 0 trials would end in "no trial completed"
        raise UserError(f"--count is the number of trials to add: at least 1, got {count}")
    if name is not None:
        run_folder.check_run_name(name)  # one folder under runs/sweeps/: never a path out of it
    name = name or recipe.name
    sweep_dir = result_guard().folder(sweep_dir_for(recipe, name), RESULT_FILES)  # a refusal before any trial
    count = count if count is not None else spec.grid_size() if spec.method == "grid" else spec.run_cap or DEFAULT_COUNT
    log(f"sweep '{name}': {spec.method} search, {backend} backend, {spec.goal} {spec.metric}, "
        f"{len(spec.searched)} parameters, {count} trials{f' x {nproc} processes' if nproc > 1 else ''}")

    def runner(r: Recipe, run_name: str, on_epoch: Callable[[dict], None]) -> None:
        if nproc > 1:
            run_torchrun(r, run_name, on_epoch, nproc, sweep_dir / "trials")
        else:
            run_in_process(r, run_name, on_epoch, show_progress)

    if nproc > 1:
        (sweep_dir / "trials").mkdir(exist_ok=True)
    if backend == "optuna":
        from engine.sweep.optuna_backend import HEARTBEAT_S, run_optuna  # late: a W&B sweep runs without optuna
        rows, importances = run_optuna(recipe, spec, name, sweep_dir, count, storage, resume, runner, log,
                                       heartbeat_s or HEARTBEAT_S)
    elif backend == "wandb":
        rows, importances = run_wandb(recipe, spec, name, sweep_dir, count, runner, log), None
    else:
        raise UserError(f"--backend must be optuna or wandb, got {backend!r}")
    finish(recipe, spec, name, sweep_dir, rows, importances, log)
    return sweep_dir


def run_wandb(recipe: Recipe, spec: SweepSpec, name: str, sweep_dir: Path, count: int, runner, log) -> list[dict]:
    """wandb.sweep + wandb.agent with the same config; each trial reads its values from wandb.config."""
    import wandb  # late: optional (GPU machines may lack it), ~0.8 s to import
    config = {**spec.raw, "metric": {"name": spec.metric, "goal": spec.goal}}
    config.setdefault("name", name)
    sweep_id = wandb.sweep(sweep=config, project=config.get("project", recipe.wandb_project),
                           entity=config.get("entity", recipe.wandb_entity))
    log(f"W&B sweep {sweep_id}: W&B's server picks the values and applies early_terminate")
    rows: list[dict] = []

    def one_trial() -> None:
        start = time.time()
        run = wandb.init(dir=str(sweep_dir))
        values = dict(wandb.config)
        point = {p.name: as_key_type(p.name, values[p.name]) if p.name in values else p.value for p in spec.params}
        run_name = f"sweep-{name}-{run.id}"
        row = {"trial": len(rows), "state": "complete", spec.metric: None, **point, "run": None, "wandb_id": run.id}
        try:  # the agent's run is the trial's W&B run, so the trial itself does not open another
            r = trial_recipe(recipe, point, wandb="disabled")
            row[spec.metric] = score_trial(spec, r, run_name, runner, None, lambda m: run.log(dict(m)))
            run.summary[f"best_{spec.metric}"] = row[spec.metric]
        except KeyboardInterrupt:
            raise
        except Exception as e:
            row.update(state="fail", error=f"{type(e).__name__}: {e}")
            log(f"trial {row['trial']} failed: {row['error']}")
        finally:
            found = run_folder.trial_run_dir(recipe, run_name)
            row.update(run=str(found) if found else None, duration_s=time.time() - start)
            rows.append(row)
            write_trials_csv(rows, sweep_dir / "trials.csv")
            run.finish(exit_code=0 if row["state"] == "complete" else 1)

    wandb.agent(sweep_id, function=one_trial, count=count, project=config.get("project", recipe.wandb_project),
                entity=config.get("entity", recipe.wandb_entity))
    return rows


def finish(recipe: Recipe, spec: SweepSpec, name: str, sweep_dir: Path, rows: list[dict],
           importances: dict | None, log) -> None:
    """trials.csv, best_recipe.py, plots, and the table of the best trials."""
    write_trials_csv(rows, sweep_dir / "trials.csv")
    params = [p.name for p in spec.searched]
    log(best_table(rows, params, spec.metric, spec.goal))
    plot_history(rows, spec.metric, spec.goal, sweep_dir / "history.png")
    if importances:
        plot_importances(importances, spec.metric, sweep_dir / "importances.png")
    best = ranked(rows, spec.metric, spec.goal)
    if not best:
        raise UserError(f"no trial of sweep '{name}' completed; the errors are in {sweep_dir / 'trials.csv'}")
    top = best[0]
    r = trial_recipe(recipe, {p.name: top[p.name] for p in spec.params})
    path = sweep_dir / "best_recipe.py"
    write_recipe_file(r, path, f"best trial {top['trial']} of sweep '{name}': {spec.metric} = {top[spec.metric]:.4f}\n"
                               f"train it: python train.py {path}")
    result_guard().wrote(*(p for p in (sweep_dir / n for n in RESULT_FILES) if p.is_file()))
    log(f"results: {sweep_dir}/ (trials.csv, history.png{', importances.png' if importances else ''})\n"
        f"best recipe: python train.py {path}")
