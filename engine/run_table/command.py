"""`python -m engine.runs [RUNS_DIR] [--sort COLUMN] [--html FILE]` and `python -m engine.runs diff RUN_A RUN_B`."""
from __future__ import annotations

import argparse
from pathlib import Path

from engine import runs
from engine.errors import UserError, run_command
from engine.recipe import FIELDS, differing_keys
from engine.recipe.files import HARDWARE_KEYS
from engine.run_table.table import COLUMNS, collect, format_table, sort_rows


def parse_table_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m engine.runs", epilog="python -m engine.runs diff RUN_A RUN_B: "
                                "the recipe keys two runs differ in",
                                description="Every run under a folder: status, scores, wall time, changed keys.")
    p.add_argument("folder", nargs="?", default="runs", metavar="RUNS_DIR", help="folder of runs (default: runs)")
    p.add_argument("--sort", default="run", metavar="COLUMN",
                   help=f"sort by one of {', '.join(COLUMNS)} (scores best first; default: run)")
    p.add_argument("--html", metavar="FILE", help="also write one HTML page: the table and every validation curve")
    return p.parse_args(argv)


def show_table(args: argparse.Namespace) -> None:
    states, rows = collect(Path(args.folder))
    rows = sort_rows(rows, args.sort)
    print(format_table(rows))
    if args.html:
        from engine.run_table.page import write_page  # matplotlib only when a page is asked for
        print(f"wrote {write_page(Path(args.html), Path(args.folder), states, rows)}")


def run_folder(path: str) -> Path:
    """A run folder given as itself or as a file inside it (a checkpoint, metrics.csv)."""
    found = runs.find_run_dir(Path(path))
    if found is None:
        raise UserError(f"'{path}' is not a run folder (no {runs.RECIPE} there); pass runs/<recipe>/<time>")
    return found


def recipe_diff(a: Path, b: Path) -> str:
    """The keys two runs' recipes differ in, `key: A -> B`, the keys that do not change the result apart."""
    ra, rb = runs.read_recipe(a), runs.read_recipe(b)
    changed = differing_keys(ra, rb)
    speed = [k for k in FIELDS if k in HARDWARE_KEYS and getattr(ra, k) != getattr(rb, k)]
    lines = [f"{a} -> {b}:"]
    lines += [f"  {k}: {getattr(ra, k)!r} -> {getattr(rb, k)!r}" for k in changed] or ["  the same recipe"]
    if speed:
        lines.append("speed and logging only (the same result):")
        lines += [f"  {k}: {getattr(ra, k)!r} -> {getattr(rb, k)!r}" for k in speed]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """The runs table, or with `diff` first the recipe differences of two runs."""
    if argv[:1] == ["diff"]:
        p = argparse.ArgumentParser(prog="python -m engine.runs diff",
                                    description="The recipe keys two runs differ in, and their values.")
        p.add_argument("run_a", metavar="RUN_A")
        p.add_argument("run_b", metavar="RUN_B")
        args = p.parse_args(argv[1:])
        return run_command(lambda: print(recipe_diff(run_folder(args.run_a), run_folder(args.run_b))))
    args = parse_table_args(argv)
    return run_command(lambda: show_table(args))
