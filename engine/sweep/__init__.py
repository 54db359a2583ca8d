"""Hyper-parameter sweeps: the W&B sweep config, the Optuna and W&B backends, one trial, the results."""
