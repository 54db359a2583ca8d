"""The offline backend: an Optuna study in a database (SQLite in the sweep folder by default).

grid -> GridSampler, random -> RandomSampler, bayes -> TPESampler(multivariate), all seeded;
hyperband early_terminate -> SuccessiveHalvingPruner(min_iter, eta), fed every epoch. The
recipe's own values are the first trial. Several processes or machines can share one study
(`--storage` URL, `--resume`); a trial whose worker died is failed by the heartbeat and re-run
(engine/sweep/storage.py). run_cap holds across workers: a trial numbered past the cap never trains, and
a worker at the cap waits for the others' running trials, so that a dead worker's trial is re-run.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from engine import run_folder
from engine.errors import UserError
from engine.recipe import Recipe
from engine.sweep.config import SweepSpec, first_point, sample_point
from engine.sweep.results import write_trials_csv
from engine.sweep.storage import fail_stale_trials, open_storage, retried_numbers, without_password
from engine.sweep.trial import TrialPruned, score_trial, trial_recipe

HEARTBEAT_S = 60
SKIPPED = "skipped"  # user attr of a trial created after run_cap was reached by all workers together
SAME_ERROR_STOP = 3  # this many trials in a row failing alike is the recipe or data, not the values


def make_sampler(spec: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    if spec.method == "grid":
        return optuna.samplers.GridSampler(spec.grid(), seed=seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if spec.min_iter is None:
        return optuna.pruners.NopPruner()
    # W&B's hyperband stops a run at bands min_iter * eta**k unless it is in the top 1/eta: successive halving
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.min_iter, reduction_factor=spec.eta)


def open_study(recipe: Recipe, spec: SweepSpec, name: str, sweep_dir: Path, storage: str | None,
               resume: bool, heartbeat_s: int = HEARTBEAT_S) -> optuna.Study:
    """Create the study once (before any trial), or load it with --resume; the sampler is seeded per session."""
    url = storage or f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    db = open_storage(url, heartbeat_s)
    url = without_password(url)  # only ever printed from here on
    try:
        exists = name in [s.study_name for s in optuna.get_all_study_summaries(db, include_best_trial=False)]
    except Exception as e:  # an unreachable database answers only when first asked, from SQLAlchemy
        raise UserError(f"--storage {url}: cannot read the studies ({type(e).__name__}); check the URL and that "
                        f"the database is reachable from this machine") from e
    if exists and not resume:
        raise UserError(f"sweep '{name}' already exists in {url}; add --resume to add trials, or pick another --name")
    if resume and not exists:
        raise UserError(f"no sweep '{name}' in {url} to resume; drop --resume to start it")
    if not exists and any((Path(recipe.output_dir) / recipe.name).glob(f"*-sweep-{name}-t*")):
        raise UserError(f"run folders of an earlier sweep '{name}' exist in {Path(recipe.output_dir) / recipe.name}; "
                        f"pick another --name or remove them")
    study = optuna.create_study(storage=db, study_name=name, direction=spec.goal, load_if_exists=True,
                                pruner=make_pruner(spec))
    if not exists:
        study.set_user_attr("sweep", spec.raw)
        study.set_user_attr("recipe", recipe.name)
        point = first_point(spec, recipe) if spec.method != "grid" else {}
        if point:
            study.enqueue_trial(point, skip_if_exists=True)
    elif study.user_attrs.get("sweep") != spec.raw:
        print(f"warning: the recipe's sweep config changed since sweep '{name}' started; continuing with the new one")
    if study.direction.name.lower() != spec.goal:
        raise UserError(f"sweep '{name}' was started to {study.direction.name.lower()}; its metric goal cannot change")
    # a resumed session draws new values; workers joining together must not draw the same ones
    joiner = hash((os.getpid(), socket.gethostname())) % 100_003 if resume else 0
    study.sampler = make_sampler(spec, recipe.seed + len(study.trials) + joiner)
    return study


def counted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count towards --count and run_cap: all but re-run failures and trials skipped at the cap."""
    rerun = retried_numbers(study)
    return [t for t in study.get_trials(deepcopy=False) if t.number not in rerun and not t.user_attrs.get(SKIPPED)]


