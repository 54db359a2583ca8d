"""A recipe's `sweep` dict (the W&B sweep config format), checked and translated for Optuna.

Everything a user can get wrong in the config is found here, before any trial runs.
"""
from __future__ import annotations

import itertools
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from engine.errors import UserError
from engine.recipe import FIELDS, Recipe, check_value

METHODS = ("grid", "random", "bayes")
# what fit() reports after every epoch and a sweep can optimise
METRICS = {"val_loss": "minimize", "val_acc": "maximize", "val_f1": "maximize", "val_top5": "maximize",
           "train_loss": "minimize", "train_acc": "maximize"}
# top-level W&B keys that only matter to W&B's own server or CLI: accepted, unused offline
PASSIVE_KEYS = {"name", "description", "program", "command", "project", "entity"}
TOP_KEYS = {"method", "metric", "parameters", "early_terminate", "run_cap"} | PASSIVE_KEYS
NOT_SWEEPABLE = {"sweep", "name", "output_dir"}
DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform",
                 "log_uniform_values", "q_log_uniform_values")
UNSUPPORTED = ("normal", "q_normal", "log_normal", "q_log_normal", "beta", "q_beta", "q_log_uniform",
               "inv_log_uniform", "inv_log_uniform_values")


@dataclass
class Param:
    """One swept recipe key: a fixed value, a list of choices, or a numeric range."""
    name: str
    kind: str                      # "fixed" | "choice" | "int" | "float"
    value: Any = None              # fixed
    choices: list = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    q: float | None = None         # quantisation step: value = round(x / q) * q

    def contains(self, value: Any) -> bool:
        """Whether a value (e.g. the recipe's own) lies in this parameter's space."""
        if self.kind == "fixed":
            return value == self.value
        if self.kind == "choice":
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high


@dataclass
class SweepSpec:
    """A checked sweep config."""
    method: str
    metric: str
    goal: str                      # "minimize" | "maximize"
    params: list[Param]
    min_iter: int | None = None    # hyperband early termination, None: off
    eta: int = 3
    run_cap: int | None = None
    raw: dict = field(default_factory=dict)

    @property
    def searched(self) -> list[Param]:
        return [p for p in self.params if p.kind != "fixed"]

    def grid(self) -> dict[str, list]:
        """Grid search space: every non-fixed parameter as a list of values."""
        return {p.name: grid_values(p) for p in self.searched}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())


def _int_key(name: str) -> bool:
    hint = typing.get_type_hints(Recipe)[name]
    return int in (hint, *typing.get_args(hint))


def _number(name: str, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"sweep parameter '{name}': {where} must be a number, got {value!r}")
    return value


def as_key_type(name: str, value: Any) -> Any:
    """The value as the recipe key's type (64.0 -> 64 for int keys), with the key named in any error."""
    if _int_key(name) and isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return check_value(name, value)
    except UserError as e:
        raise UserError(f"sweep parameter '{name}': {e}") from None


