"""Early stopping on the monitored validation metric (its direction from engine.evaluate.metrics)."""
from __future__ import annotations

import math

from engine.evaluate.metrics import is_better


class EarlyStopping:
    """Tracks the best monitored value; `stop_reason` says when training should end (never on patience 0)."""

    def __init__(self, monitor: str, patience: int, state: dict | None = None):
        self.monitor, self.patience = monitor, patience
        self.state = dict(state) if state else {"best": None, "best_epoch": -1, "bad_epochs": 0}

    def update(self, metrics: dict) -> bool:
        """Record an epoch's metrics; returns whether it is the best so far."""
        value = metrics[self.monitor]
        improved = math.isfinite(value) and (self.state["best"] is None
                                             or is_better(self.monitor, value, self.state["best"]))
        if improved:
            self.state.update(best=value, best_epoch=metrics["epoch"], bad_epochs=0)
        else:
            self.state["bad_epochs"] += 1
        return improved

    def stop_reason(self, metrics: dict) -> str | None:
        """Why to stop after this epoch (a non-finite validation loss, or no improvement for `patience`)."""
        if not math.isfinite(metrics["val_loss"]):
            return f"stopping: validation loss is {metrics['val_loss']} at epoch {metrics['epoch']}"
        if self.patience and self.state["bad_epochs"] >= self.patience:
            return (f"early stopping: no {self.monitor} improvement for {self.patience} epochs "
                    f"(best {self.state['best']:.4f} at epoch {self.state['best_epoch']})")
        return None

    def result(self) -> dict:
        """The fold's result: the best epoch and its monitored value."""
        return {"best_epoch": self.state["best_epoch"], self.monitor: self.state["best"]}
