"""After the folds: a table of every fold's best scores."""
from __future__ import annotations

from pathlib import Path


def finish_folds(run_dir: Path, recipe, results: dict, log) -> None:
    """Print each trained fold's best epoch and monitored score."""
    if len(results) < 2:
        return
    log.print(f"folds ({recipe.monitor}):")
    for k, r in sorted(results.items()):
        value = r.get(recipe.monitor)
        log.print(f"  fold {k}: best epoch {r.get('best_epoch', r.get('epoch'))}, "
                  f"{recipe.monitor} {value:.4f}" if value is not None else f"  fold {k}: no result")
