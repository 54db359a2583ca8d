"""Judging predictions.

- metrics (and which way each improves), predictions (the prediction CSVs and probabilities), oof (out-of-fold
  results of a run), report_figures (the evaluation report's figures: confusion, per class, curves, mistakes;
  drawn after a run and by `python -m engine.report`), ensemble (OOF weights, ensemble.json), ensemble_plot
  (per-class plot), label_issues (label_issues.csv)
"""
