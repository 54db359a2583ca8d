"""The one factory of batch sources: from the recipe and the device it picks where a fold's batches come
from, says why, and builds them (engine/data/batches/sources.py holds the contract, one file each kind).

    store      feature_views > 0: stored backbone features, only the head trains
    resident   cache="device" (or "auto" on CUDA when the images fit in half its free memory): images
               decoded once into device memory, every batch laid, warped and erased there
    device     augment_on="device" (or "auto" on CUDA, when it measures faster than the workers: feed_race.py):
               workers decode and pad, the device warps
    workers    otherwise: workers decode and augment each image (the fastest on a CPU, measured)

Whatever CUDA picks by default, the CPU suite runs too: each path works on any device.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
import torch

from engine.data.batches import feed_race, resident
from engine.data.batches.loader import (CanvasCollate, EpochSampler, ShardSampler, augment_seed, build_datasets,
                                        eval_dataset, make_loader, recipe_workers)
from engine.data.batches.loader_source import LoaderBatches
from engine.data.batches.resident_source import ResidentBatches, ResidentEval
from engine.data.batches.sources import BatchSource
from engine.data.batches.store_source import build_store_batches
from engine.data.batches.targets import training_targets
from engine.data.pixels.device_augment import DEVICE_PRESETS, DeviceAugment
from engine.data.pixels.transforms import DEFAULT_CROP_PCT, Normalize, recipe_train_transform
from engine.errors import UserError
from engine.recipe import augment_at, augment_presets
from engine.system import device as dev
from engine.system.distributed import Dist

PATH_NAMES = {"workers": "augmented in the loader workers", "device": "decoded by the workers, augmented on the device",
              "resident": "images resident on the device, augmented there", "store": "stored backbone features"}


@dataclass
class FoldBatches:
    """One fold's batch sources, and which path they take and why (said at the start and by --dry-run)."""
    train: BatchSource
    val: BatchSource
    path: str  # "workers" | "device" | "resident" | "store"
    why: str

    def stop(self) -> None:
        """End both sources' workers now (the fold is done; nothing else would end them until exit)."""
        self.train.stop()
        self.val.stop()


def choose_path(recipe, device: torch.device, paths: Sequence[str] | None = None,
                crop_pct: float = DEFAULT_CROP_PCT) -> tuple[str, str]:
    """(path, why) for this recipe on `device`; `paths`: the images, to check that resident ones would fit."""
    if recipe.feature_views:
        return "store", f"feature_views={recipe.feature_views}: only the head trains, from stored backbone features"
    if recipe.cache == "device":
        return "resident", "cache='device'"
    preset_ok = all(p in DEVICE_PRESETS for p in augment_presets(recipe))
    on_device = dev.augment_on(recipe.augment_on, device, preset_ok) == "device"
    not_resident = ""
    if recipe.cache == "auto" and on_device and device.type == "cuda":
        fits, line = resident.fit_line(paths, recipe.image_size, crop_pct, device) if paths else (True, "")
        if fits:
            return "resident", f"cache='auto' on CUDA{': ' + line if line else ''}"
        not_resident = f"; not resident: {line}"
    if on_device:
        return "device", (f"augment_on={recipe.augment_on!r}" + (" on CUDA" if recipe.augment_on == "auto" else "")
                          + f", host cache {recipe.cache!r}{not_resident}")
    if recipe.augment_on == "workers":
        return "workers", "augment_on='workers'"
    if not preset_ok:
        return "workers", f"augment={recipe.augment!r} runs only in the workers"
    return "workers", "augment_on='auto' on the CPU (per-image transforms in the workers measured faster there)"


def device_augment(recipe, fold: int, fill: tuple[int, int, int]) -> DeviceAugment:
    """The recipe's batched augmentation of one fold (seeded as the workers' is)."""
    return DeviceAugment(recipe.image_size, recipe.crop_scale, recipe.augment, recipe.random_erase,
                         augment_seed(recipe, fold), tuple(fill), recipe.flip)


