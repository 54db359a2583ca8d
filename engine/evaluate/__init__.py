"""Judging predictions: metrics, the prediction CSVs, out-of-fold results and the evaluation report."""
