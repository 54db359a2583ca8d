"""Feature store (recipe key `feature_views`): a frozen backbone's pooled pre-logits features, computed once
and reused by every epoch, fold, rerun, sweep trial and predict call whose key matches.

    <cache>/features/<name>/meta.json     {"key", "views", "shape": [views, rows, dim], "dtype"}
    <cache>/features/<name>/features.bin  views x rows x dim, row-major
    <cache>/features/<name>.lock          held while one process checks or builds the store

Views: "eval" (the eval crop), its TTA flips ("eval_hflip", "eval_vflip", "eval_hvflip", as the recipe's `flip`)
and "train<v>": the recipe's training transform (flips, fill) seeded by sample_seed(seed, v, row). The key holds
the images' paths, sizes, times and contents. A build writes <name>.building/ and renames it into place after
meta.json: a killed build leaves nothing trusted; the next builder (holding the lock) removes the leftover. Under
torchrun rank 0 holds the lock and every rank computes its shard of rows into the one file (a shared folder).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import timm
import torch

from engine.data.pixels.background import WHITE
from engine.data.pixels.images import DECODER
from engine.data.stores.image_cache import disk_cache_root
from engine.system import distributed, lock, preemption
from engine.system.device import autocast
from engine.system.progress import progress

FORMAT = 2  # 2: training views with the recipe's flips and fill, eval flips per `flip`, content hashes
DTYPES = {"fp16": np.float16, "fp32": np.float32}
META, DATA = "meta.json", "features.bin"


def pooled_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The backbone's pooled pre-logits features of a normalised batch: what the head sees."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


EVAL_VIEWS = {(): "eval", (3,): "eval_hflip", (2,): "eval_vflip", (2, 3): "eval_hvflip"}  # flipped dims -> view


def train_views(k: int) -> tuple[str, ...]:
    return tuple(f"train{v}" for v in range(k))


def eval_views(flip_dims: Sequence[tuple[int, ...]]) -> tuple[str, ...]:
    """The stored eval views of TTA flips (engine.data.pixels.transforms.FLIP_VIEWS: "h" 2 views, "hv" 4)."""
    return tuple(EVAL_VIEWS[tuple(d)] for d in flip_dims)


def _file_sha1(path: str) -> str:
    st = os.stat(path)
    return _file_sha1_cached(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _file_sha1_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_identity(recipe, model: torch.nn.Module, fold: int) -> str:
    """Which weights the backbone starts from: a hash of pretrained_path, the timm tag, or the random-init seed."""
    if recipe.pretrained_path:
        return f"file-sha1:{_file_sha1(recipe.pretrained_path)}"
    if recipe.pretrained:
        tag = (getattr(model, "pretrained_cfg", None) or {}).get("tag")
        return f"timm:{recipe.model.split('.')[0]}.{tag}" if tag else f"timm:{recipe.model}:{timm.__version__}"
    return f"random-init:seed{recipe.seed + fold}:timm{timm.__version__}"  # fit() seeds seed + fold before building


def backbone_tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every weight and buffer outside `model.get_classifier()`, by name."""
    head = {id(t) for t in (*model.get_classifier().parameters(), *model.get_classifier().buffers())}
    return [(n, t) for n, t in model.state_dict(keep_vars=True).items() if id(t) not in head]


def tensor_identity(model: torch.nn.Module) -> str:
    """A hash of the backbone's weights themselves (predict: the checkpoint may come from anywhere)."""
    digest = hashlib.sha1()
    for name, t in backbone_tensors(model):
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"tensors-sha1:{digest.hexdigest()}"


def data_identity(paths: Sequence[str]) -> str:
    """A hash of the images: their paths, sizes, modification times and bytes, in order (an image edited in
    place keeping its size and time still changes the key; reading the files costs far less than a build)."""
    digest = hashlib.sha1()
    for p in paths:
        st = os.stat(p)
        digest.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        with open(p, "rb") as f:
            digest.update(hashlib.sha1(f.read()).digest())
    return digest.hexdigest()


