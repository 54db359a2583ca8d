"""Training augmentation of a whole batch at once on the device (recipe key augment_on="device").

The workers only decode (or read the cache) and pad each image onto one uint8 canvas per batch,
keeping its true extent (`Canvas`). Here every sample gets its own draw of the worker path's
random-resized crop, flip and small affine (engine/data/pixels/transforms.py: same distributions, drawn
the same way), composed into ONE affine matrix per sample and applied in one bilinear warp over the
batch (affine_grid + grid_sample); then random erasing. What lies outside the image is the
background fill. Draws are a pure function of (seed, epoch, step, rank), made on the CPU, so runs
repeat and a run resumed mid-epoch sees exactly the batches it would have.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.data.pixels.background import WHITE
from engine.system.device import device_feed

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range
ATTEMPTS = 10  # torchvision tries 10 crops (and erase boxes) before its fallback
DEGREES, TRANSLATE, SCALE, SHEAR = 10.0, 0.06, (0.9, 1.1), 5.0  # the 'light' preset's RandomAffine
ERASE_SCALE, ERASE_RATIO = (0.02, 0.15), (0.3, 3.3)  # RandomErasing's area share and aspect ratio
CANVAS_MULTIPLE = 32  # canvas sides are rounded up to this, so few distinct shapes reach the device
DEVICE_PRESETS = ("none", "light")  # augment presets the device path implements


@dataclass
class Canvas:
    """uint8 images padded at the top-left of one B x 3 x H x W canvas, each with its true (h, w).

    Portrait images lie transposed (`transposed`), so a batch of mixed orientations needs a canvas
    only as tall as its tallest landscape side: about half the bytes to pin, send and warp.
    """
    images: torch.Tensor
    extents: torch.Tensor  # B x 2 (h, w) as decoded, int64; stays on the CPU, where the draws are made
    transposed: torch.Tensor  # B, bool: the image lies on the canvas as w x h

    def __len__(self) -> int:
        return self.images.shape[0]

    def pin_memory(self) -> "Canvas":
        return Canvas(self.images.pin_memory(), self.extents, self.transposed)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Canvas":
        return Canvas(self.images.to(device, non_blocking=non_blocking), self.extents, self.transposed)


def canvas_side(side):
    """A canvas side for images up to `side` pixels: rounded up to CANVAS_MULTIPLE (an int or an int array)."""
    return -(-side // CANVAS_MULTIPLE) * CANVAS_MULTIPLE


def pad_to_canvas(images: list[torch.Tensor], fill: tuple[int, int, int] = WHITE,
                  shared: bool = False) -> Canvas:
    """Pad 3 x h x w uint8 images (portrait ones transposed) onto one canvas filled with `fill`, sides
    rounded up to CANVAS_MULTIPLE, on the images' device (images resident on the GPU: a canvas there).
    shared: allocate in shared memory (a loader worker sends it without a copy).
    """
    extents = torch.tensor([tuple(img.shape[-2:]) for img in images], dtype=torch.int64)
    transposed = extents[:, 0] > extents[:, 1]
    laid = torch.stack([extents.min(1).values, extents.max(1).values], 1)  # (h, w) as laid on the canvas
    height, width = (canvas_side(int(laid[:, k].max())) for k in (0, 1))
    shape = (len(images), 3, height, width)
    if shared:  # what torch's default_collate does in workers
        storage = images[0]._typed_storage()._new_shared(math.prod(shape), device=images[0].device)
        canvas = images[0].new(storage).view(shape)
    else:
        canvas = torch.empty(shape, dtype=torch.uint8, device=images[0].device)
    canvas.copy_(device_fill(fill, canvas.device, torch.uint8).expand_as(canvas))
    for b, img in enumerate(images):
        canvas[b, :, :laid[b, 0], :laid[b, 1]] = img.transpose(-1, -2) if transposed[b] else img
    return Canvas(canvas, extents, transposed)


@dataclass
class Draws:
    """One batch's random parameters, one row per sample (float64 on the CPU)."""
    crop: torch.Tensor  # B x 4: top, left, height, width in image pixels
    flip: torch.Tensor  # B, bool
    affine: torch.Tensor  # B x 5: angle (deg), tx, ty (output pixels), scale, shear_x (deg)
    erase: torch.Tensor  # B x 4: top, left, height, width in output pixels; height 0 = no erasing
    vflip: torch.Tensor | None = None  # B, bool (flip="hv"); None: no vertical flips


