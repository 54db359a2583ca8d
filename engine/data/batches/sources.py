"""The batch-source contract: what every path that feeds a model iterates (training, validation, out-of-fold,
predict, the LR test). engine/data/batches/factory.py picks a source; one file holds each kind:

    loader_source.LoaderBatches      CPU workers decode and augment ("workers"), or decode and lay a canvas
                                     the device warps ("device")
    resident_source.ResidentBatches  images resident on the device, packed once: a batch is a gather and a warp
    resident_source.ResidentEval     eval crops resident on the device
    store_source.FeatureBatches      a frozen backbone's stored features ("store")

A source yields (x, y) ready for the model: x on the device, augmented and normalised (or stored
features), y on the device. It has a length, `set_epoch(epoch, skip_batches)` (skip-ahead for a
mid-epoch resume), `rows` (what the source covers on every rank), `order()` (this rank's row indices
in the order batches come: evaluation gathers rows by them), `takes(model)`: the part of the model
its batches go into (the head, for stored features), and `wait_advice`: what to change when the steps
wait for its batches.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from engine.data.batches.loader import EpochSampler
from engine.system.device import device_feed


def count_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """Batches of `batch_size` over n rows (a last short one unless drop_last)."""
    return n // batch_size if drop_last else math.ceil(n / batch_size)


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

    def wait_advice(self, recipe, device: torch.device) -> str | None:
        """What to change when the steps wait for this source's batches (None: nothing to say)."""
        return None

    def stop(self) -> None:
        """End any worker processes (the fold is done)."""
