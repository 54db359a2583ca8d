"""Batches of images resident on the device ("resident"): training images packed once, so a batch is one
gather per packed tensor plus one warp, whatever its size; validation crops in one tensor, one gather a batch.

Training images keep their true sizes (pre-resized as the host cache keeps them). `PackedImages` lays each
one, portrait ones transposed, at the top-left of a slot of its canvas shape (sides rounded up to
CANVAS_MULTIPLE, the rest filled with the paper colour) in one tensor per shape. A batch's canvas is then the
same canvas pad_to_canvas lays image by image (engine/data/pixels/device_augment.py), so the warp gives the
same pixels for the same draws as the device-canvas path, in a number of operations that does not grow
with the batch size. Indices reach the device from pinned memory without waiting; nothing is read back.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from engine.data.batches.loader import EpochSampler
from engine.data.batches.sources import BatchSource, count_batches
from engine.data.pixels.device_augment import Canvas, DeviceAugment, canvas_side, device_fill
from engine.system.device import device_feed


class PackedImages:
    """uint8 images of any sizes in one tensor per canvas shape; `canvas(rows)` lays a batch of them."""

    def __init__(self, images: Sequence[torch.Tensor], fill: tuple[int, int, int], device: torch.device):
        self.device, self.fill = device, tuple(fill)
        self.extents = torch.tensor([tuple(img.shape[-2:]) for img in images], dtype=torch.int64).view(-1, 2)
        self.transposed = self.extents[:, 0] > self.extents[:, 1]
        laid = torch.stack([self.extents.min(1).values, self.extents.max(1).values], 1).numpy()
        self.shape_of = canvas_side(laid)  # each image's canvas shape (h, w), as pad_to_canvas rounds it
        shapes, self.group = np.unique(self.shape_of, axis=0, return_inverse=True)
        self.group = self.group.reshape(-1)
        self.slot = np.zeros(len(images), dtype=np.int64)
        self.tensors = []
        for g, (h, w) in enumerate(shapes):  # once per fold: one copy per image
            members = np.flatnonzero(self.group == g)
            packed = device_fill(self.fill, device, torch.uint8).expand(len(members), 3, h, w).contiguous()
            for slot, i in enumerate(members):
                img = images[i].transpose(-1, -2) if self.transposed[i] else images[i]
                packed[slot, :, :img.shape[-2], :img.shape[-1]] = img
            self.slot[members] = np.arange(len(members))
            self.tensors.append(packed)

    def __len__(self) -> int:
        return len(self.group)

    def canvas(self, rows: np.ndarray) -> Canvas:
        """The batch of `rows` on one canvas as large as its largest image's shape."""
        height, width = (int(v) for v in self.shape_of[rows].max(0))
        groups = self.group[rows]
        present = np.unique(groups)
        if len(present) == 1 and tuple(self.tensors[present[0]].shape[-2:]) == (height, width):
            images = self.tensors[present[0]][device_feed(torch.from_numpy(self.slot[rows]), self.device)]
        else:
            images = device_fill(self.fill, self.device, torch.uint8).expand(len(rows), 3, height, width).contiguous()
            for g in present:  # one gather per shape present, whatever the batch size
                at = np.flatnonzero(groups == g)
                h, w = self.tensors[g].shape[-2:]
                images[device_feed(torch.from_numpy(at), self.device), :, :h, :w] = \
                    self.tensors[g][device_feed(torch.from_numpy(self.slot[rows[at]]), self.device)]
        index = torch.from_numpy(rows)
        return Canvas(images, self.extents[index], self.transposed[index])


class ResidentBatches(BatchSource):
    """Training batches from packed resident images, in the sampler's order, drawn exactly as the canvas path
    draws them (same canvas, same DeviceAugment call), so the two give the same pixels."""
    kind = "resident"

    def __init__(self, packed: PackedImages, targets: torch.Tensor, sampler: EpochSampler, batch_size: int,
                 augment: DeviceAugment, device: torch.device, normalize: torch.nn.Module, rank: int = 0):
        super().__init__(device, normalize, rank)
        self.packed, self.targets, self.sampler, self.batch_size = packed, targets, sampler, batch_size
        self.augment, self.rows = augment, len(packed)
        self.drop_last = len(sampler) > batch_size  # as make_loader's training loaders

    @classmethod
    def from_images(cls, images: Sequence[torch.Tensor], targets: torch.Tensor, sampler: EpochSampler,
                    batch_size: int, augment: DeviceAugment, fill: tuple[int, int, int], device: torch.device,
                    normalize: torch.nn.Module, rank: int = 0) -> "ResidentBatches":
        """Pack `images` (resident on `device`) for this fold."""
        return cls(PackedImages(images, fill, device), targets, sampler, batch_size, augment, device, normalize, rank)

    def device_tensors(self) -> list[torch.Tensor]:
        """What this source keeps on the device."""
        return list(self.packed.tensors)

    def __len__(self) -> int:
        return count_batches(len(self.sampler), self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = np.asarray(self.order(), dtype=np.int64)
        for k in range(len(self)):
            rows = order[k * self.batch_size:(k + 1) * self.batch_size]
            canvas = self.packed.canvas(rows)
            yield self.ready(self.augment(canvas, self.epoch, self.skip + k, self.rank),
                             self.targets[torch.from_numpy(rows)])

    def wait_advice(self, recipe, device: torch.device) -> str | None:
        return None  # nothing to add: the batches are made on the device


class ResidentEval(BatchSource):
    """Evaluation batches of eval crops resident on the device (one tensor), rank-sharded without padding."""
    kind = "resident"

    def __init__(self, crops: Sequence[torch.Tensor] | torch.Tensor, targets: torch.Tensor, sampler, batch_size: int,
                 device: torch.device, normalize: torch.nn.Module):
        super().__init__(device, normalize)
        self.crops = crops if isinstance(crops, torch.Tensor) else (
            torch.stack(list(crops)) if len(crops) else torch.zeros(0, 3, 1, 1, dtype=torch.uint8, device=device))
        self.targets, self.sampler, self.batch_size = targets, sampler, batch_size
        self.rows = len(self.crops)

    def device_tensors(self) -> list[torch.Tensor]:
        return [self.crops]

    def __len__(self) -> int:
        return count_batches(len(self.sampler), self.batch_size, False)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(self.order(), dtype=torch.int64)
        for k in range(len(self)):
            rows = order[k * self.batch_size:(k + 1) * self.batch_size]
            yield self.ready(self.crops[device_feed(rows, self.device)], self.targets[rows])
