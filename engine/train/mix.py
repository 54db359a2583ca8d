"""Mixup and cutmix on a batch, on the device, after the transfer.

Which batches mix, with what lam and which partners is a pure function of (seed, epoch, step):
runs repeat, and a resumed run mixes exactly as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.system.device import device_feed
from engine.train.losses import smooth_targets


@dataclass
class MixInfo:
    mode: str  # "none" | "mixup" | "cutmix"
    lam: float  # weight of each sample's own label
    partner: torch.Tensor | None  # index of each sample's partner in the batch


def cutmix_box(lam: float, height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """A box of area ~(1 - lam) centred uniformly at random, clipped to the image: (y0, y1, x0, x1)."""
    cut = (1 - lam) ** 0.5
    h, w = int(height * cut), int(width * cut)
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    return max(cy - h // 2, 0), min(cy + h // 2, height), max(cx - w // 2, 0), min(cx + w // 2, width)


class Mixer:
    """Mix a batch with probability mixup_ratio (mixup) or cutmix_ratio (cutmix), never both."""

    def __init__(self, num_classes: int, mixup_ratio: float = 0.0, cutmix_ratio: float = 0.0,
                 alpha: float = 1.0, smoothing: float = 0.0, seed: int = 0):
        if mixup_ratio + cutmix_ratio > 1 + 1e-9:
            raise ValueError("mixup_ratio + cutmix_ratio must be <= 1")
        self.num_classes, self.smoothing, self.seed = num_classes, smoothing, seed
        self.mixup_ratio, self.cutmix_ratio, self.alpha = mixup_ratio, cutmix_ratio, alpha

    @property
    def active(self) -> bool:
        return self.mixup_ratio + self.cutmix_ratio > 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int = 0, step: int = 0, rank: int = 0,
                 enabled: bool = True) -> tuple[torch.Tensor, torch.Tensor, MixInfo]:
        """Images and targets (integer classes, or N x C probability rows that distillation made, already smoothed)
        -> (possibly mixed) images, soft targets and what was done."""
        soft = y.float() if y.is_floating_point() else smooth_targets(y, self.num_classes, self.smoothing)
        if not (enabled and self.active):
            return x, soft, MixInfo("none", 1.0, None)
        g = torch.Generator().manual_seed(hash((self.seed, epoch, step, rank)) % (2**63))
        u = float(torch.rand((), generator=g))
        mode = "mixup" if u < self.mixup_ratio else "cutmix" if u < self.mixup_ratio + self.cutmix_ratio else "none"
        if mode == "none" or x.shape[0] < 2:
            return x, soft, MixInfo("none", 1.0, None)
        lam = float(np.random.default_rng(int(torch.randint(2**62, (1,), generator=g))).beta(self.alpha, self.alpha))
        order = torch.randperm(x.shape[0], generator=g)
        partner = torch.empty_like(order)
        partner[order] = order.roll(-1)  # a random cycle: nobody is their own partner
        partner = device_feed(partner, x.device)
        if mode == "mixup":
            x = x.lerp(x[partner], 1 - lam)  # x is already float: mixing runs after normalisation
        else:
            y0, y1, x0, x1 = cutmix_box(lam, x.shape[-2], x.shape[-1], g)
            x = x.clone()
            x[..., y0:y1, x0:x1] = x[partner, ..., y0:y1, x0:x1]  # gather the box only
            lam = 1 - (y1 - y0) * (x1 - x0) / (x.shape[-2] * x.shape[-1])
        soft = lam * soft + (1 - lam) * soft[partner]
        return x, soft, MixInfo(mode, lam, partner)

