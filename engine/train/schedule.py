"""The learning rate as a pure function of the update count: linear warm-up, then cosine (or flat)."""
from __future__ import annotations

import math

import torch


def lr_factor(update: int, total_updates: int, warmup_updates: int, scheduler: str = "cosine") -> float:
    """Multiplier of the peak lr after `update` optimizer updates: linear warm-up, then cosine to 0 (or flat)."""
    if update < warmup_updates:
        return (update + 1) / (warmup_updates + 1)
    if scheduler == "none":
        return 1.0
    progress = (update - warmup_updates) / max(1, total_updates - warmup_updates)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, total_updates: int, warmup_updates: int,
                    scheduler: str = "cosine") -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping once per optimizer update."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda u: lr_factor(u, total_updates, warmup_updates, scheduler))
