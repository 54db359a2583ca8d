"""Decode-once image cache (recipe key `cache`). With cache="none" images are decoded every time."""
from __future__ import annotations

from typing import Callable, Sequence

import torch


def image_loader(recipe, paths: Sequence[str], crop_pct: float) -> Callable[[int], torch.Tensor] | None:
    """A function index -> uint8 image for the dataset; None: decode from disk each time."""
    if recipe.cache == "none":
        return None
    raise NotImplementedError("cache='memory' and cache='disk' arrive with the cache issue")