def parse_param(name: str, spec: Any) -> Param:
    """One entry of `parameters`, in any of the W&B forms this engine supports."""
    if name not in FIELDS or name in NOT_SWEEPABLE:
        try:
            check_value(name, None)  # raises the standard "unknown key, did you mean" error
        except UserError as e:
            raise UserError(f"sweep parameter '{name}': {e}") from None
        raise UserError(f"sweep parameter '{name}' cannot be swept; pick a training key such as lr")
    if not isinstance(spec, dict):
        raise UserError(f"sweep parameter '{name}' must be a dict such as {{'values': [...]}} or "
                        f"{{'min': 1e-4, 'max': 1e-2}}; got {spec!r}")
    if "parameters" in spec:
        raise UserError(f"sweep parameter '{name}': nested parameters are not supported (recipes are flat)")
    if "probabilities" in spec:
        raise UserError(f"sweep parameter '{name}': 'probabilities' is not supported; list a value twice to weight it")
    dist = spec.get("distribution")
    if dist is None:
        dist = ("constant" if "value" in spec else "categorical" if "values" in spec else
                "int_uniform" if all(isinstance(spec.get(k), int) and not isinstance(spec.get(k), bool)
                                     for k in ("min", "max")) else "uniform")
    if dist in UNSUPPORTED:
        raise UserError(f"sweep parameter '{name}': distribution '{dist}' is not supported; "
                        f"use one of {', '.join(DISTRIBUTIONS)}")
    if dist not in DISTRIBUTIONS:
        raise UserError(f"sweep parameter '{name}': unknown distribution '{dist}'; use one of {', '.join(DISTRIBUTIONS)}")
    if dist == "constant":
        if "value" not in spec:
            raise UserError(f"sweep parameter '{name}': distribution 'constant' needs 'value'")
        return Param(name, "fixed", value=as_key_type(name, spec["value"]))
    if dist == "categorical":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise UserError(f"sweep parameter '{name}': 'values' must be a non-empty list, got {values!r}")
        return Param(name, "choice", choices=[as_key_type(name, v) for v in values])
    if "min" not in spec or "max" not in spec:
        raise UserError(f"sweep parameter '{name}': distribution '{dist}' needs 'min' and 'max'")
    low, high = _number(name, "min", spec["min"]), _number(name, "max", spec["max"])
    if dist == "log_uniform":  # W&B: min and max are natural-log exponents
        low, high = math.exp(low), math.exp(high)
    if not low < high:
        raise UserError(f"sweep parameter '{name}': min must be below max, got {spec['min']} and {spec['max']}")
    log = dist in ("log_uniform", "log_uniform_values", "q_log_uniform_values")
    if log and low <= 0:
        raise UserError(f"sweep parameter '{name}': '{dist}' needs min > 0, got {low}")
    q = None
    if dist.startswith("q_"):
        q = _number(name, "q", spec.get("q", 1))
        if q <= 0:
            raise UserError(f"sweep parameter '{name}': q must be > 0, got {q}")
    integral = dist == "int_uniform" or (q is not None and float(q).is_integer() and float(low).is_integer())
    if _int_key(name) and not integral:
        raise UserError(f"sweep parameter '{name}' is an integer key; use int_uniform, a q_ distribution "
                        f"with integer q, or a 'values' list")
    if dist == "int_uniform" and not (float(low).is_integer() and float(high).is_integer()):
        raise UserError(f"sweep parameter '{name}': int_uniform needs integer min and max")
    kind = "int" if dist == "int_uniform" or (integral and _int_key(name)) else "float"
    as_key_type(name, int(low) if kind == "int" else float(low))
    as_key_type(name, int(high) if kind == "int" else float(high))
    return Param(name, kind, low=low, high=high, log=log, q=q)


def grid_values(p: Param) -> list:
    """The finite list of values a grid visits for one parameter."""
    if p.kind == "fixed":
        return [p.value]
    if p.kind == "choice":
        return list(p.choices)
    if p.kind == "int" and p.q is None:
        return list(range(int(p.low), int(p.high) + 1))
    if p.q is not None and not p.log:
        n = int(math.floor((p.high - p.low) / p.q + 1e-9))
        return [quantise(p, p.low + i * p.q) for i in range(n + 1)]
    raise UserError(f"sweep parameter '{p.name}': a grid needs 'values', int_uniform or q_uniform, not a continuous range")


def quantise(p: Param, x: float) -> Any:
    """Apply q rounding (W&B: round(x / q) * q) and the recipe key's type."""
    if p.q is not None:
        x = round(round(x / p.q) * p.q, 12)
    if p.kind == "int" or (_int_key(p.name) and float(x).is_integer()):
        return int(round(x))
    return float(x)


def parse_early_terminate(et: Any) -> tuple[int | None, int]:
    """`early_terminate` -> (min_iter, eta); W&B's hyperband bands are min_iter * eta**k."""
    if not et:
        return None, 3
    if not isinstance(et, dict) or et.get("type") != "hyperband":
        raise UserError(f"sweep early_terminate must be {{'type': 'hyperband', 'min_iter': N}}; got {et!r}")
    unknown = set(et) - {"type", "min_iter", "max_iter", "s", "eta", "strict"}
    if unknown:
        raise UserError(f"sweep early_terminate: unknown key(s) {', '.join(sorted(unknown))}")
    eta = et.get("eta", 3)
    if not isinstance(eta, int) or isinstance(eta, bool) or eta < 2:
        raise UserError(f"sweep early_terminate: eta must be an integer >= 2, got {eta!r}")
    if "min_iter" in et:
        min_iter = et["min_iter"]
    elif "max_iter" in et and "s" in et:  # W&B: bands at max_iter / eta**k for k = 1..s
        min_iter = max(1, round(et["max_iter"] / eta ** et["s"]))
    else:
        raise UserError("sweep early_terminate: give min_iter (or max_iter and s)")
    if not isinstance(min_iter, int) or isinstance(min_iter, bool) or min_iter < 1:
        raise UserError(f"sweep early_terminate: min_iter must be an integer >= 1, got {min_iter!r}")
    return min_iter, eta


