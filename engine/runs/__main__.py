"""`python -m engine.runs [RUNS_DIR] [--sort COLUMN] [--html FILE]`: every run as one table;
`python -m engine.runs diff RUN_A RUN_B`: the recipe keys two runs differ in (the body: engine/runs/command.py)."""
from __future__ import annotations

import argparse
import sys

from engine.errors import exit_process, run_command
from engine.runs.command import run_diff, run_table
from engine.runs.table import COLUMNS


def parse_table_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m engine.runs", epilog="python -m engine.runs diff RUN_A RUN_B: "
                                "the recipe keys two runs differ in",
                                description="Every run under a folder: status, scores, wall time, changed keys.")
    p.add_argument("folder", nargs="?", default="runs", metavar="RUNS_DIR", help="folder of runs (default: runs)")
    p.add_argument("--sort", default="run", metavar="COLUMN",
                   help=f"sort by one of {', '.join(COLUMNS)} (scores best first; default: run)")
    p.add_argument("--html", metavar="FILE", help="also write one HTML page: the table and every validation curve")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    """The runs table, or with `diff` first the recipe differences of two runs."""
    if argv[:1] == ["diff"]:
        p = argparse.ArgumentParser(prog="python -m engine.runs diff",
                                    description="The recipe keys two runs differ in, and their values.")
        p.add_argument("run_a", metavar="RUN_A")
        p.add_argument("run_b", metavar="RUN_B")
        args = p.parse_args(argv[1:])
        return run_command(lambda: run_diff(args))
    args = parse_table_args(argv)
    return run_command(lambda: run_table(args))


if __name__ == "__main__":
    exit_process(main(sys.argv[1:]))
