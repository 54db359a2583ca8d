"""Predicting: checkpoints back to models, and predict.py.

- inference: checkpoints -> models (from the file alone), TTA views, stored-feature views, ensembles; used by
  predict.py and cam.py
- command: predict.py's body (test set, --val scoring, ensembles, OOF weights, probabilities, unreadable images)
"""
