"""Datasets, samplers and loaders: uint8 images in, reproducible augmentation, DDP sharding.

Augmentation randomness is a pure function of (seed, epoch, sample index), so a run gives the same
batches whatever the number of workers, and a run resumed mid-epoch sees exactly what it would have.
"""
from __future__ import annotations

import atexit
import multiprocessing
import signal
import weakref
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from engine.data.batches.targets import training_targets
from engine.data.pixels.background import WHITE
from engine.data.pixels.device_augment import Canvas, pad_to_canvas
from engine.data.pixels.images import load_image
from engine.data.pixels.transforms import build_eval_transform, recipe_train_transform
from engine.data.stores.image_cache import DecodeEachTime, cache_short_side, image_loader
from engine.errors import UserError
from engine.system.device import cpu_count


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed one sample's augmentation uses in one epoch."""
    return (seed * 1_000_003 + epoch * 2_147_483_647 + index * 97_531) % (2**63 - 1)


class ImageDataset(Dataset):
    """Images and integer targets. Items are requested as (epoch, index) so augmentation is seeded."""

    def __init__(self, paths: Sequence[str], targets: Sequence[int] | None, transform: Callable | None,
                 seed: int = 0, loader: Callable[[int], torch.Tensor] | None = None):
        self.paths = list(paths)
        self.targets = torch.as_tensor(np.array(targets) if targets is not None else [-1] * len(self.paths))
        self.transform = transform
        self.seed = seed
        self.loader = loader or (lambda i: load_image(self.paths[i]))  # a cache can stand in here

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = item if isinstance(item, tuple) else (0, item)
        image = self.loader(index)
        if self.transform is None:  # augment_on="device": the image as decoded, augmented after the transfer
            return image, self.targets[index]
        rng = torch.default_generator  # torchvision's random transforms draw from it
        state = rng.get_state()  # the caller's RNG is left as it was
        # not torch.manual_seed: it also seeds every GPU and took 0.3 ms of each sample's ~1 ms
        rng.manual_seed(sample_seed(self.seed, epoch, index))
        try:
            image = self.transform(image)
        finally:
            rng.set_state(state)
        return image, self.targets[index]


