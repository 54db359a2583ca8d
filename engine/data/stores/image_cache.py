"""Decode-once image cache (recipe key `cache`): decode and pre-resize each image once, then augment
every epoch from uint8 bytes that all dataloader workers (and DDP ranks on one machine) share.

    cache="none"    decode + pre-resize on every access (the same tensors the cache gives)
    cache="memory"  a store in /dev/shm owned by this run; removed at exit (or by the next run if killed)
    cache="disk"    a store under $SKETCHBOOK_CACHE_DIR (default ~/.cache/sketchbook), reused by later
                    runs, folds and sweep trials; one folder per data folder and resize setting

The pre-resize (`pre_resize`) is the one step both paths share, so cached and uncached runs see
identical tensors for the same seed. Store format and invalidation: engine/data/stores/image_store.py.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import torch
import torchvision
from torchvision.transforms.v2 import functional as F

from engine.data.pixels.images import DECODER, load_image
from engine.data.pixels.transforms import DEFAULT_CROP_PCT, eval_resize
from engine.data.stores.image_store import Store, estimate_bytes
from engine.system.atomic import pid_alive
from engine.system.device import cpu_count


def cache_short_side(image_size: int, crop_pct: float) -> int:
    """Shorter side images are kept at: the eval resize, and at least the classic 256-for-224 view.

    RandomResizedCrop takes crop_scale (default 35%) to 100% of the area, so small crops are upsampled; a larger
    size would keep more detail for them but costs memory quadratically.
    """
    return max(eval_resize(image_size, crop_pct), eval_resize(image_size, DEFAULT_CROP_PCT))


def pre_resize(image: torch.Tensor, short_side: int) -> torch.Tensor:
    """Shrink the shorter side to `short_side` (antialiased); smaller images are left as they are."""
    if min(image.shape[-2:]) <= short_side:
        return image
    return F.resize(image, short_side, antialias=True)


def decode_resized(path: str, short_side: int) -> torch.Tensor:
    """Decode one file and pre-resize it: what the cache stores and what cache='none' computes each time."""
    return pre_resize(load_image(path), short_side)


class DecodeEachTime:
    """cache='none': index -> decoded, pre-resized image (picklable for spawned workers)."""

    def __init__(self, paths: Sequence[str], short_side: int):
        self.paths, self.short_side = list(paths), short_side

    def __call__(self, index: int) -> torch.Tensor:
        return decode_resized(self.paths[index], self.short_side)


def disk_cache_root() -> Path:
    """Where cache='disk' stores live: $SKETCHBOOK_CACHE_DIR, else $XDG_CACHE_HOME/sketchbook, else ~/.cache/sketchbook."""
    if os.environ.get("SKETCHBOOK_CACHE_DIR"):
        return Path(os.environ["SKETCHBOOK_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sketchbook"


def memory_cache_root() -> Path:
    """cache='memory' stores are files in shared memory (tmpfs); elsewhere the temp folder."""
    return Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


def store_settings(data_dir: str, short_side: int) -> dict:
    """Everything the cached bytes depend on; a store built for other settings is never used."""
    return {"data_dir": os.path.abspath(data_dir), "short_side": short_side, "resize": "bilinear-antialias",
            "torchvision": torchvision.__version__, "decoder": DECODER}


def cache_folder_name(settings: dict) -> str:
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return f"{Path(settings['data_dir']).name or 'data'}-{settings['short_side']}px-{digest}"


def namespace_tag() -> str:
    """This host and PID namespace, in 10 characters: a pid means something only where this tag is the same.

    Containers that share /dev/shm (docker --ipc=host or --ipc=container:) have their own PID namespace,
    so another container's live store would look like a dead process's leftovers to us.
    """
    try:
        pid_namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # no /proc (macOS): the host alone
        pid_namespace = ""
    return hashlib.sha1(f"{socket.gethostname()}|{pid_namespace}".encode()).hexdigest()[:10]


MEMORY_PREFIX = "sketchbook@"  # sketchbook@<namespace tag>-<owner pid>-<store name>
_REMOVE_AT_EXIT: set[Path] = set()  # this process's memory stores (local rank 0 removes them)


def memory_store_folder(settings: dict) -> Path:
    """This run's shared-memory folder; clears folders of dead runs and this run's other settings.

    Under torchrun every local rank of a machine names the folder after its launcher's pid, so they share
    one store, and each machine (node) has its own. Only folders of this host and PID namespace are cleared.
    """
    owner = os.getppid() if int(os.environ.get("LOCAL_WORLD_SIZE", 1)) > 1 else os.getpid()
    root = memory_cache_root()
    tag = namespace_tag()
    folder = root / f"{MEMORY_PREFIX}{tag}-{owner}-{cache_folder_name(settings)}"
    for other in root.glob(f"{MEMORY_PREFIX}{tag}-*-*"):
        pid = other.name[len(MEMORY_PREFIX) + len(tag) + 1:].split("-")[0]
        if pid.isdigit() and other != folder and (int(pid) == owner or not pid_alive(int(pid))):
            shutil.rmtree(other, ignore_errors=True)  # a finished trial's or a killed run's memory
    if int(os.environ.get("LOCAL_RANK", 0)) == 0 and folder not in _REMOVE_AT_EXIT:
        _REMOVE_AT_EXIT.add(folder)
        atexit.register(shutil.rmtree, folder, True)
    return folder


def open_store(mode: str, data_dir: str, short_side: int, log: Callable[[str], None] = print) -> Store:
    """The memory or disk store for this data folder and resize."""
    settings = store_settings(data_dir, short_side)
    folder = memory_store_folder(settings) if mode == "memory" else disk_cache_root() / cache_folder_name(settings)
    return Store(folder, settings, functools.partial(decode_resized, short_side=short_side), log)


def build_processes() -> int:
    """Processes that decode while the cache is built: every core this process may use."""
    return cpu_count()


def host_cache(recipe) -> str:
    """The host-side cache: "memory" or "disk" as asked; otherwise ("none", "auto", "device") the workers decode
    each time (images resident on the device are loaded by engine/data/batches/resident.py)."""
    return recipe.cache if recipe.cache in ("memory", "disk") else "none"


def image_loader(recipe, paths: Sequence[str], crop_pct: float,
                 show_progress: bool = True) -> Callable[[int], torch.Tensor]:
    """A function index -> pre-resized uint8 image for the dataset, from the cache the recipe asks for."""
    short_side = cache_short_side(recipe.image_size, crop_pct)
    if host_cache(recipe) == "none":
        return DecodeEachTime(paths, short_side)
    store = open_store(recipe.cache, recipe.data_dir, short_side)
    return store.ensure([os.path.abspath(p) for p in paths], build_processes(), show_progress)


def cache_summary(recipe, paths: Sequence[str], crop_pct: float) -> str:
    """One line for --dry-run: how much memory or disk the cache takes (from image headers) and how much is free."""
    short_side = cache_short_side(recipe.image_size, crop_pct)
    size, exact = estimate_bytes(paths, short_side)
    amount = f"{'' if exact else '~'}{size / 2**30:.2f} GiB" if size >= 2**28 else f"{size / 2**20:.1f} MiB"
    what = f"{len(paths)} images at shorter side <= {short_side} px: {amount}"
    if host_cache(recipe) == "none":
        return f"host cache: none (workers decode every epoch); cache='memory' or 'disk' would take {what}"
    root = memory_cache_root() if recipe.cache == "memory" else disk_cache_root()
    probe = next((p for p in (root, *root.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    warning = "  NOT ENOUGH SPACE" if size > free else ""
    return f"cache: {recipe.cache}: {what} in {root} ({free / 2**30:.1f} GiB free){warning}"