def draw_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The seed of one batch's draws."""
    return (seed * 1_000_003 + epoch * 2_147_483_647 + step * 97_531 + rank * 7_919_111) % (2**63 - 1)


def _uniform(g: torch.Generator, shape: tuple, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g, dtype=torch.float64)


def draw_boxes(g: torch.Generator, heights: torch.Tensor, widths: torch.Tensor, scale: tuple[float, float],
               ratio: tuple[float, float], strict: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's box search, vectorised: up to ATTEMPTS (height, width) per sample; `ok` says which held.

    strict (random erasing): the box must be smaller than the image; else (crop) it may equal it.
    """
    n = heights.shape[0]
    area = (heights * widths).double()[:, None] * _uniform(g, (n, ATTEMPTS), *scale)
    aspect = torch.exp(_uniform(g, (n, ATTEMPTS), math.log(ratio[0]), math.log(ratio[1])))
    long_h = strict  # RandomErasing puts the aspect ratio on the height, RandomResizedCrop on the width
    w = torch.round(torch.sqrt(area / aspect if long_h else area * aspect))
    h = torch.round(torch.sqrt(area * aspect if long_h else area / aspect))
    H, W = heights.double()[:, None], widths.double()[:, None]
    ok = (h < H) & (w < W) if strict else (h > 0) & (h <= H) & (w > 0) & (w <= W)
    first = ok.double().argmax(1, keepdim=True)  # the first attempt that fits, as torchvision takes it
    return torch.cat([h.gather(1, first), w.gather(1, first)], 1), ok.any(1)


def _place(g: torch.Generator, size: torch.Tensor, room: torch.Tensor) -> torch.Tensor:
    """Uniform integer offsets in [0, room - size] (torch.randint per sample, vectorised)."""
    return torch.floor(torch.rand(size.shape, generator=g, dtype=torch.float64) * (room - size + 1))


def draw_crops(g: torch.Generator, extents: torch.Tensor, crop_scale: float) -> torch.Tensor:
    """RandomResizedCrop(scale=(crop_scale, 1)) boxes (top, left, h, w), its central-crop fallback included."""
    H, W = extents[:, 0].double(), extents[:, 1].double()
    hw, ok = draw_boxes(g, extents[:, 0], extents[:, 1], (crop_scale, 1.0), RATIO, strict=False)
    in_ratio = W / H
    fall_w = torch.where(in_ratio < RATIO[0], W, torch.where(in_ratio > RATIO[1], torch.round(H * RATIO[1]), W))
    fall_h = torch.where(in_ratio < RATIO[0], torch.round(W / RATIO[0]), H)
    h, w = torch.where(ok, hw[:, 0], fall_h), torch.where(ok, hw[:, 1], fall_w)
    top = torch.where(ok, _place(g, h, H), torch.floor((H - h) / 2))
    left = torch.where(ok, _place(g, w, W), torch.floor((W - w) / 2))
    return torch.stack([top, left, h, w], 1)


def draw_affine(g: torch.Generator, n: int, size: int) -> torch.Tensor:
    """RandomAffine(degrees=10, translate=(0.06, 0.06), scale=(0.9, 1.1), shear=5) parameters."""
    max_d = TRANSLATE * size
    return torch.stack([_uniform(g, (n,), -DEGREES, DEGREES), torch.round(_uniform(g, (n,), -max_d, max_d)),
                        torch.round(_uniform(g, (n,), -max_d, max_d)), _uniform(g, (n,), *SCALE),
                        _uniform(g, (n,), -SHEAR, SHEAR)], 1)


def draw_erase(g: torch.Generator, n: int, size: int, p: float) -> torch.Tensor:
    """RandomErasing(p, scale=(0.02, 0.15), ratio=(0.3, 3.3)) boxes (top, left, h, w); h = 0: not erased."""
    on = torch.rand(n, generator=g, dtype=torch.float64) < p
    side = torch.full((n,), size, dtype=torch.int64)
    hw, ok = draw_boxes(g, side, side, ERASE_SCALE, ERASE_RATIO, strict=True)
    top, left = _place(g, hw[:, 0], side.double()), _place(g, hw[:, 1], side.double())
    return torch.stack([top, left, hw[:, 0], hw[:, 1]], 1) * (on & ok).double()[:, None]


def _pixels_to_unit(height: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """B x 3 x 3: pixel coordinates (0..w, 0..h) -> grid_sample's [-1, 1] (align_corners=False)."""
    m = torch.zeros(height.shape[0], 3, 3, dtype=torch.float64)
    m[:, 0, 0], m[:, 1, 1], m[:, 0, 2], m[:, 1, 2], m[:, 2, 2] = 2 / width, 2 / height, -1, -1, 1
    return m


def affine_matrices(d: Draws, canvas_hw: tuple[int, int], size: int,
                    transposed: torch.Tensor | None = None) -> torch.Tensor:
    """B x 2 x 3 grid_sample matrices: output [-1, 1] -> canvas [-1, 1], crop, flip and affine in one.

    Forward (canvas pixel -> output pixel): crop and resize to size, flip, then the affine about the
    output's centre, as the worker path applies them; the warp needs its inverse. A transposed
    image's pixel (x, y) lies at (y, x) on the canvas.
    """
    n = d.crop.shape[0]
    top, left, h, w = d.crop.unbind(1)
    crop = torch.zeros(n, 3, 3, dtype=torch.float64)
    crop[:, 0, 0], crop[:, 1, 1], crop[:, 2, 2] = size / w, size / h, 1
    crop[:, 0, 2], crop[:, 1, 2] = -left * size / w, -top * size / h
    flip = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    flip[d.flip, 0, 0], flip[d.flip, 0, 2] = -1.0, float(size)
    if d.vflip is not None:
        flip[d.vflip, 1, 1], flip[d.vflip, 1, 2] = -1.0, float(size)
    angle, tx, ty, scale, shear = d.affine.unbind(1)
    a, sh = torch.deg2rad(angle), torch.deg2rad(shear)
    rss = torch.zeros(n, 3, 3, dtype=torch.float64)  # rotation * scale * x-shear, about the centre c
    rss[:, 0, 0], rss[:, 0, 1] = scale * torch.cos(a), scale * (-torch.cos(a) * torch.tan(sh) - torch.sin(a))
    rss[:, 1, 0], rss[:, 1, 1] = scale * torch.sin(a), scale * (-torch.sin(a) * torch.tan(sh) + torch.cos(a))
    c = size / 2
    rss[:, 0, 2] = c + tx - rss[:, 0, 0] * c - rss[:, 0, 1] * c
    rss[:, 1, 2] = c + ty - rss[:, 1, 0] * c - rss[:, 1, 1] * c
    rss[:, 2, 2] = 1
    forward = rss @ flip @ crop
    out_side = torch.full((n,), float(size), dtype=torch.float64)
    to_unit_canvas = _pixels_to_unit(torch.full((n,), float(canvas_hw[0])), torch.full((n,), float(canvas_hw[1])))
    lay = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    if transposed is not None:
        lay[transposed] = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    theta = to_unit_canvas @ lay @ torch.linalg.inv(forward) @ torch.linalg.inv(_pixels_to_unit(out_side, out_side))
    return theta[:, :2].float()


_FILLS: dict[tuple, torch.Tensor] = {}


def device_fill(fill: tuple, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 1 x 3 x 1 x 1 fill colour on `device`, made once per (colour, device, dtype)."""
    key = (tuple(fill), str(device), dtype)
    if key not in _FILLS:
        _FILLS[key] = torch.tensor(fill, dtype=dtype).view(1, 3, 1, 1).to(device)
    return _FILLS[key]


def warp(images: torch.Tensor, theta: torch.Tensor, size: int, fill: torch.Tensor) -> torch.Tensor:
    """One bilinear warp of the uint8 canvas batch to B x 3 x size x size float pixels; outside: `fill`."""
    grid = F.affine_grid(device_feed(theta, images.device), [images.shape[0], 3, size, size], align_corners=False)
    shifted = torch.sub(images, fill)  # uint8 -> float in one pass; zeros outside the canvas become fill
    return F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False).add_(fill)


def erase(x: torch.Tensor, boxes: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Paint each sample's box (top, left, h, w; h = 0: none) with `fill`: one masked write for the whole batch,
    so the work queued does not grow with the batch size (the boxes are host draws: nothing is read back)."""
    if not bool((boxes[:, 2] > 0).any()):
        return x
    box = device_feed(boxes.to(torch.int64), x.device)
    ys, xs = torch.arange(x.shape[-2], device=x.device), torch.arange(x.shape[-1], device=x.device)
    in_y = (ys >= box[:, 0:1]) & (ys < box[:, 0:1] + box[:, 2:3])  # B x H
    in_x = (xs >= box[:, 1:2]) & (xs < box[:, 1:2] + box[:, 3:4])  # B x W
    return torch.where((in_y[:, :, None] & in_x[:, None, :])[:, None], fill, x)


class DeviceAugment:
    """canvas batch on the device -> augmented float pixels (0..255), each sample with its own draw."""

    def __init__(self, size: int, crop_scale: float = 0.35, augment: str = "light", random_erase: float = 0.0,
                 seed: int = 0, fill: tuple[int, int, int] = WHITE, flip: str = "h"):
        if augment not in DEVICE_PRESETS:
            raise ValueError(f"augment={augment!r} has no device implementation; use augment_on='workers'")
        if flip not in ("none", "h", "hv"):
            raise ValueError(f"unknown flip {flip!r}")
        self.flip = flip  # random flips: "h" horizontal, "hv" horizontal and vertical, "none"
        self.size, self.crop_scale, self.random_erase = size, crop_scale, random_erase
        self.seed, self.fill = seed, tuple(float(v) for v in fill)
        self.set_preset(augment)

    def set_preset(self, augment: str) -> None:
        """Augment with this preset from the next batch on (staged augmentation)."""
        if augment not in DEVICE_PRESETS:
            raise ValueError(f"augment={augment!r} has no device implementation; use augment_on='workers'")
        self.affine = augment == "light"

    def draw(self, extents: torch.Tensor, epoch: int, step: int, rank: int = 0) -> Draws:
        """The batch's draws: a pure function of (seed, epoch, step, rank) and the images' extents."""
        g = torch.Generator().manual_seed(draw_seed(self.seed, epoch, step, rank))
        n = extents.shape[0]
        crop = draw_crops(g, extents, self.crop_scale)
        flip = (torch.rand(n, generator=g, dtype=torch.float64) < 0.5) & ("h" in self.flip)
        still = torch.tensor([[0.0, 0, 0, 1, 0]], dtype=torch.float64).repeat(n, 1)  # augment="none": no affine
        affine = draw_affine(g, n, self.size) if self.affine else still
        erase = draw_erase(g, n, self.size, self.random_erase)
        vflip = torch.rand(n, generator=g, dtype=torch.float64) < 0.5 if "v" in self.flip else None
        return Draws(crop, flip, affine, erase, vflip)

    def apply(self, canvas: Canvas, d: Draws) -> torch.Tensor:
        """Warp and erase the canvas batch with given draws (the preview and tests call this directly)."""
        images = canvas.images
        fill = device_fill(self.fill, images.device)
        theta = affine_matrices(d, tuple(images.shape[-2:]), self.size, canvas.transposed)
        return erase(warp(images, theta, self.size, fill), d.erase, fill)

    def __call__(self, canvas: Canvas, epoch: int, step: int, rank: int = 0) -> torch.Tensor:
        return self.apply(canvas, self.draw(canvas.extents, epoch, step, rank))
