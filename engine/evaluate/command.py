"""The body of `python -m engine.report RUN_OR_CSV`: draw a run's (or a predictions CSV's) evaluation report and
print the headline numbers and the most confused pairs."""
from __future__ import annotations

import argparse
from pathlib import Path

from engine import runs
from engine.evaluate import label_issues
from engine.evaluate.predictions import class_names, read_predictions
from engine.evaluate.run_report import confused_pairs, confusion, make_report


def run_report(args: argparse.Namespace) -> None:
    """Draw the report and print the headline numbers and the most confused pairs."""
    written = make_report(args.source, args.data_dir)
    table, _ = read_predictions(Path(args.source))
    n = int(table[["target", "pred"]].to_numpy().max()) + 1
    pairs = confused_pairs(confusion(table, n), class_names(table, n), 10)
    print(f"{len(table)} predictions, accuracy {(table['pred'] == table['target']).mean():.4f}")
    if len(pairs):
        print("most confused (true -> predicted):\n" + pairs.to_string(index=False))
    print("wrote " + ", ".join(str(w) for w in written))
    run_dir = runs.find_run_dir(Path(args.source))
    if run_dir is not None and (line := label_issues.run_summary_line(run_dir)):
        print(line)
