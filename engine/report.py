"""`python -m engine.report RUN_OR_CSV [--data-dir DIR]`: (re)draw a run's evaluation report
(the body: engine/evaluate/command.py)."""
from __future__ import annotations

import argparse
import sys

from engine.errors import exit_process, run_command


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Evaluation report of a run folder or a predictions CSV.")
    p.add_argument("source", metavar="RUN_OR_CSV", help="run folder (its oof.csv or val_predictions.csv) or a CSV")
    p.add_argument("--data-dir", help="folder the CSV's image paths are relative to (default: the run's data_dir)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from engine.evaluate.command import run_report  # late: --help and argument errors answer before torch loads
    return run_command(lambda: run_report(args))


if __name__ == "__main__":
    exit_process(main())