def store_key(model_name: str, weights: str, image_size: int, crop_pct: float, paths: Sequence[str],
              views: Sequence[str], precision: str, dtype: str, recipe=None, pre_resized: bool = True,
              fill: tuple[int, int, int] = WHITE, data: str | None = None) -> dict:
    """Everything that changes a stored feature; `recipe` (for training views) adds the augmentation and seed.
    `data`: data_identity(paths) when the caller already read the files."""
    key = {"format": FORMAT, "model": model_name, "weights": weights, "image_size": image_size,
           "crop_pct": round(float(crop_pct), 6), "pre_resized": pre_resized, "views": list(views),
           "rows": len(paths), "data": data or data_identity(paths), "precision": precision, "dtype": dtype, "decoder": DECODER}
    if any(v.startswith("train") for v in views):
        key["augment"] = {k: getattr(recipe, k) for k in ("augment", "crop_scale", "random_erase", "seed")}
        key["augment"]["flip"] = recipe.flip
        key["augment"]["fill"] = [int(c) for c in fill]  # what the training transform paints new pixels with
    return key


def store_name(key: dict) -> str:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    kind = "train" if any(v.startswith("train") for v in key["views"]) else "eval"
    return f"{key['model'].replace('/', '_')}-{kind}{len(key['views'])}-{key['image_size']}px-{digest}"


def store_root() -> Path:
    return disk_cache_root() / "features"


@dataclass
class FeatureStore:
    """A finished store: `view(name)` -> rows x dim tensor (the store's dtype; callers cast per batch)."""
    folder: Path
    views: tuple[str, ...]
    shape: tuple[int, int, int]
    dtype: str
    built: bool = False  # whether this call built it (False: reused)

    def view(self, name: str) -> torch.Tensor:
        data = np.memmap(self.folder / DATA, dtype=DTYPES[self.dtype], mode="r", shape=self.shape)
        return torch.from_numpy(np.array(data[self.views.index(name)]))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(DTYPES[self.dtype]).itemsize


def open_trusted(folder: Path, key: dict) -> FeatureStore | None:
    """The store in folder if it is complete and was built for exactly this key, else None."""
    try:
        meta = json.loads((folder / META).read_text())
        store = FeatureStore(folder, tuple(meta["views"]), tuple(meta["shape"]), meta["dtype"])
        complete = meta.get("key") == key and (folder / DATA).stat().st_size == store.nbytes
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return store if complete else None


@contextmanager
def _main_holds_lock(path: Path, is_main: bool):
    with lock.waiting(path) if is_main else contextlib.nullcontext():  # another run building it: wait
        yield


class ViewImages(torch.utils.data.Dataset):
    """One view of a dataset by row: train view v asks the (seeded) training dataset for item (v, row)."""

    def __init__(self, dataset: torch.utils.data.Dataset, train_view: int | None = None):
        self.dataset, self.train_view = dataset, train_view

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, row: int):
        return self.dataset[(self.train_view, row) if self.train_view is not None else row]


def view_images(view: str, train: torch.utils.data.Dataset | None, eval_: torch.utils.data.Dataset | None):
    """The dataset a view name reads: train<v> from the training dataset, eval[_hflip] from the eval one."""
    if view.startswith("train"):
        return ViewImages(train, int(view[len("train"):]))
    return ViewImages(eval_)


@dataclass
class Builder:
    """How to compute features: the model (eval mode, on its device), normalisation and a dataset per view."""
    model: torch.nn.Module
    normalize: torch.nn.Module
    images: Callable[[str], torch.utils.data.Dataset]  # view name -> dataset of uint8 images by row
    amp_dtype: torch.dtype | None
    batch_size: int
    workers: int


@torch.inference_mode()
def feature_dim(b: Builder, image_size: int) -> int:
    """Width of the pooled features (one blank image through the backbone)."""
    device = next(b.model.parameters()).device
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    return pooled_features(b.model.eval(), x).shape[-1]


