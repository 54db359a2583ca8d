"""`python -m engine.report RUN_OR_CSV [--data-dir DIR]`: (re)draw a run's (or a predictions CSV's) evaluation
report (engine/evaluate/report_figures.py) and print the headline numbers and the most confused pairs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.errors import exit_process, run_command


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m engine.report",
                                description="Evaluation report of a run folder or a predictions CSV.")
    p.add_argument("source", metavar="RUN_OR_CSV", help="run folder (its oof.csv or val_predictions.csv) or a CSV")
    p.add_argument("--data-dir", help="folder the CSV's image paths are relative to (default: the run's data_dir)")
    return p.parse_args(argv)


def report(args: argparse.Namespace) -> None:
    """Draw the report, then print the headline numbers, the most confused pairs and the label-issues line."""
    # late: --help and argument errors answer before torch loads
    from engine import run_folder
    from engine.evaluate import label_issues, predictions, report_figures
    written = report_figures.make_report(args.source, args.data_dir)
    table, _ = predictions.read_predictions(Path(args.source))
    n = int(table[["target", "pred"]].to_numpy().max()) + 1
    pairs = report_figures.confused_pairs(report_figures.confusion(table, n), predictions.class_names(table, n), 10)
    print(f"{len(table)} predictions, accuracy {(table['pred'] == table['target']).mean():.4f}")
    if len(pairs):
        print("most confused (true -> predicted):\n" + pairs.to_string(index=False))
    print("wrote " + ", ".join(str(w) for w in written))
    run_dir = run_folder.find_run_dir(Path(args.source))
    if run_dir is not None and (line := label_issues.run_summary_line(run_dir)):
        print(line)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: report(args))


if __name__ == "__main__":
    exit_process(main())
