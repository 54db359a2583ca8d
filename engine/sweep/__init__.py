"""Hyper-parameter sweeps: config (the W&B sweep format), optuna_backend and storage (Optuna, SQLite or
PostgreSQL, workers, retries), trial (one trial's recipe and run), results (tables, plots, the best recipe) and
command (sweep.py's body: the sweep loop and the W&B backend)."""