def build_fold_batches(recipe, model: torch.nn.Module, data_cfg: dict, train: pd.DataFrame, val: pd.DataFrame,
                       fold: int, d: Dist, show_progress: bool = True, log: Callable[[str], None] = print,
                       saved_path: str | None = None, race_feeds: bool | None = None) -> FoldBatches:
    """One fold's training and validation sources (`model` only builds feature stores), checked for size.
    `saved_path`: the path a resumed fold trained on (kept); `race_feeds`: with augment_on="auto", measure the
    device canvas against the workers and keep the faster (None: on CUDA, where which wins depends on the machine)."""
    crop_pct, fill, device = data_cfg["crop_pct"], tuple(data_cfg["background"]), d.device
    path, why = choose_path(recipe, device, [*train["path"], *val["path"]], crop_pct)
    preset_ok = all(p in DEVICE_PRESETS for p in augment_presets(recipe))
    if 0 < len(val) < d.world:
        raise UserError(f"fold {fold}: {len(val)} validation rows for {d.world} processes; "
                        f"raise val_fraction or use fewer processes")
    if path == "store":  # (an augment_schedule cannot change stored views: the recipe check refuses it)
        train_b, val_b = build_store_batches(recipe, model, data_cfg, train, val, fold, d, show_progress, log)
        return FoldBatches(train_b, val_b, path, why)
    normalize = Normalize(data_cfg["mean"], data_cfg["std"], dev.use_channels_last(recipe.channels_last, device))
    normalize = normalize.to(device)
    sampler = EpochSampler(len(train), recipe.batch_size, True, recipe.seed + fold, d.rank, d.world)
    val_sampler = ShardSampler(len(val), d.rank, d.world)
    workers = recipe_workers(recipe, d.local_world)
    augment = device_augment(recipe, fold, fill) if path in ("device", "resident") else None
    if path == "resident":
        if recipe.cache == "device":
            resident.check_fits([*train["path"], *val["path"]], recipe.image_size, crop_pct, device)
        images = resident.training_images(recipe.image_size, crop_pct, device, workers).get(list(train["path"]),
                                                                                              show_progress)
        crops = resident.eval_crops(recipe.image_size, crop_pct, device, workers).get(list(val["path"]), show_progress)
        train_b = ResidentBatches.from_images(images, training_targets(train), sampler, recipe.batch_size, augment,
                                              fill, device, normalize, d.rank)
        val_b = ResidentEval(crops, torch.tensor(val["target"].to_numpy()), val_sampler, recipe.batch_size * 2,
                             device, normalize)
    else:
        train_ds, val_ds = build_datasets(recipe, train, val, crop_pct, fold, fill, augment_later=augment is not None)
        pin = device.type == "cuda"

        def loader_batches(canvas: bool) -> LoaderBatches:
            """Workers that lay canvases for the device's warp (`canvas`) or augment each image themselves."""
            dataset = copy.copy(train_ds)  # the same images (and cache), another transform
            dataset.transform = None if canvas else recipe_train_transform(recipe, fill)
            return LoaderBatches(make_loader(dataset, recipe.batch_size, sampler, workers, True, pin,
                                             CanvasCollate(fill) if canvas else None),
                                 device, normalize, device_augment(recipe, fold, fill) if canvas else None, d.rank,
                                 lambda preset: recipe_train_transform(recipe, fill, preset))
        if saved_path in ("workers", "device") and saved_path != path and (saved_path == "workers" or preset_ok):
            path, why = saved_path, f"as this run began ({PATH_NAMES[saved_path]})"  # a resume draws as before
            train_b = loader_batches(path == "device")
        elif recipe.augment_on == "auto" and preset_ok and (race_feeds if race_feeds is not None
                                                            else device.type == "cuda"):
            canvas_b, workers_b = loader_batches(True), loader_batches(False)
            path, measured = feed_race.race({"device": canvas_b, "workers": workers_b}, device)
            train_b, loser = (canvas_b, workers_b) if path == "device" else (workers_b, canvas_b)
            loser.stop()
            why = f"augment_on='auto' on {device.type}: {measured}"
        else:
            train_b = loader_batches(path == "device")
        val_b = LoaderBatches(make_loader(val_ds, recipe.batch_size * 2, val_sampler, workers, False, pin),
                              device, normalize)
    if recipe.augment_schedule:
        train_b.preset_at = lambda epoch: augment_at(recipe, epoch)
    if len(train_b) == 0:
        raise UserError(f"fold {fold}: no training batches (batch_size {recipe.batch_size} x {d.world} process(es) > "
                        f"{len(train)} rows); lower batch_size")
    return FoldBatches(train_b, val_b, path, why)


def prediction_batches(paths: Sequence[str], size: int, crop_pct: float, pre_resized: bool, device: torch.device,
                       batch_size: int, workers: int, resident_crops: bool | None = None,
                       show_progress: bool = True) -> BatchSource:
    """Eval crops of `paths`, in order, unnormalised (each model normalises its own way), with UNREADABLE
    targets for images that cannot be decoded (loader.MarkedDataset). Resident on the device when
    `resident_crops` (None: on CUDA when the pre-resized crops fit in resident.FIT_SHARE of its free memory),
    decoded by the loader workers otherwise."""
    n, sampler = len(paths), ShardSampler(len(paths))
    if resident_crops is None:
        resident_crops = device.type == "cuda" and pre_resized and \
            n * 3 * size * size <= resident.FIT_SHARE * resident.free_bytes(device)
    if resident_crops and pre_resized:
        try:
            crops = resident.eval_crops(size, crop_pct, device, workers).get(list(paths), show_progress)
        except UserError as e:  # an unreadable image: the workers mark it, and the caller says what to do
            if show_progress:
                print(f"note: {e}; predicting through the loader workers instead")
        else:
            return ResidentEval(crops, torch.zeros(n, dtype=torch.int64), sampler, batch_size, device, None)
    loader = make_loader(eval_dataset(paths, size, crop_pct, as_validated=pre_resized), batch_size, sampler, workers,
                         False, device.type == "cuda")
    return LoaderBatches(loader, device, None)
