"""Do the classes survive a mirror? A quick pixel model trained on unflipped images predicts validation images
plain and mirrored; where mirroring costs it much of its accuracy, a mirror changes what the image shows (digits,
letters, arrows) or the data never shows it mirrored, and training flips would teach the model wrong pairs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from engine.data.pixels.images import load_image

SIDE = 16  # pixels per side the quick model sees: enough for a stroke's direction, seconds to fit
MAX_TRAIN, MAX_VAL = 2000, 500  # images: keeps the check to seconds on any data set
KEEPS = 0.9  # a mirror is safe when the mirrored images keep 90% of the plain accuracy


@dataclass
class FlipCheck:
    """Accuracy of the quick model on plain, horizontally and vertically mirrored validation images."""
    plain: float
    h: float
    v: float
    images: int

    @property
    def suggested(self) -> str:
        """The recipe's `flip` this measures as safe: "hv", "h" or "none"."""
        if self.h < KEEPS * self.plain:
            return "none"
        return "hv" if self.v >= KEEPS * self.plain else "h"

    def describe(self) -> str:
        return (f"mirror check (a quick pixel model on {self.images} validation images): accuracy {self.plain:.2f} "
                f"plain, {self.h:.2f} mirrored left-right, {self.v:.2f} upside down; suggested flip="
                f"{self.suggested!r}")


def _pixels(paths: Sequence[str]) -> np.ndarray:
    """N x SIDE x SIDE grey levels in [0, 1]."""
    grey = [load_image(p).float().mean(0, keepdim=True) / 255 for p in paths]
    return torch.cat([F.interpolate(g[None], size=(SIDE, SIDE), mode="area") for g in grey])[:, 0].numpy()


def check_flips(paths: Sequence[str], targets: Sequence[int], seed: int = 0) -> FlipCheck | None:
    """Fit a logistic regression on a stratified part of the images and score the rest plain and mirrored; None
    when there are too few images per class to tell."""
    targets = np.asarray(targets)
    counts = np.unique(targets, return_counts=True)[1]
    if len(counts) < 2 or counts.min() < 4:
        return None
    n_val = min(MAX_VAL, len(targets) // 4)
    n_train = min(MAX_TRAIN, len(targets) - n_val)
    rows_train, rows_val = train_test_split(np.arange(len(targets)), train_size=n_train, test_size=n_val,
                                            stratify=targets, random_state=seed)
    x_train, x_val = _pixels([paths[i] for i in rows_train]), _pixels([paths[i] for i in rows_val])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    model = LogisticRegression(C=0.1, max_iter=300).fit(((x_train - mean) / std).reshape(n_train, -1),
                                                        targets[rows_train])

    def accuracy(x: np.ndarray) -> float:
        return float((model.predict(((x - mean) / std).reshape(len(x), -1)) == targets[rows_val]).mean())

    return FlipCheck(accuracy(x_val), accuracy(x_val[:, :, ::-1]), accuracy(x_val[:, ::-1, :]), n_val)
