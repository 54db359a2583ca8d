"""Train and eval transforms on uint8 tensors (torchvision v2); normalisation happens on the device.

Everything that fills (affine, augment ops, erasing) fills with the data set's paper colour (`fill`, an
RGB triple; engine.data.pixels.background measures it): on white paper a black border would be a stroke the
model learns from, and on black paper a white one would.
"""
from __future__ import annotations

import math

import torch
from torchvision.transforms import v2

from engine.data.pixels.background import WHITE

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's defaults
DEFAULT_CROP_PCT = 0.875


def eval_resize(image_size: int, crop_pct: float = DEFAULT_CROP_PCT) -> int:
    """Shorter-side size before the centre crop (the usual 256 -> 224 at crop_pct 0.875)."""
    return int(math.floor(image_size / crop_pct))


FLIP_VIEWS = {"none": ((),), "h": ((), (3,)), "hv": ((), (3,), (2,), (2, 3))}  # dims flipped per TTA view (NCHW)


def flip_ops(flip: str = "h") -> list:
    """Random training flips: "h" horizontal, "hv" horizontal and vertical (sketches have no fixed up), "none"."""
    if flip not in FLIP_VIEWS:
        raise ValueError(f"unknown flip {flip!r}")
    return ([v2.RandomHorizontalFlip()] if "h" in flip else []) + ([v2.RandomVerticalFlip()] if "v" in flip else [])


def build_train_transform(image_size: int, augment: str = "light", random_erase: float = 0.0,
                          crop_scale: float = 0.35, flip: str = "h",
                          fill: tuple[int, int, int] = WHITE) -> v2.Compose:
    """Random resized crop (area share crop_scale..1) + flips, the `augment` preset, optional random erasing;
    new pixels are painted `fill` (the paper colour, RGB 0-255)."""
    fill = [int(c) for c in fill]
    ops = [v2.RandomResizedCrop(image_size, scale=(crop_scale, 1.0), antialias=True), *flip_ops(flip)]
    if augment == "light":
        ops.append(v2.RandomAffine(degrees=10, translate=(0.06, 0.06), scale=(0.9, 1.1), shear=5, fill=fill))
    elif augment == "randaugment":
        ops.append(v2.RandAugment(num_ops=2, magnitude=9, fill=fill))
    elif augment == "trivialaugment":
        ops.append(v2.TrivialAugmentWide(fill=fill))
    elif augment != "none":
        raise ValueError(f"unknown augment preset {augment!r}")
    if random_erase > 0:
        ops.append(v2.RandomErasing(p=random_erase, scale=(0.02, 0.15), value=fill))
    return v2.Compose(ops)


def recipe_train_transform(recipe, fill: tuple[int, int, int] = WHITE, augment: str | None = None) -> v2.Compose:
    """The recipe's training transform (the one place it is built from a recipe); `augment` overrides its preset."""
    return build_train_transform(recipe.image_size, augment or recipe.augment, recipe.random_erase, recipe.crop_scale,
                                 flip=recipe.flip, fill=fill)


def build_eval_transform(image_size: int, crop_pct: float = DEFAULT_CROP_PCT) -> v2.Compose:
    """Resize the shorter side, then centre-crop image_size (the standard eval view)."""
    return v2.Compose([v2.Resize(eval_resize(image_size, crop_pct), antialias=True), v2.CenterCrop(image_size)])


class Normalize(torch.nn.Module):
    """uint8 batch on the device -> float, normalised, optionally channels_last (one fused pass)."""

    def __init__(self, mean: tuple, std: tuple, channels_last: bool = False):
        super().__init__()
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, -1, 1, 1)), persistent=False)
        self.register_buffer("shift", -torch.tensor(mean).view(1, -1, 1, 1) / torch.tensor(std).view(1, -1, 1, 1),
                             persistent=False)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(memory_format=self.memory_format)
        return torch.addcmul(self.shift, x.float(), self.scale)
