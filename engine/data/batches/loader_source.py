"""Batches from a DataLoader's worker processes: "workers" (each image decoded and augmented in a worker) or
"device" (workers decode and lay a uint8 canvas, the device warps the whole batch: device_augment.py)."""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from engine.data.batches.loader import stop_loader
from engine.data.batches.sources import BatchSource
from engine.data.pixels.device_augment import DEVICE_PRESETS, Canvas, DeviceAugment


class LoaderBatches(BatchSource):
    """A DataLoader's batches moved to the device; with `augment`, the workers' canvases are warped there."""

    def __init__(self, loader: torch.utils.data.DataLoader, device: torch.device, normalize: torch.nn.Module | None,
                 augment: DeviceAugment | None = None, rank: int = 0, transform_of: Callable[[str], Callable] = None):
        super().__init__(device, normalize, rank)
        self.loader, self.augment, self.sampler = loader, augment, loader.sampler
        self.transform_of, self.preset = transform_of, None  # the workers' transform of a preset
        self.kind = "device" if augment is not None else "workers"
        self.workers, self.rows = loader.num_workers, len(loader.dataset)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step, (x, y) in enumerate(self.loader, start=self.skip):
            x = x.to(self.device, non_blocking=True)
            if isinstance(x, Canvas):  # augment_on="device": one batched warp of the uint8 canvas
                x = self.augment(x, self.epoch, step, self.rank)
            yield self.ready(x, y)

    def use_preset(self, preset: str) -> None:
        if self.augment is not None:
            return super().use_preset(preset)
        if preset != self.preset:
            self.preset = preset
            self.loader.dataset.transform = self.transform_of(preset)
            stop_loader(self.loader)  # persistent workers hold the old transform: the next pass starts new ones

    def keep_short_batch(self, keep: bool) -> None:
        batches = self.loader.batch_sampler  # the sampling runs in this process: workers see no change
        if not hasattr(self, "whole_batches"):
            self.whole_batches = batches.drop_last
        batches.drop_last = self.whole_batches and not keep

    def wait_advice(self, recipe, device: torch.device) -> str | None:
        fix = "a lighter augment" if recipe.cache in ("memory", "disk") else "cache='memory'"
        if device.type == "cuda" and recipe.augment in DEVICE_PRESETS:
            fix = "cache='device' (images resident on the GPU)"
        return f"raise num_workers (now {self.workers}) or use {fix}"

    def stop(self) -> None:
        stop_loader(self.loader)
