"""The paper colour of a data set: measured from the image borders, or set by the recipe (`background`).

Everything that paints new pixels (augmentation fill, random erasing) paints this colour, and the CAM ink
measure counts as ink what differs from it, so light strokes on dark paper work like dark on white.
A background is an RGB triple of ints 0-255; checkpoints keep it in their "data" dict.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from engine.data.pixels.images import load_image

WHITE, BLACK = (255, 255, 255), (0, 0, 0)
NAMED = {"white": WHITE, "black": BLACK}
SAMPLE = 200  # images whose borders are measured: the median over 200 is stable to a grey level or two
BORDER_SHARE = 0.04  # the outer 4% of each side (at least one pixel) is the border
STROKE_CONTRAST = 48  # a pixel is part of a stroke when its grey level differs from the paper by more
MIXED_SHARE = 0.1  # more than 10% of the papers far from the chosen colour: the set is mixed, and the log says so


@dataclass
class Background:
    """A data set's paper colour and whether its strokes are lighter than the paper, and where that came from."""
    rgb: tuple[int, int, int]
    strokes_light: bool
    source: str  # "measured on N images" or "from the recipe"
    mixed: str | None = None  # "white 101, black 99": the measured images' papers disagree

    def describe(self) -> str:
        """One line for the log: 'background: black (0, 0, 0), strokes light (measured on 200 images)'."""
        strokes = "light" if self.strokes_light else "dark"
        line = f"background: {colour_name(self.rgb)} {self.rgb}, strokes {strokes} ({self.source})"
        if self.mixed:
            line += (f"\nwarning: the paper colour is mixed ({self.mixed} images): fills, erasing and the CAM ink "
                     f"measure all use {colour_name(self.rgb)} {self.rgb}; set background='white', 'black' or "
                     f"(r, g, b) to choose")
        return line


def colour_name(rgb: Sequence[int]) -> str:
    """white, black, grey or colour: how the log names a paper colour."""
    if max(rgb) - min(rgb) > 24:
        return "colour"
    grey = sum(rgb) / 3
    return "white" if grey >= 200 else "black" if grey <= 55 else "grey"


def border_pixels(image: np.ndarray) -> np.ndarray:
    """The outer ring (BORDER_SHARE of each side, at least 1 px) of an H x W x 3 image as N x 3 pixels."""
    h, w = image.shape[:2]
    band = max(1, round(BORDER_SHARE * min(h, w)))
    ring = np.ones((h, w), dtype=bool)
    ring[band:h - band, band:w - band] = False
    return image[ring]


def _read_small(path: str, side: int = 128) -> np.ndarray:
    """H x W x 3 uint8, decoded at about `side` px (JPEG draft mode): borders need no detail."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as im:
            if im.mode in ("RGB", "L"):
                im.draft(im.mode, (side, side))
                return np.asarray(im.convert("RGB"))
    return load_image(path).permute(1, 2, 0).numpy()


def image_background(image: np.ndarray) -> tuple[np.ndarray, bool | None]:
    """(median border colour, strokes lighter than it? None when the image has no strokes) of one image."""
    paper = np.median(border_pixels(image), axis=0)
    grey = image.astype(np.float32).mean(axis=2)
    stroke = grey[np.abs(grey - paper.mean()) > STROKE_CONTRAST]
    return paper, (bool(stroke.mean() > paper.mean()) if stroke.size else None)


def measure_background(paths: Sequence[str], sample: int = SAMPLE, seed: int = 0,
                       progress: Callable = lambda it, total: it) -> Background:
    """The median border colour over a seeded sample of the images, and the strokes' polarity (majority vote)."""
    paths = list(paths)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), size=min(sample, len(paths)), replace=False)) if paths else []
    papers, lighter = [], []
    for i in progress(chosen, len(chosen)):
        try:
            paper, light = image_background(_read_small(paths[i]))
        except Exception:  # the audit reports unreadable files; a background needs only most of them
            continue
        papers.append(paper)
        if light is not None:
            lighter.append(light)
    if not papers:
        return Background(WHITE, False, "no image could be read; white assumed")
    rgb = tuple(int(round(c)) for c in np.median(np.stack(papers), axis=0))
    strokes_light = bool(np.mean(lighter) > 0.5) if lighter else sum(rgb) < 3 * 128
    return Background(rgb, strokes_light, f"measured on {len(papers)} images' borders", mixed_papers(papers, rgb))


def mixed_papers(papers: Sequence[np.ndarray], rgb: Sequence[int], share: float = MIXED_SHARE) -> str | None:
    """'white 101, black 99' when more than `share` of the papers are far from the chosen colour, else None."""
    far = [p for p in papers if np.abs(np.asarray(p, dtype=np.float64) - rgb).max() > STROKE_CONTRAST]
    if len(far) <= share * len(papers):
        return None
    counts: dict[str, int] = {}
    for p in papers:
        counts[colour_name(p)] = counts.get(colour_name(p), 0) + 1
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1])) + f" of {len(papers)}"


def resolve_background(setting: str | Sequence[int], paths: Sequence[str], seed: int = 0,
                       progress: Callable = lambda it, total: it) -> Background:
    """The recipe's `background` as a Background: "auto" measures the images, anything else is taken as given."""
    if setting == "auto":
        return measure_background(paths, seed=seed, progress=progress)
    rgb = NAMED[setting] if isinstance(setting, str) else tuple(int(c) for c in setting)
    return Background(rgb, sum(rgb) < 3 * 128, "from the recipe")


def checkpoint_background(data: dict | None) -> tuple[int, int, int]:
    """The background a checkpoint's "data" dict carries; white for checkpoints from before it was saved."""
    value = (data or {}).get("background")
    return tuple(int(c) for c in value) if value is not None else WHITE
