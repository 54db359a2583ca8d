"""Judging predictions.

- metrics (and which way each improves), predictions (the prediction CSVs and probabilities), oof (out-of-fold
  results of a run), run_report (the evaluation report: confusion, per class, curves, mistakes), ensemble (OOF
  weights, ensemble.json), ensemble_plot (per-class plot), label_issues (label_issues.csv), command
  (`python -m engine.report`'s body)
"""
