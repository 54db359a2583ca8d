"""Optimizers (no weight decay on norms and biases) and the learning rate as a pure function of the update count."""
from __future__ import annotations

import math

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices and kernels; leave 1-d tensors (norm scales, biases) and tokens undecayed."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith((".bias", "pos_embed", "cls_token", "reg_token", "dist_token"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov) over the model's trainable parameters."""
    groups = param_groups(model, weight_decay)
    if name == "AdamW":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    if name == "SGD":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    raise ValueError(f"unknown optimizer {name!r}")


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


class ModelEma:
    """Exponential moving average of a model's weights and buffers: ema = d * ema + (1 - d) * w.

    d warms up as min(decay, (1 + t) / (10 + t)) over the t updates so far: with a fixed 0.9998 the
    average would still be mostly the random initial weights after thousands of updates.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        import copy
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        ema = list(self.module.state_dict().values())
        live = list(model.state_dict().values())
        floats = [(e, w) for e, w in zip(ema, live) if e.is_floating_point()]
        torch._foreach_lerp_([e for e, _ in floats], [w for _, w in floats], 1 - self.current_decay())
        self.updates += 1
        for e, w in zip(ema, live):
            if not e.is_floating_point():
                e.copy_(w)
