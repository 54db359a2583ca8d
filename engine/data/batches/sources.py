"""Batch sources: what every path that feeds a model iterates (training, validation, out-of-fold, predict).

A source yields (x, y) ready for the model: x on the device, augmented and normalised (or stored
features), y on the device. It has a length, `set_epoch(epoch, skip_batches)` (skip-ahead for a
mid-epoch resume), `rows` (what the source covers on every rank), `order()` (this rank's row indices
in the order batches come: evaluation gathers rows by them) and `takes(model)`: the part of the model
its batches go into (the head, for stored features). engine/data/batches/factory.py picks them.

    LoaderBatches      CPU workers decode and augment ("workers"), or decode and lay a canvas the device
                       warps ("device")
    ResidentBatches    images resident on the device: every batch laid, warped and erased there ("resident")
    ResidentEval       eval crops resident on the device
    FeatureBatches     a frozen backbone's stored features ("store")
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from engine.data.batches.loader import EpochSampler, stop_loader
from engine.data.pixels.device_augment import Canvas, DeviceAugment, pad_to_canvas
from engine.system.device import device_feed


class BatchSource:
    """The contract; subclasses set `kind`, `rows`, `workers` and implement __len__ and __iter__."""
    kind = "workers"
    workers = 0
    rows = 0
    sampler = None  # EpochSampler (training) or ShardSampler (evaluation)
    drop_last = False  # whether a last short batch is left out
    preset_at: Callable[[int], str] | None = None  # training: the augment preset of each epoch (augment_schedule)

    def __init__(self, device: torch.device, normalize: torch.nn.Module | None, rank: int = 0):
        self.device, self.normalize, self.rank = device, normalize, rank
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0, reshard: tuple[int, int] | None = None) -> None:
        """Next pass is `epoch`, starting after `skip_batches` batches (a mid-epoch resume); `reshard`
        (plan_world, consumed): the rest of an epoch begun on another number of processes (EpochSampler.reshard),
        whose steps are numbered from `skip_batches` on."""
        self.epoch, self.skip = epoch, skip_batches
        if isinstance(self.sampler, EpochSampler):
            if reshard is None:
                self.sampler.set_epoch(epoch, skip_batches)
            else:
                self.sampler.reshard(epoch, *reshard)
            self.keep_short_batch(reshard is not None)
        if self.preset_at is not None:
            self.use_preset(self.preset_at(epoch))

    def use_preset(self, preset: str) -> None:
        """Augment with `preset` from now on (staged augmentation)."""
        self.augment.set_preset(preset)

    def keep_short_batch(self, keep: bool) -> None:
        """Train on a last short batch too (a re-sharded epoch leaves none of its samples out)."""
        if not hasattr(self, "whole_batches"):
            self.whole_batches = self.drop_last
        self.drop_last = self.whole_batches and not keep

    def order(self) -> list[int]:
        """This rank's row indices in the order its batches come."""
        return [i[1] if isinstance(i, tuple) else i for i in self.sampler]

    def takes(self, model: torch.nn.Module) -> torch.nn.Module:
        """The part of the model this source's batches go into."""
        return model

    def ready(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised pixels and targets on the device."""
        x = self.normalize(x) if self.normalize is not None else x
        return x, device_feed(y, self.device) if y.device.type == "cpu" else y

    def stop(self) -> None:
        """End any worker processes (the fold is done)."""


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

    def stop(self) -> None:
        stop_loader(self.loader)


def _batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else math.ceil(n / batch_size)


class ResidentBatches(BatchSource):
    """Training batches from images resident on the device, in the sampler's order, drawn exactly as the
    canvas path draws them (same canvas, same DeviceAugment call), so the two give the same pixels."""
    kind = "resident"

    def __init__(self, images: Sequence[torch.Tensor], targets: torch.Tensor, sampler: EpochSampler, batch_size: int,
                 augment: DeviceAugment, fill: tuple[int, int, int], device: torch.device,
                 normalize: torch.nn.Module, rank: int = 0):
        super().__init__(device, normalize, rank)
        self.images, self.targets, self.sampler, self.batch_size = list(images), targets, sampler, batch_size
        self.augment, self.fill, self.rows = augment, fill, len(self.images)
        self.drop_last = len(sampler) > batch_size  # as make_loader's training loaders

    def __len__(self) -> int:
        return _batches(len(self.sampler), self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        for k in range(len(self)):
            rows = order[k * self.batch_size:(k + 1) * self.batch_size]
            canvas = pad_to_canvas([self.images[i] for i in rows], self.fill)
            yield self.ready(self.augment(canvas, self.epoch, self.skip + k, self.rank), self.targets[rows])


class ResidentEval(BatchSource):
    """Evaluation batches of eval crops resident on the device, rank-sharded without padding."""
    kind = "resident"

    def __init__(self, crops: Sequence[torch.Tensor], targets: torch.Tensor, sampler, batch_size: int,
                 device: torch.device, normalize: torch.nn.Module):
        super().__init__(device, normalize)
        self.crops, self.targets, self.sampler, self.batch_size = list(crops), targets, sampler, batch_size
        self.rows = len(self.crops)

    def __len__(self) -> int:
        return _batches(len(self.sampler), self.batch_size, False)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        for k in range(len(self)):
            rows = order[k * self.batch_size:(k + 1) * self.batch_size]
            yield self.ready(torch.stack([self.crops[i] for i in rows]), self.targets[rows])


class FeatureBatches(BatchSource):
    """(features, targets) of stored rows in a sampler's order; epoch e reads the store view `view_of(e)`."""
    kind = "store"

    def __init__(self, store, view_of: Callable[[int], str], rows: np.ndarray, targets: torch.Tensor, sampler,
                 batch_size: int, drop_last: bool, device: torch.device):
        super().__init__(device, None)
        self.store, self.view_of, self.store_rows, self.targets = store, view_of, torch.as_tensor(rows), targets
        self.sampler, self.batch_size, self.drop_last, self.rows = sampler, batch_size, drop_last, len(targets)
        self._loaded: tuple[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return _batches(len(self.sampler), self.batch_size, self.drop_last)

    def takes(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.get_classifier()  # stored features are what the head sees

    def features(self, view: str) -> torch.Tensor:
        if self._loaded is None or self._loaded[0] != view:  # one view in memory at a time
            self._loaded = (view, self.store.view(view))
        return self._loaded[1]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(self.order(), dtype=torch.int64)
        features = self.features(self.view_of(self.epoch))
        for k in range(len(self)):
            index = order[k * self.batch_size:(k + 1) * self.batch_size]
            x = device_feed(features[self.store_rows[index]], self.device).float()
            yield self.ready(x, self.targets[index])