@torch.inference_mode()
def _compute(b: Builder, views: Sequence[str], rows: list[int], out: np.memmap, show: bool) -> None:
    """Write the features of `rows` (this rank's shard) for every view into out[view, row]."""
    b.model.eval()
    device = next(b.model.parameters()).device
    for v, view in enumerate(views):
        dataset = torch.utils.data.Subset(b.images(view), rows)
        loader = torch.utils.data.DataLoader(dataset, batch_size=b.batch_size, num_workers=b.workers,
                                             pin_memory=device.type == "cuda")
        start = 0
        for x, _ in progress(loader, len(loader), f"features {view} ({v + 1}/{len(views)})", show):
            x = b.normalize(x.to(device, non_blocking=True))
            dims = next((d for d, name in EVAL_VIEWS.items() if name == view), ())
            if dims:
                x = x.flip(dims)  # a flip predict's TTA adds
            with autocast(device, b.amp_dtype):
                f = pooled_features(b.model, x)
            out[v, rows[start:start + len(f)]] = f.float().cpu().numpy().astype(out.dtype)
            start += len(f)
            preemption.check("building the feature store")  # within a batch of SIGTERM, not after every view
    out.flush()


def ensure(key: dict, builder: Builder, d, show_progress: bool = True, log: Callable[[str], None] = print,
           root: Path | None = None) -> FeatureStore:
    """The store for `key`: reused when a finished one exists, else built once (other processes wait)."""
    root = root or store_root()
    name = store_name(key)
    folder, tmp = root / name, root / f"{name}.building"
    if not d.enabled:  # under torchrun every rank must reach the same collectives: rank 0 decides below
        store = open_trusted(folder, key)
        if store is not None:
            return store
    views = tuple(key["views"])
    with _main_holds_lock(root / f"{name}.lock", d.is_main):
        plan = None
        if d.is_main:
            store = open_trusted(folder, key)  # built while we waited for the lock
            if store is None:
                shutil.rmtree(tmp, ignore_errors=True)  # a killed build's leftover: nobody else builds now
                shutil.rmtree(folder, ignore_errors=True)  # damaged or foreign: never trusted
                dim = feature_dim(builder, key["image_size"])
                shape = (len(views), key["rows"], dim)
                tmp.mkdir(parents=True)
                np.memmap(tmp / DATA, dtype=DTYPES[key["dtype"]], mode="w+", shape=shape).flush()
                plan = shape
                size = np.prod(shape) * np.dtype(DTYPES[key["dtype"]]).itemsize
                log(f"feature store: building {len(views)} view(s) x {key['rows']} images x {dim} features "
                    f"({size / 2**20:.1f} MiB {key['dtype']}) in {folder}")
        plan = distributed.broadcast_object(plan)
        if plan is not None:
            try:
                out = np.memmap(tmp / DATA, dtype=DTYPES[key["dtype"]], mode="r+", shape=tuple(plan))
                _compute(builder, views, list(range(d.rank, key["rows"], d.world)), out, show_progress and d.is_main)
                del out
                distributed.barrier()
                if d.is_main:
                    meta = {"key": key, "views": list(views), "shape": list(plan), "dtype": key["dtype"]}
                    (tmp / META).write_text(json.dumps(meta))
                    for part in (DATA, META):  # on disk before the rename makes the store trusted
                        with open(tmp / part, "rb+") as f:
                            os.fsync(f.fileno())
                    os.replace(tmp, folder)
            except BaseException:
                if d.is_main:
                    shutil.rmtree(tmp, ignore_errors=True)
                raise
        distributed.barrier()
    store = open_trusted(folder, key)
    if store is None:
        raise RuntimeError(f"feature store {folder} is missing after its build")
    store.built = plan is not None
    return store


def describe(key: dict, dim: int) -> str:
    """One --dry-run line: the store's size and whether it already exists."""
    size = len(key["views"]) * key["rows"] * dim * np.dtype(DTYPES[key["dtype"]]).itemsize
    folder = store_root() / store_name(key)
    state = "exists, reused" if open_trusted(folder, key) else "will be built"
    return (f"{len(key['views'])} view(s) x {key['rows']} images x {dim} features {key['dtype']} = "
            f"{size / 2**20:.1f} MiB at {folder} ({state})")
