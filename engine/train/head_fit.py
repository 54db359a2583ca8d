"""Head training from a feature store (recipe key `feature_views`, with freeze="backbone").

The frozen backbone's features are computed once (engine/data/feature_store.py); fit() then runs its usual
epochs, validation, metrics rows and best.pt / last.pt over them, training only `model.get_classifier()`.
This module builds what fit() iterates: feature batches in the sampler's order and a train state whose
forward is the head. Checkpoints stay whole-model checkpoints (backbone + head), so predict and cam work.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel

from engine.data import feature_store as fs
from engine.data.cache import image_loader
from engine.data.loader import EpochSampler, FoldLoaders, ImageDataset, ShardSampler, default_num_workers
from engine.data.transforms import Normalize, build_eval_transform, build_train_transform
from engine.errors import UserError
from engine.recipe import Recipe
from engine.system.device import PRECISION_NAMES, autocast_dtype
from engine.system.distributed import Dist
from engine.train.state import TrainState, build_train_state


class FeatureBatches:
    """(features, targets) batches of stored rows in a sampler's order; epoch e reads view `view_of(e)`.

    Stands where a DataLoader stands for train_one_epoch and evaluate: len, iteration, `sampler`, `dataset`.
    """

    def __init__(self, store: fs.FeatureStore, view_of: Callable[[int], str], rows: np.ndarray,
                 targets: torch.Tensor, sampler, batch_size: int, drop_last: bool):
        self.store, self.view_of, self.rows, self.targets = store, view_of, torch.as_tensor(rows), targets
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.dataset = range(len(targets))
        self._loaded: tuple[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def features(self, view: str) -> torch.Tensor:
        if self._loaded is None or self._loaded[0] != view:  # one view in memory at a time
            self._loaded = (view, self.store.view(view))
        return self._loaded[1]

    def __iter__(self):
        items = list(self.sampler)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            chunk = items[start:start + self.batch_size]
            epoch = chunk[0][0] if isinstance(chunk[0], tuple) else 0  # EpochSampler yields (epoch, index)
            index = torch.as_tensor([i[1] if isinstance(i, tuple) else i for i in chunk])
            yield self.features(self.view_of(epoch))[self.rows[index]].float(), self.targets[index]


def store_rows(recipe: Recipe, train: pd.DataFrame, val: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The images the (training-views, eval-view) stores cover. With folds every row is some fold's training
    and some fold's validation row, so all folds share both stores; with one fold, its train and val rows."""
    if recipe.folds > 1:
        everything = pd.concat([train, val]).sort_index()
        return everything, everything
    return train, val


def store_keys(recipe: Recipe, model: torch.nn.Module, crop_pct: float, fold: int, train_rows: pd.DataFrame,
               eval_rows: pd.DataFrame, device: torch.device) -> tuple[dict, dict]:
    """Keys of the training-views store and the eval-view store of one fold."""
    weights = fs.weights_identity(recipe, model, fold)
    precision = PRECISION_NAMES[autocast_dtype(recipe.precision, device)]
    common = dict(model_name=recipe.model, weights=weights, image_size=recipe.image_size, crop_pct=crop_pct,
                  precision=precision, dtype=recipe.feature_dtype)
    return (fs.store_key(paths=list(train_rows["path"]), views=fs.train_views(recipe.feature_views), recipe=recipe,
                         **common),
            fs.store_key(paths=list(eval_rows["path"]), views=("eval",), **common))


def builder(recipe: Recipe, model: torch.nn.Module, data_cfg: dict, train_rows: pd.DataFrame,
            eval_rows: pd.DataFrame, d: Dist) -> fs.Builder:
    """How the stores compute features: the same pixels fit() would feed (cache, pre-resize, seeded transforms)."""
    crop_pct = data_cfg["crop_pct"]

    @functools.cache  # decode-cache work only when a store is actually built
    def datasets() -> tuple[ImageDataset, ImageDataset]:
        train_tf = build_train_transform(recipe.image_size, recipe.augment, recipe.random_erase, recipe.crop_scale)
        eval_tf = build_eval_transform(recipe.image_size, crop_pct)
        return (ImageDataset(train_rows["path"], train_rows["target"], train_tf, recipe.seed,
                             image_loader(recipe, train_rows["path"], crop_pct)),
                ImageDataset(eval_rows["path"], eval_rows["target"], eval_tf, recipe.seed,
                             image_loader(recipe, eval_rows["path"], crop_pct)))

    workers = recipe.num_workers if recipe.num_workers is not None else default_num_workers(d.local_world)
    return fs.Builder(model=model, normalize=Normalize(data_cfg["mean"], data_cfg["std"]).to(d.device),
                      images=lambda view: fs.view_images(view, *datasets()),
                      amp_dtype=autocast_dtype(recipe.precision, d.device), batch_size=recipe.batch_size * 2,
                      workers=workers)