class CanvasCollate:
    """augment_on="device": a batch of decoded images -> (Canvas padded with `fill`, targets)."""

    def __init__(self, fill: tuple[int, int, int] = WHITE):
        self.fill = fill

    def __call__(self, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[Canvas, torch.Tensor]:
        shared = torch.utils.data.get_worker_info() is not None  # sent to the main process without a copy
        return (pad_to_canvas([image for image, _ in batch], self.fill, shared),
                torch.stack([target for _, target in batch]))


class EpochSampler(Sampler):
    """Shuffled (or not), sharded across DDP ranks; yields (epoch, index); can skip already-seen batches, or
    re-shard what an epoch begun on another number of processes has left (`reshard`)."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1):
        self.inner = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, seed, rank, world
        self.batch_size = batch_size
        self.epoch = 0
        self.skip = 0
        self.rest: list[int] | None = None  # this rank's share of a re-sharded epoch
        self.plan_world, self.start, self.unseen, self.left = world, 0, 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Next pass is `epoch`, starting after `skip_batches` batches (mid-epoch resume)."""
        self.epoch, self.skip, self.rest = epoch, skip_batches, None
        self.plan_world, self.start, self.unseen = self.world, skip_batches * self.batch_size * self.world, 0
        self.inner.set_epoch(epoch)

    def plan(self, epoch: int, world: int) -> list[int]:
        """The epoch's global order as `world` processes train it: position k * world + r is rank r's k-th sample,
        cut where that run's loaders stop (whole batches when a shard holds more than one)."""
        shards = []
        for r in range(world):
            s = DistributedSampler(range(self.n), num_replicas=world, rank=r, shuffle=self.shuffle, seed=self.seed)
            s.set_epoch(epoch)
            shards.append(list(s))
        per_rank = len(shards[0])
        if per_rank > self.batch_size:
            per_rank -= per_rank % self.batch_size
        return [shards[r][k] for k in range(per_rank) for r in range(world)]

    def reshard(self, epoch: int, plan_world: int, consumed: int) -> None:
        """Next pass is the rest of `epoch`, begun on `plan_world` processes, after `consumed` positions of its
        global order: rank r takes every world-th remaining sample, so each one is trained on once. A last
        global batch too small to give every rank two samples (batch-norm needs two) is left out (`unseen`)."""
        rest = self.plan(epoch, plan_world)[consumed:]
        tail = len(rest) % (self.batch_size * self.world)
        self.unseen = tail if tail < 2 * self.world else 0
        rest = rest[:len(rest) - self.unseen]
        self.left = len(rest)
        self.epoch, self.plan_world, self.start, self.skip = epoch, plan_world, consumed, 0
        self.rest = rest[self.rank::self.world]

    def consumed(self, steps: int) -> int:
        """Positions of the epoch's global order trained on after `steps` full batches of this pass."""
        return self.start + steps * self.batch_size * self.world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = self.rest if self.rest is not None else list(self.inner)[self.skip * self.batch_size:]
        return iter([(self.epoch, i) for i in indices])

    def __len__(self) -> int:
        if self.rest is not None:
            return len(self.rest)
        return max(0, len(self.inner) - self.skip * self.batch_size)


UNREADABLE = -2  # the target an unreadable image gets from a MarkedDataset


class MarkedDataset(ImageDataset):
    """Eval images where an unreadable file becomes a blank page with target UNREADABLE instead of
    stopping the loader (the caller decides: name it and stop, or predict the rest)."""

    def __getitem__(self, item):
        try:
            return super().__getitem__(item)
        except UserError:
            return self.transform(torch.full((3, 8, 8), 255, dtype=torch.uint8)), torch.tensor(UNREADABLE)


def eval_dataset(paths: Sequence[str], image_size: int, crop_pct: float, as_validated: bool = True) -> ImageDataset:
    """Image files through the eval transform; `as_validated`: first pre-resized exactly as training's validation
    images are (engine.data.stores.image_cache.pre_resize), so a checkpoint sees what its validation score was measured on."""
    loader = DecodeEachTime(paths, cache_short_side(image_size, crop_pct)) if as_validated else None
    return MarkedDataset(paths, None, build_eval_transform(image_size, crop_pct), loader=loader)


class ShardSampler(Sampler):
    """Evaluation sharding without padding: rank r gets rows r, r + world, ... so nothing is counted twice."""

    def __init__(self, n: int, rank: int = 0, world: int = 1):
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def recipe_workers(recipe, local_world: int = 1) -> int:
    """The recipe's num_workers, or default_num_workers when it says None."""
    return recipe.num_workers if recipe.num_workers is not None else default_num_workers(local_world)


def default_num_workers(local_world: int = 1) -> int:
    """Leave one core per process for the training step, the rest decode and augment.

    With a GPU the workers are what keeps it fed (an H100 trains faster than 14 workers augment), so
    they get every spare core; on CPU the step computes on the same cores, so at most 8 workers.
    """
    spare = cpu_count() // max(1, local_world) - 1
    return max(0, spare if torch.cuda.is_available() else min(8, spare))


_LOADERS: "weakref.WeakSet[DataLoader]" = weakref.WeakSet()


def _ignore_stop_signals(worker_id: int) -> None:
    """Workers leave SIGTERM/SIGINT to the main process, which checkpoints and then ends them.

    torchrun and SLURM signal the whole process group; a worker killed first would crash the main
    process mid-checkpoint. The main process ends them with `stop_workers` (and at exit).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_workers() -> None:
    """End every loader's persistent workers now, also after an exception that left them running."""
    for loader in list(_LOADERS):
        stop_loader(loader)


def stop_loader(loader: DataLoader) -> None:
    """End one loader's persistent workers now."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


@atexit.register  # runs before multiprocessing's own exit hook, whose SIGTERM the workers ignore
def _kill_leftover_workers() -> None:
    stop_workers()
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()


def make_loader(dataset: Dataset, batch_size: int, sampler: Sampler, num_workers: int, train: bool,
                pin_memory: bool = False, collate_fn: Callable | None = None) -> DataLoader:
    """A DataLoader with the engine's defaults (persistent workers, prefetch, pinned memory on CUDA)."""
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_fn, drop_last=train and len(sampler) > batch_size, pin_memory=pin_memory,
                      generator=torch.Generator(), worker_init_fn=_ignore_stop_signals,  # its own: starting an epoch must not draw from the global RNG
                      persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None)
    if num_workers > 0:
        _LOADERS.add(loader)
    return loader


def augment_seed(recipe, fold: int) -> int:
    """The seed of a fold's training augmentation (both paths)."""
    return recipe.seed + 7919 * fold


def build_datasets(recipe, train: pd.DataFrame, val: pd.DataFrame, crop_pct: float,
                   fold: int, background: tuple[int, int, int] = WHITE,
                   augment_later: bool = False) -> tuple[ImageDataset, ImageDataset]:
    """Training and validation datasets of one fold (uint8 images, augmentation seeded per fold, filling with
    the paper colour `background`).

    augment_later: the training images come as decoded; engine/data/pixels/device_augment.py augments them.
    """
    train_tf = None if augment_later else recipe_train_transform(recipe, background)
    eval_tf = build_eval_transform(recipe.image_size, crop_pct)
    seed = augment_seed(recipe, fold)
    return (ImageDataset(train["path"], training_targets(train), train_tf, seed,
                         image_loader(recipe, train["path"], crop_pct)),
            ImageDataset(val["path"], val["target"], eval_tf, seed, image_loader(recipe, val["path"], crop_pct)))
