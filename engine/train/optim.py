"""Optimizers over the trainable parameters (no weight decay on norms and biases)."""
from __future__ import annotations

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