def freeze_backbone_weights(model: torch.nn.Module) -> None:
    """Only the head's parameters require gradients (so the optimizer holds only them)."""
    model.requires_grad_(False)
    model.get_classifier().requires_grad_(True)


def build_head_training(recipe: Recipe, model: torch.nn.Module, data_cfg: dict, train: pd.DataFrame,
                        val: pd.DataFrame, num_classes: int, fold: int, d: Dist, show_progress: bool = True,
                        log: Callable[[str], None] = print) -> tuple[FoldLoaders, TrainState]:
    """Ensure this fold's feature stores, then the loaders and train state fit() runs over them."""
    model = model.to(d.device).eval()
    freeze_backbone_weights(model)
    train_rows, eval_rows = store_rows(recipe, train, val)
    train_key, eval_key = store_keys(recipe, model, data_cfg["crop_pct"], fold, train_rows, eval_rows, d.device)
    make = builder(recipe, model, data_cfg, train_rows, eval_rows, d)
    train_store = fs.ensure(train_key, make, d, show_progress, log)
    eval_store = fs.ensure(eval_key, make, d, show_progress, log)
    if not (train_store.built or eval_store.built):
        log(f"fold {fold}: feature stores reused ({train_store.folder.name}, {eval_store.folder.name})")
    views = fs.train_views(recipe.feature_views)
    sampler = EpochSampler(len(train), recipe.batch_size, True, recipe.seed + fold, d.rank, d.world)
    train_batches = FeatureBatches(train_store, lambda e: views[e % len(views)],
                                   train_rows.index.get_indexer(train.index), torch.tensor(train["target"].to_numpy()),
                                   sampler, recipe.batch_size, drop_last=len(sampler) > recipe.batch_size)
    val_batches = FeatureBatches(eval_store, lambda e: "eval", eval_rows.index.get_indexer(val.index),
                                 torch.tensor(val["target"].to_numpy()), ShardSampler(len(val), d.rank, d.world),
                                 recipe.batch_size * 2, drop_last=False)
    if len(train_batches) == 0 or len(val) < d.world:
        raise UserError(f"fold {fold}: {len(train)} train / {len(val)} val rows are too few for batch_size "
                        f"{recipe.batch_size} x {d.world} process(es); lower batch_size")
    s = build_train_state(recipe, model, num_classes, data_cfg, len(train_batches), d.device, fold, d.rank, False)
    head = s.model.get_classifier()
    on_cuda = d.device.type == "cuda"
    s.forward = DistributedDataParallel(head, device_ids=[d.device] if on_cuda else None) if d.enabled else head
    s.normalize = torch.nn.Identity()  # features are what the head sees, nothing to normalise
    return FoldLoaders(train_batches, val_batches, sampler, 0), s


def describe_stores(recipe: Recipe, table: pd.DataFrame, model: torch.nn.Module, data_cfg: dict,
                    device: torch.device) -> list[str]:
    """--dry-run lines: each store's size and whether it exists, and what head training does."""
    train_rows, eval_rows = store_rows(recipe, table[table["fold"] != 0], table[table["fold"] == 0])
    train_key, eval_key = store_keys(recipe, model, data_cfg["crop_pct"], 0, train_rows, eval_rows, device)
    make = fs.Builder(model=model.to(device), normalize=torch.nn.Identity(), images=lambda v: None, amp_dtype=None,
                      batch_size=1, workers=0)
    dim = fs.feature_dim(make, recipe.image_size)
    mixing = (f"mixup (ratio {recipe.mixup_ratio}) mixes the stored features and their targets"
              if recipe.mixup_ratio > 0 else "no mixing")
    return [f"feature store, training views: {fs.describe(train_key, dim)}",
            f"feature store, eval view: {fs.describe(eval_key, dim)}",
            f"head training: only model.get_classifier() trains; epoch e reads view e mod {recipe.feature_views}; "
            f"{mixing}; validation, OOF and predict.py read stored features"]
