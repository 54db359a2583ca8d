"""Images resident on the device (recipe value cache="device"): decoded once, kept on the GPU as uint8.

Training images are kept pre-resized exactly as the host cache keeps them (engine.data.stores.image_cache.pre_resize),
each at its true size, so every batch is laid on a canvas, warped and erased on the device with the
same draws as augment_on="device" (engine/data/pixels/device_augment.py): no per-step CPU work, no pinning and
no host-to-device copy. Validation images are kept as their eval crops. Each process holds every image
its folds use (a DistributedSampler reshuffles the shards every epoch), and what one fold loaded the
next reuses. On the CPU the "device" is the CPU, so the suite runs this path as a GPU would.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import torch

from engine.data.batches.loader import ImageDataset
from engine.data.pixels.device_augment import CANVAS_MULTIPLE
from engine.data.pixels.transforms import build_eval_transform
from engine.data.stores.image_cache import DecodeEachTime, cache_short_side
from engine.data.stores.image_store import estimate_bytes
from engine.errors import UserError
from engine.system.progress import progress

FIT_SHARE = 0.5  # the images may take this share of the device's free memory; the rest is the model's


def free_bytes(device: torch.device) -> int:
    """Memory the device has free now (the host's available memory for the CPU)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def resident_bytes(paths: Sequence[str], image_size: int, crop_pct: float) -> int:
    """What the images take on the device (from image headers, no decoding): pre-resized images, a fold's packed
    copy of them (sides rounded up to the canvas multiple: resident_source.PackedImages) and eval crops."""
    short = cache_short_side(image_size, crop_pct)
    size, _ = estimate_bytes(paths, short)
    packed, _ = estimate_bytes(paths, short, round_to=CANVAS_MULTIPLE)
    return size + packed + len(paths) * 3 * image_size * image_size


def fit_line(paths: Sequence[str], image_size: int, crop_pct: float, device: torch.device) -> tuple[bool, str]:
    """Whether the images fit in FIT_SHARE of the device's free memory, and one line saying so."""
    need, free = resident_bytes(paths, image_size, crop_pct), free_bytes(device)
    fits = need <= FIT_SHARE * free
    return fits, (f"{len(paths)} images take {need / 2**30:.2f} GiB on {device.type}, "
                  f"{'within' if fits else 'more than'} {FIT_SHARE:.0%} of its {free / 2**30:.1f} GiB free")


def _stamp(path: str) -> tuple:
    st = os.stat(path)
    return os.path.abspath(path), st.st_size, st.st_mtime_ns


class ResidentImages:
    """path -> uint8 image on `device`, made by `load(paths)` (a loader of CPU images); an image whose file
    changed (size or mtime) is loaded again."""

    def __init__(self, device: torch.device, load: Callable[[list[str]], torch.utils.data.DataLoader], what: str):
        self.device, self.load, self.what = device, load, what
        self.images: dict[tuple, torch.Tensor] = {}

    def get(self, paths: Sequence[str], show_progress: bool = True) -> list[torch.Tensor]:
        """The images of `paths` in order, loading those not resident yet."""
        stamps = [_stamp(p) for p in paths]
        todo = [p for p, s in zip(paths, stamps) if s not in self.images]
        if todo:
            loader = self.load(todo)
            done = 0
            for batch in progress(loader, len(loader), f"{self.what} to {self.device.type}", show_progress):
                flat = torch.cat([img.reshape(-1) for img, _ in batch]).to(self.device)  # one copy per batch
                offset = 0
                for img, _ in batch:
                    n = img.numel()
                    self.images[_stamp(todo[done])] = flat[offset:offset + n].view(img.shape)
                    offset, done = offset + n, done + 1
        return [self.images[s] for s in stamps]


_RESIDENT: dict[tuple, ResidentImages] = {}  # per process: the next fold (or sweep trial) reuses what is loaded


def _loader(dataset_of: Callable[[list[str]], ImageDataset], workers: int):
    """paths -> a one-pass loader of lists of (image, target): the workers decode, the main process copies."""
    return lambda paths: torch.utils.data.DataLoader(dataset_of(paths), batch_size=64, num_workers=workers,
                                                     collate_fn=list, prefetch_factor=4 if workers else None)


def training_images(image_size: int, crop_pct: float, device: torch.device, workers: int) -> ResidentImages:
    """Pre-resized training images (the host cache's bytes) on `device`."""
    short = cache_short_side(image_size, crop_pct)
    key = ("train", short, str(device))
    if key not in _RESIDENT:
        dataset = lambda paths: ImageDataset(paths, None, None, loader=DecodeEachTime(paths, short))  # noqa: E731
        _RESIDENT[key] = ResidentImages(device, _loader(dataset, workers), "images")
    return _RESIDENT[key]


def eval_crops(image_size: int, crop_pct: float, device: torch.device, workers: int) -> ResidentImages:
    """Validation images as their eval crops (resize + centre crop, as the workers would cut them) on `device`."""
    short, key = cache_short_side(image_size, crop_pct), ("eval", image_size, round(crop_pct, 6), str(device))
    if key not in _RESIDENT:
        eval_tf = build_eval_transform(image_size, crop_pct)
        dataset = lambda paths: ImageDataset(paths, None, eval_tf, loader=DecodeEachTime(paths, short))  # noqa: E731
        _RESIDENT[key] = ResidentImages(device, _loader(dataset, workers), "eval crops")
    return _RESIDENT[key]


def check_fits(paths: Sequence[str], image_size: int, crop_pct: float, device: torch.device) -> None:
    """cache='device' asked for explicitly: refuse in one line when the images would not fit."""
    fits, line = fit_line(paths, image_size, crop_pct, device)
    if not fits:
        raise UserError(f"cache='device': {line}; use cache='memory' (images in host memory, augmented on the "
                        f"device) or a smaller image_size")


def release() -> None:
    """Drop every resident image (a sweep trial with another image size, or the end of a run)."""
    _RESIDENT.clear()
