"""Batch sources from a feature store (recipe key `feature_views`, with freeze="backbone").

The frozen backbone's features are computed once (engine/data/stores/feature_store.py): the training views with
the recipe's own training transform (flips and fill included) and the eval view. fit() then runs its usual
epochs over them, training only `model.get_classifier()`; checkpoints stay whole-model checkpoints.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch

from engine.data.batches.loader import EpochSampler, ShardSampler, build_datasets, recipe_workers
from engine.data.batches.sources import BatchSource, count_batches
from engine.data.batches.targets import training_targets
from engine.data.pixels.transforms import Normalize
from engine.data.stores import feature_store as fs
from engine.errors import UserError
from engine.system.device import PRECISION_NAMES, autocast_dtype, device_feed
from engine.system.distributed import Dist


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
        return count_batches(len(self.sampler), self.batch_size, self.drop_last)

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


def store_rows(recipe, train: pd.DataFrame, val: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The images the (training-views, eval-view) stores cover. With folds every row is some fold's training
    and some fold's validation row, so all folds share both stores; with one fold, its train and val rows."""
    if recipe.folds > 1:
        everything = pd.concat([train, val]).sort_index()
        return everything, everything
    return train, val


def store_keys(recipe, model: torch.nn.Module, crop_pct: float, fold: int, train_rows: pd.DataFrame,
               eval_rows: pd.DataFrame, device: torch.device, fill: tuple[int, int, int]) -> tuple[dict, dict]:
    """Keys of the training-views store and the eval-view store of one fold."""
    weights = fs.weights_identity(recipe, model, fold)
    precision = PRECISION_NAMES[autocast_dtype(recipe.precision, device)]
    common = dict(model_name=recipe.model, weights=weights, image_size=recipe.image_size, crop_pct=crop_pct,
                  precision=precision, dtype=recipe.feature_dtype)
    train_paths, eval_paths = list(train_rows["path"]), list(eval_rows["path"])
    train_data = fs.data_identity(train_paths)  # reads every file: once, when both stores cover the same rows
    return (fs.store_key(paths=train_paths, views=fs.train_views(recipe.feature_views), recipe=recipe, fill=fill,
                         data=train_data, **common),
            fs.store_key(paths=eval_paths, views=("eval",), data=train_data if eval_paths == train_paths else None,
                         **common))


def builder(recipe, model: torch.nn.Module, data_cfg: dict, train_rows: pd.DataFrame,
            eval_rows: pd.DataFrame, d: Dist) -> fs.Builder:
    """How the stores compute features: the pixels fit() would feed through the backbone (the recipe's training
    transform, flips and fill included, seeded per view and row; the eval crop)."""

    @functools.cache  # decode-cache work only when a store is actually built
    def datasets():
        train_ds, _ = build_datasets(recipe, train_rows, train_rows.iloc[:0], data_cfg["crop_pct"], 0,
                                     data_cfg["background"])  # fold 0's seed: every fold shares the store
        _, eval_ds = build_datasets(recipe, eval_rows.iloc[:0], eval_rows, data_cfg["crop_pct"], 0)
        return train_ds, eval_ds

    workers = recipe_workers(recipe, d.local_world)
    return fs.Builder(model=model, normalize=Normalize(data_cfg["mean"], data_cfg["std"]).to(d.device),
                      images=lambda view: fs.view_images(view, *datasets()),
                      amp_dtype=autocast_dtype(recipe.precision, d.device), batch_size=recipe.batch_size * 2,
                      workers=workers)


def build_store_batches(recipe, model: torch.nn.Module, data_cfg: dict, train: pd.DataFrame, val: pd.DataFrame,
                        fold: int, d: Dist, show_progress: bool = True,
                        log: Callable[[str], None] = print) -> tuple[FeatureBatches, FeatureBatches]:
    """Ensure this fold's feature stores, then its (training, validation) feature batches."""
    model = model.to(d.device).eval()
    train_rows, eval_rows = store_rows(recipe, train, val)
    train_key, eval_key = store_keys(recipe, model, data_cfg["crop_pct"], fold, train_rows, eval_rows, d.device,
                                     data_cfg["background"])
    make = builder(recipe, model, data_cfg, train_rows, eval_rows, d)
    train_store = fs.ensure(train_key, make, d, show_progress, log)
    eval_store = fs.ensure(eval_key, make, d, show_progress, log)
    if not (train_store.built or eval_store.built):
        log(f"fold {fold}: feature stores reused ({train_store.folder.name}, {eval_store.folder.name})")
    views = fs.train_views(recipe.feature_views)
    sampler = EpochSampler(len(train), recipe.batch_size, True, recipe.seed + fold, d.rank, d.world)
    train_batches = FeatureBatches(train_store, lambda e: views[e % len(views)],
                                   train_rows.index.get_indexer(train.index), training_targets(train),
                                   sampler, recipe.batch_size, len(sampler) > recipe.batch_size, d.device)
    val_batches = FeatureBatches(eval_store, lambda e: "eval", eval_rows.index.get_indexer(val.index),
                                 torch.tensor(val["target"].to_numpy()), ShardSampler(len(val), d.rank, d.world),
                                 recipe.batch_size * 2, False, d.device)
    if len(train_batches) == 0:
        raise UserError(f"fold {fold}: {len(train)} train rows are too few for batch_size {recipe.batch_size} x "
                        f"{d.world} process(es); lower batch_size")
    return train_batches, val_batches


def describe_stores(recipe, table: pd.DataFrame, model: torch.nn.Module, data_cfg: dict,
                    device: torch.device) -> list[str]:
    """--dry-run lines: each store's size and whether it exists, and what head training does."""
    train_rows, eval_rows = store_rows(recipe, table[table["fold"] != 0], table[table["fold"] == 0])
    train_key, eval_key = store_keys(recipe, model, data_cfg["crop_pct"], 0, train_rows, eval_rows, device,
                                     data_cfg["background"])
    make = fs.Builder(model=model.to(device), normalize=torch.nn.Identity(), images=lambda v: None, amp_dtype=None,
                      batch_size=1, workers=0)
    dim = fs.feature_dim(make, recipe.image_size)
    mixing = (f"mixup (ratio {recipe.mixup_ratio}) mixes the stored features and their targets"
              if recipe.mixup_ratio > 0 else "no mixing")
    return [f"feature store, training views: {fs.describe(train_key, dim)}",
            f"feature store, eval view: {fs.describe(eval_key, dim)}",
            f"head training: only model.get_classifier() trains; epoch e reads view e mod {recipe.feature_views}; "
            f"{mixing}; validation, OOF and predict.py read stored features"]
