"""The table of runs: one row per run folder, the recipe keys each run changed against its most similar run,
sorting by a column, and the plain-text layout the console prints."""
from __future__ import annotations

from pathlib import Path

from engine import run_folder
from engine.errors import UserError
from engine.evaluate import label_issues
from engine.recipe import Recipe, differing_keys
from engine.runs.status import RunState, read_run

# column -> heading; scores sort best first, everything else smallest (A) first, an empty cell always last
COLUMNS = {"run": "run", "model": "model", "image_size": "size", "folds": "folds", "status": "status",
           "val_acc": "val_acc", "val_f1": "val_f1", "oof_acc": "oof_acc", "wall": "wall",
           "differs": "differs from the most similar run"}
NUMERIC = ("image_size", "val_acc", "val_f1", "oof_acc", "wall")
SCORES = ("val_acc", "val_f1", "oof_acc")
VALUE_CHARS = 24  # a long value (a sweep dict, a path) is cut in the table; `diff` prints it whole
KEYS_SHOWN = 4  # a run unlike every other lists its first keys and a count; `diff` names them all


def find_runs(folder: Path) -> list[Path]:
    """Every run folder (one holding recipe.json, or a fold<k>/ with a checkpoint or metrics) at or below
    `folder`, by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"'{folder}' is not a folder; pass the runs folder (default: runs)")
    found = {p.parent for p in folder.rglob(run_folder.RECIPE) if run_folder.is_run_dir(p.parent)}
    found |= {p.parent.parent for p in [*folder.rglob(f"{run_folder.FOLD_PREFIX}*/{run_folder.LAST}"),
                                        *folder.rglob(f"{run_folder.FOLD_PREFIX}*/{run_folder.METRICS}")]
              if run_folder.fold_of(p.parent) is not None}  # a run whose recipe.json went: a damaged row, not missing
    found = sorted(found)
    if not found:
        raise UserError(f"no run folders under '{folder}' (folders holding {run_folder.RECIPE}); train one: python train.py")
    return found


def most_similar(recipe: Recipe, others: list[tuple[str, Recipe]]) -> tuple[str, list[str]] | None:
    """(name, differing keys) of the run whose recipe differs from `recipe` in the fewest keys (the first
    of equals, by name); None when there is no other run."""
    ranked = sorted((len(keys), name, keys) for name, other in others for keys in [differing_keys(other, recipe)])
    return (ranked[0][1], ranked[0][2]) if ranked else None


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS - 3] + "..."


def changes(state: RunState, states: list[RunState]) -> str:
    """`key=value, ... (vs RUN)`: this run's values of the keys where it differs from its most similar run."""
    if state.recipe is None:
        return ""
    found = most_similar(state.recipe, [(s.name, s.recipe) for s in states if s is not state and s.recipe])
    if found is None:
        return ""
    name, keys = found
    what = ", ".join(f"{k}={short(getattr(state.recipe, k))}" for k in keys[:KEYS_SHOWN]) or "same recipe"
    what += f" and {len(keys) - KEYS_SHOWN} more" if len(keys) > KEYS_SHOWN else ""
    return f"{what} (vs {name})"


def row(state: RunState, states: list[RunState]) -> dict:
    """One table row: values for sorting and the HTML page (None: empty cell)."""
    r = state.recipe
    return {"run": state.name, "model": r.model if r else None, "image_size": r.image_size if r else None,
            "folds": f"{state.folds_done}/{state.folds_planned}" if r else None, "status": state.status,
            "val_acc": state.best("val_acc"), "val_f1": state.best("val_f1"), "oof_acc": state.oof_acc,
            "wall": state.wall_s if state.curves else None, "differs": changes(state, states) + cleaned_from(r),
            "detail": state.detail}


def cleaned_from(recipe: Recipe | None) -> str:
    """`; cleaned from RUN (oof_acc X)` for a run on a table `explore --drop` made from RUN's label issues."""
    found = label_issues.original_run(recipe.train_csv) if recipe else None
    return f"; cleaned from {found[0].name} (oof_acc {found[1]['accuracy']:.4f})" if found else ""


def collect(folder: Path) -> tuple[list[RunState], list[dict]]:
    """Every run under `folder`: its state and its row (in path order)."""
    states = [read_run(p, Path(folder)) for p in find_runs(folder)]
    return states, [row(s, states) for s in states]


def sort_rows(rows: list[dict], column: str) -> list[dict]:
    """Rows sorted by `column`: scores best first, other columns smallest (A) first, empty cells last."""
    if column not in COLUMNS:
        raise UserError(f"--sort {column}: not a column; pick one of {', '.join(COLUMNS)}")
    filled = [r for r in rows if r[column] not in (None, "")]
    empty = [r for r in rows if r[column] in (None, "")]
    return sorted(filled, key=lambda r: r[column], reverse=column in SCORES) + empty


def cell(row: dict, column: str) -> str:
    """How a value reads in the table."""
    value = row[column]
    if value is None:
        return "-"
    if column == "wall":
        return duration(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def duration(seconds: float) -> str:
    """12s, 3m04s, 2h05m."""
    s = int(round(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_table(rows: list[dict]) -> str:
    """The table as aligned text, then one line per run that is not finished: what to do or who trains it."""
    cells = [[COLUMNS[c] for c in COLUMNS]] + [[cell(r, c) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    right = [c in NUMERIC for c in COLUMNS]
    lines = ["  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(line, widths, right)).rstrip()
             for line in cells]
    notes = [f"{r['status']} {r['run']}: {r['detail']}" for r in rows if r["detail"]]
    return "\n".join(lines + ([""] + notes if notes else []))