def parse_sweep(config: Any, recipe: Recipe) -> SweepSpec:
    """Check a W&B sweep config against the recipe keys; raise UserError on anything unsupported."""
    if not isinstance(config, dict) or not config:
        raise UserError(f"recipe '{recipe.name}' has no `sweep` dict; add one, e.g. sweep = {{'method': 'random', "
                        f"'parameters': {{'lr': {{'distribution': 'log_uniform_values', 'min': 1e-4, 'max': 1e-2}}}}}}")
    unknown = set(config) - TOP_KEYS
    if unknown:
        raise UserError(f"sweep config: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(TOP_KEYS))}")
    method = config.get("method")
    if method not in METHODS:
        raise UserError(f"sweep config: method must be one of {', '.join(METHODS)}; got {method!r}")
    metric = config.get("metric", {"name": recipe.monitor})
    if not isinstance(metric, dict) or metric.get("name") not in METRICS:
        raise UserError(f"sweep config: metric must be {{'name': one of {', '.join(METRICS)}, 'goal': ...}}; got {metric!r}")
    goal = metric.get("goal", METRICS[metric["name"]])
    if goal not in ("minimize", "maximize"):
        raise UserError(f"sweep config: metric goal must be minimize or maximize; got {goal!r}")
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise UserError("sweep config: 'parameters' must be a non-empty dict of recipe keys")
    params = [parse_param(name, spec) for name, spec in parameters.items()]
    min_iter, eta = parse_early_terminate(config.get("early_terminate"))
    run_cap = config.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or isinstance(run_cap, bool) or run_cap < 1):
        raise UserError(f"sweep config: run_cap must be a positive integer, got {run_cap!r}")
    spec = SweepSpec(method, metric["name"], goal, params, min_iter, eta, run_cap, dict(config))
    check_mixing(spec, recipe)
    if method == "grid":
        spec.grid()  # raises if a parameter is continuous
    return spec


def lowest(p: Param) -> float:
    """The smallest value a numeric parameter can take."""
    return p.value if p.kind == "fixed" else min(p.choices) if p.kind == "choice" else p.low


def check_mixing(spec: SweepSpec, recipe: Recipe) -> None:
    """mixup_ratio + cutmix_ratio <= 1 must hold somewhere in the space, or every trial would fail."""
    swept = {p.name: p for p in spec.params}
    least = {k: lowest(swept[k]) if k in swept else getattr(recipe, k) for k in ("mixup_ratio", "cutmix_ratio")}
    if least["mixup_ratio"] + least["cutmix_ratio"] > 1 + 1e-9:
        raise UserError(f"sweep config: every point has mixup_ratio + cutmix_ratio > 1 (at least "
                        f"{least['mixup_ratio']} + {least['cutmix_ratio']}); lower one of the ranges")


def sample_point(spec: SweepSpec, trial) -> dict:
    """Ask an Optuna trial for one value of every parameter (recipe key -> value)."""
    point = {}
    for p in spec.params:
        if p.kind == "fixed":
            point[p.name] = p.value
        elif spec.method == "grid":  # the grid sampler only returns values of its own lists
            point[p.name] = trial.suggest_categorical(p.name, grid_values(p))
        elif p.kind == "choice":
            point[p.name] = trial.suggest_categorical(p.name, p.choices)
        elif p.kind == "int" and p.q is None:
            point[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high))
        else:
            point[p.name] = quantise(p, trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log))
    return point


def first_point(spec: SweepSpec, recipe: Recipe) -> dict:
    """The recipe's own values of the searched keys that lie in the space (enqueued as trial 0)."""
    return {p.name: getattr(recipe, p.name) for p in spec.searched if p.contains(getattr(recipe, p.name))}


def grid_points(spec: SweepSpec) -> list[dict]:
    """Every point of a grid, in order (for tests and for counting)."""
    grid = spec.grid()
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
