"""An exponential moving average of the weights, updated after each applied optimizer step."""
from __future__ import annotations

import copy

import torch


class ModelEma:
    """Exponential moving average of a model's weights and buffers: ema = d * ema + (1 - d) * w.

    d warms up as min(decay, (1 + t) / (10 + t)) over the t updates so far: with a fixed 0.9998 the
    average would still be mostly the random initial weights after thousands of updates. t lives on the
    device, so an update whose step was skipped (a device flag) leaves the average as it was without
    the host ever reading the flag.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        device = next(iter(self.module.state_dict().values()), torch.zeros(())).device
        self.count = torch.zeros((), dtype=torch.float32, device=device)  # updates so far

    @property
    def updates(self) -> int:
        """Updates so far (reads the device: for checkpoints, not for the step)."""
        return int(self.count.item())

    @updates.setter
    def updates(self, n: int) -> None:
        self.count.fill_(n)

    def current_decay(self) -> float:
        return float(self._decay())

    def _decay(self) -> torch.Tensor:
        """min(decay, (1 + t) / (10 + t)) on the device."""
        return torch.clamp_max((1 + self.count) / (10 + self.count), self.decay)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, applied: torch.Tensor | None = None) -> None:
        """Move the average towards `model`; `applied` (a device bool): whether the step really happened."""
        ema = list(self.module.state_dict().values())
        live = list(model.state_dict().values())
        floats = [(e, w) for e, w in zip(ema, live) if e.is_floating_point()]
        on = torch.ones_like(self.count) if applied is None else applied.to(self.count.dtype)
        weight = (1 - self._decay()) * on
        # a weight of zero (a skipped step) leaves the average bitwise as it was
        torch._foreach_lerp_([e for e, _ in floats], [w for _, w in floats], [weight] * len(floats))
        self.count += on
        for e, w in zip(ema, live):
            if not e.is_floating_point():
                e.copy_(w)
