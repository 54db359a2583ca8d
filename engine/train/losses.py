"""Losses on soft targets: one interface for plain, smoothed and mixed batches.

Targets are always class-probability rows (one-hot, smoothed, or a mix of two); the loss is computed
in fp32 from log-softmax even under autocast, so it never takes log(0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth_targets(targets: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Integer targets -> rows of (1 - smoothing) one-hot + smoothing / num_classes."""
    off = smoothing / num_classes
    soft = torch.full((targets.shape[0], num_classes), off, device=targets.device)
    return soft.scatter_(1, targets.view(-1, 1).long(), 1.0 - smoothing + off)


def _at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    return logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp16/bf16 -> fp32, fp64 stays


class SoftTargetCrossEntropy(torch.nn.Module):
    """CE = -sum_c t_c log p_c, averaged over the batch."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(_at_least_fp32(logits), dim=-1)
        return -(targets * log_p).sum(dim=-1).mean()


class FocalLoss(torch.nn.Module):
    """Multi-class softmax focal loss, FL = -alpha * sum_c t_c (1 - p_c)^gamma log p_c (batch mean)."""

    def __init__(self, alpha: float = 1.0, gamma: float = 2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(_at_least_fp32(logits), dim=-1)
        weight = (1 - log_p.exp()).clamp(min=0).pow(self.gamma)  # clamp: p can round to 1 + eps
        return -(self.alpha * targets * weight * log_p).sum(dim=-1).mean()


def build_loss(loss: str, focal_alpha: float = 1.0, focal_gamma: float = 2.0) -> torch.nn.Module:
    """The recipe's `loss` on soft targets."""
    if loss == "CE":
        return SoftTargetCrossEntropy()
    if loss == "Focal":
        return FocalLoss(focal_alpha, focal_gamma)
    raise ValueError(f"unknown loss {loss!r}")
