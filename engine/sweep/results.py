"""What a sweep leaves behind: trials.csv, best_recipe.py, the best-trials table and two plots.

A trial row is a plain dict: trial, state, <metric>, duration_s, run, and one column per parameter.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure  # figures without pyplot: no GUI backend, no global state
from matplotlib.ticker import MaxNLocator

from engine.recipe import Recipe
from engine.system.atomic import write_csv, write_text


def write_trials_csv(rows: list[dict], path: Path) -> pd.DataFrame:
    """All trials, one row each, written atomically; returns the table."""
    table = pd.DataFrame(rows)
    write_csv(table, path)
    return table


def ranked(rows: list[dict], metric: str, goal: str) -> list[dict]:
    """Completed trials with a finite metric, best first."""
    done = [r for r in rows if r["state"] == "complete" and r.get(metric) is not None and math.isfinite(r[metric])]
    return sorted(done, key=lambda r: r[metric], reverse=goal == "maximize")


def recipe_file_text(recipe: Recipe, header: str) -> str:
    """A flat recipe file with every key written out (no `sweep`), that train.py runs as is."""
    lines = [f"# {line}" for line in header.splitlines()]
    for key, value in recipe.to_dict().items():
        if key != "sweep":  # `name` is written too: it names the run folder, not the file stem
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"


def write_recipe_file(recipe: Recipe, path: Path, header: str) -> None:
    write_text(path, recipe_file_text(recipe, header))


def best_table(rows: list[dict], params: list[str], metric: str, goal: str, n: int = 5) -> str:
    """The best n trials as an aligned text table (what the sweep prints at the end)."""
    best = ranked(rows, metric, goal)[:n]
    states = pd.Series([r["state"] for r in rows]).value_counts().to_dict() if rows else {}
    summary = f"{len(rows)} trials: " + ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
    if not best:
        return summary + "\nno trial completed"
    table = pd.DataFrame([{"trial": r["trial"], metric: f"{r[metric]:.4f}", "minutes": f"{r['duration_s'] / 60:.1f}",
                           **{p: _short(r.get(p)) for p in params}} for r in best])
    return f"{summary}\nbest trials ({metric}, {goal}):\n" + table.to_string(index=False)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plot_history(rows: list[dict], metric: str, goal: str, path: Path) -> None:
    """Each trial's metric against its number, and the best so far."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    colors = {"complete": "tab:blue", "pruned": "tab:orange"}
    for state, color in colors.items():
        pts = [(r["trial"], r[metric]) for r in rows if r["state"] == state and _finite(r.get(metric))]
        if pts:
            ax.scatter(*zip(*pts), s=18, color=color, label=state if state == "complete" else "pruned (last value)")
    done = sorted((r["trial"], r[metric]) for r in rows if r["state"] == "complete" and _finite(r.get(metric)))
    if done:
        pick = max if goal == "maximize" else min
        running = [pick(v for _, v in done[:i + 1]) for i in range(len(done))]
        ax.step([t for t, _ in done], running, where="post", color="tab:red", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"optimisation history ({goal} {metric})")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_importances(importances: dict[str, float], metric: str, path: Path) -> None:
    """Horizontal bars: how much of the metric's variance each parameter explains."""
    names = sorted(importances, key=importances.get)
    fig = Figure(figsize=(7, 1.2 + 0.35 * len(names)))
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel(f"importance for {metric} (fANOVA, completed trials)")
    ax.set_title("parameter importances")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
