"""Classification metrics from class probabilities: top-1, top-5, macro-F1, per-class accuracy."""
from __future__ import annotations

import numpy as np
import torch


def topk_accuracy(probs: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    k = min(k, probs.shape[1])
    return (probs.topk(k, dim=1).indices == targets.view(-1, 1)).any(dim=1).float().mean().item()


def macro_f1(pred: np.ndarray, targets: np.ndarray, num_classes: int) -> float:
    """Mean F1 over the classes present in targets or predictions."""
    tp = np.bincount(targets[pred == targets], minlength=num_classes).astype(float)
    n_pred = np.bincount(pred, minlength=num_classes)
    n_true = np.bincount(targets, minlength=num_classes)
    present = (n_pred + n_true) > 0
    f1 = 2 * tp[present] / (n_pred[present] + n_true[present])
    return float(f1.mean()) if f1.size else 0.0


def per_class_accuracy(pred: np.ndarray, targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Accuracy of each class (NaN for a class with no samples)."""
    correct = np.bincount(targets[pred == targets], minlength=num_classes).astype(float)
    total = np.bincount(targets, minlength=num_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return correct / total


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor) -> dict:
    """acc, top5 and f1 of probabilities (N x C) against integer targets (N)."""
    pred = probs.argmax(1).numpy()
    t = targets.numpy()
    return {"acc": topk_accuracy(probs, targets, 1), "top5": topk_accuracy(probs, targets, 5),
            "f1": macro_f1(pred, t, probs.shape[1])}

# Which way each metric improves: the one table early stopping, best.pt, the folds table and sweeps read.
GOALS = {"val_loss": "minimize", "train_loss": "minimize", "val_acc": "maximize", "val_top5": "maximize",
         "val_f1": "maximize", "train_acc": "maximize"}


def goal_of(metric: str) -> str:
    """'minimize' or 'maximize' for a metric name (unknown names: losses minimise, the rest maximise)."""
    return GOALS.get(metric, "minimize" if metric.endswith("loss") else "maximize")


def is_better(goal_or_metric: str, new: float, best: float) -> bool:
    """Whether `new` beats `best` for a goal ('minimize' / 'maximize') or a metric name."""
    goal = goal_or_metric if goal_or_metric in ("minimize", "maximize") else goal_of(goal_or_metric)
    return new < best if goal == "minimize" else new > best