def trial_rows(study: optuna.Study, spec: SweepSpec) -> list[dict]:
    """One dict per trial: number, state, score, duration, run folder, values, error."""
    rows = []
    rerun = retried_numbers(study)
    for t in study.trials:
        if t.user_attrs.get(SKIPPED):
            continue
        score = t.value if t.state == TrialState.COMPLETE else None
        if score is None and t.intermediate_values:  # pruned or failed: its best epoch so far
            pick = max if spec.goal == "maximize" else min
            score = pick(t.intermediate_values.values())
        end = t.datetime_complete
        duration = (end - t.datetime_start).total_seconds() if end and t.datetime_start else None
        error = t.user_attrs.get("error")
        if t.state == TrialState.FAIL and not error and t.number in rerun:
            error = f"its worker stopped sending heartbeats; re-run as trial {rerun[t.number]}"
        rows.append({"trial": t.number, "state": t.state.name.lower(), spec.metric: score, "duration_s": duration,
                     **{p.name: t.user_attrs.get("values", {}).get(p.name, t.params.get(p.name)) for p in spec.params},
                     "epochs": t.last_step, "run": t.user_attrs.get("run"), "error": error})
    return rows


def run_optuna(recipe: Recipe, spec: SweepSpec, name: str, sweep_dir: Path, count: int, storage: str | None,
               resume: bool, runner, log, heartbeat_s: int = HEARTBEAT_S) -> tuple[list[dict], dict | None]:
    """Add `count` trials to the study (fewer when a grid or run_cap runs out); return rows and importances."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial says what happened
    study = open_study(recipe, spec, name, sweep_dir, storage, resume, heartbeat_s)
    done = len(counted_trials(study))
    if spec.method == "grid":
        count = min(count, max(0, spec.grid_size() - done))
    if spec.run_cap is not None and done >= spec.run_cap:  # not fewer: a dead worker's trial may need a re-run
        count = 0 if not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in study.trials) else count
    if count == 0:
        log(f"sweep '{name}': nothing left to run ({done} trials, grid or run_cap reached)")
    stop = {"why": None}

    def objective(trial: optuna.Trial) -> float:
        if spec.run_cap is not None and sum(t.number < trial.number for t in counted_trials(study)) >= spec.run_cap:
            trial.set_user_attr(SKIPPED, True)  # other workers took the last places under the cap
            raise optuna.TrialPruned("run_cap reached")
        point = sample_point(spec, trial)
        run_name = f"sweep-{name}-t{trial.number:03d}"
        trial.set_user_attr("values", point)
        again = study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")
        log(f"trial {trial.number}" + (f" (re-run of trial {again}, whose worker stopped)" if again is not None else "")
            + ": " + ", ".join(f"{k}={v!r}" for k, v in point.items() if k in trial.params))
        r = None
        try:
            r = trial_recipe(recipe, point)

            def report(value: float, epoch: int) -> bool:
                trial.report(value, epoch)
                return trial.should_prune()
            return score_trial(spec, r, run_name, runner, report)
        except TrialPruned as e:
            raise optuna.TrialPruned(str(e)) from e
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            raise
        finally:
            found = run_folder.trial_run_dir(r, run_name) if r is not None else None
            trial.set_user_attr("run", str(found) if found else None)

    errors: list = []

    def after(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        if frozen.user_attrs.get(SKIPPED):
            return
        row = next(r for r in trial_rows(study, spec) if r["trial"] == frozen.number)
        errors.append(row["error"])
        score = f"{spec.metric} {row[spec.metric]:.4f}" if row[spec.metric] is not None else "no score"
        log(f"trial {frozen.number}: {row['state']}, {score}"
            + (f" ({row['error']})" if row["error"] else "") + f", {(row['duration_s'] or 0):.0f}s")
        write_trials_csv(trial_rows(study, spec), sweep_dir / "trials.csv")
        last = errors[-SAME_ERROR_STOP:]
        if len(last) == SAME_ERROR_STOP and last[0] and len(set(last)) == 1:
            stop["why"] = f"stopping the sweep: {SAME_ERROR_STOP} trials in a row failed with: {last[0]}"

    start = time.time()
    while len(errors) < count and stop["why"] is None:
        if spec.run_cap is not None and len(counted_trials(study)) >= spec.run_cap:
            fail_stale_trials(study)
            states = {t.state for t in study.get_trials(deepcopy=False)}
            if TrialState.WAITING not in states:
                if TrialState.RUNNING not in states:
                    break
                time.sleep(heartbeat_s)  # another worker's trial: if that worker died, its re-run comes here
                continue
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[after], gc_after_trial=True)
    if stop["why"]:
        log(stop["why"])
    log(f"sweep '{name}': {len(errors)} trials in {(time.time() - start) / 60:.1f} min")
    return trial_rows(study, spec), importances(study)


def importances(study: optuna.Study) -> dict | None:
    """fANOVA importances of the searched values over completed trials (None when there are too few)."""
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if len(complete) < 3:
        return None
    try:
        return optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError):
        return None
