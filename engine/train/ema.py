"""An exponential moving average of the weights, updated after each applied optimizer step."""
from __future__ import annotations

import copy

import torch


class ModelEma:
    """Exponential moving average of a model's weights and buffers: ema = d * ema + (1 - d) * w.

    d warms up as min(decay, (1 + t) / (10 + t)) over the t updates so far: with a fixed 0.9998 the
    average would still be mostly the random initial weights after thousands of updates.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
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
