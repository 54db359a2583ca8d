"""Batches already made, as a batch source (engine/data/batches/sources.py): the benches' ceiling and fixed inputs."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.data.batches.sources import BatchSource  # noqa: E402


class OnDevice(BatchSource):
    """uint8 (x, y) batches already made (on the device for a GPU ceiling), only normalised per step."""

    def __init__(self, batches: list, device: torch.device, normalize: torch.nn.Module):
        super().__init__(device, normalize)
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return (self.ready(x.to(self.device), y) for x, y in self.batches)
