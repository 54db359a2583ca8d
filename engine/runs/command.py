"""The body of `python -m engine.runs [RUNS_DIR] [--sort COLUMN] [--html FILE]` (the table) and of
`python -m engine.runs diff RUN_A RUN_B` (the recipe differences)."""
from __future__ import annotations

import argparse
from pathlib import Path

from engine import run_folder
from engine.errors import UserError
from engine.recipe import FIELDS, differing_keys
from engine.recipe.files import HARDWARE_KEYS
from engine.runs.table import collect, format_table, sort_rows
from engine.system.outputs import OutputGuard

PAGE_START = "<!doctype html><html><head><meta charset='utf-8'><title>runs under "


def _page_wrote(path: Path) -> bool:
    """A page an earlier `--html` wrote (before the output ledger): by how it begins."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(len(PAGE_START)) == PAGE_START
    except OSError:
        return False


def html_guard() -> OutputGuard:
    """--html's output rule: a new file or a page this command wrote; never a recipe, image, run file or folder."""
    return OutputGuard("engine.runs --html", example="runs.html", recognise=_page_wrote)


def run_table(args: argparse.Namespace) -> None:
    """Print the runs table; with --html write the page first (a closed pipe then loses only the printout)."""
    guard = html_guard()
    page = guard.check(args.html) if args.html else None  # before reading every run: a refusal costs nothing
    states, rows = collect(Path(args.folder))
    rows = sort_rows(rows, args.sort)
    if page is not None:
        from engine.runs.html_page import write_page  # matplotlib only when a page is asked for
        write_page(page, Path(args.folder), states, rows)
        guard.wrote(page)
    print(format_table(rows))
    if page is not None:
        print(f"wrote {page}")


def run_folder_of(path: str) -> Path:
    """A run folder given as itself or as a file inside it (a checkpoint, metrics.csv)."""
    found = run_folder.find_run_dir(Path(path))
    if found is None:
        raise UserError(f"'{path}' is not a run folder (no {run_folder.RECIPE} there); pass runs/<recipe>/<time>")
    return found


def recipe_diff(a: Path, b: Path) -> str:
    """The keys two runs' recipes differ in, `key: A -> B`, the keys that do not change the result apart."""
    ra, rb = run_folder.read_recipe(a), run_folder.read_recipe(b)
    changed = differing_keys(ra, rb)
    speed = [k for k in FIELDS if k in HARDWARE_KEYS and getattr(ra, k) != getattr(rb, k)]
    lines = [f"{a} -> {b}:"]
    lines += [f"  {k}: {getattr(ra, k)!r} -> {getattr(rb, k)!r}" for k in changed] or ["  the same recipe"]
    if speed:
        lines.append("speed and logging only (the same result):")
        lines += [f"  {k}: {getattr(ra, k)!r} -> {getattr(rb, k)!r}" for k in speed]
    return "\n".join(lines)


def run_diff(args: argparse.Namespace) -> None:
    """Print the recipe keys two runs differ in."""
    print(recipe_diff(run_folder_of(args.run_a), run_folder_of(args.run_b)))
