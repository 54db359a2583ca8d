"""PNG pages for class activation maps: one page per image, and one grid of a run's confident mistakes.

A page row is: the image as the model saw it | the heat map | the overlay | the map on ink pixels
(with the share of the map's mass on strokes: a sketch model looking at blank paper is suspicious).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.cam.gradcam import ink_mass, ink_pixels  # noqa: E402
from engine.system.atomic import write_atomic  # noqa: E402


PANEL_IN, TITLE_IN, DPI = 2.5, 0.6, 100  # fixed figure geometry: a page's pixel size depends only on its rows
CMAP = "turbo"
ALPHA = 0.45  # heat-map weight in the overlay


def page_size(rows: int) -> tuple[int, int]:
    """(width, height) in pixels of a page with `rows` classes."""
    return round(4 * PANEL_IN * DPI), round((rows * PANEL_IN + TITLE_IN) * DPI)


def short(name: str, width: int = 22) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


def overlay(image: torch.Tensor, cam: torch.Tensor) -> np.ndarray:
    """H x W x 3 floats: the uint8 3 x H x W image blended with the coloured map."""
    rgb = image.permute(1, 2, 0).numpy().astype(np.float32) / 255
    heat = plt.get_cmap(CMAP)(cam.numpy())[..., :3]
    return (1 - ALPHA) * rgb + ALPHA * heat


def top_classes(probs: torch.Tensor, classes: list[str], k: int = 3) -> str:
    top = probs.topk(min(k, len(classes)))
    return ", ".join(f"{short(classes[i])} {p:.1%}" for p, i in zip(top.values.tolist(), top.indices.tolist()))


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path: str | Path) -> None:
    """Write the figure atomically: a full disk is one line (DiskFull), never a 0-byte PNG left behind."""
    try:
        write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=DPI), binary=True)
    finally:
        plt.close(fig)


def save_page(path: str | Path, image: torch.Tensor, maps: torch.Tensor, targets: list[int], probs: torch.Tensor,
              flat: list[bool], classes: list[str], title: str, background: tuple = (255, 255, 255)) -> None:
    """One PNG: a row per explained class (input | heat map | overlay | map on ink), titled with the top-3.

    Ink is what differs from the paper colour `background` (the checkpoint's), dark or light strokes alike.
    """
    rows = len(targets)
    width, height = page_size(rows)
    fig, axes = plt.subplots(rows, 4, figsize=(width / DPI, height / DPI), dpi=DPI, squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - (TITLE_IN + 0.1) / (height / DPI),
                        wspace=0.08, hspace=0.25)
    fig.suptitle(f"{short(title, 60)}\ntop-3: {top_classes(probs, classes)}", fontsize=9)
    is_ink = ink_pixels(image, background).numpy()
    paper = np.broadcast_to(np.array(background, dtype=np.uint8), (*is_ink.shape, 3))
    for row, (cls, cam, is_flat) in enumerate(zip(targets, maps, flat)):
        ax_in, ax_heat, ax_over, ax_ink = axes[row]
        label = f"{short(classes[cls])} ({probs[cls]:.1%})"
        ax_in.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax_in.set_title("as the model saw it", fontsize=8)
        ax_heat.imshow(cam.numpy(), cmap=CMAP, vmin=0, vmax=1, interpolation="nearest")
        ax_heat.set_title(f"map: {label}", fontsize=8)
        ax_over.imshow(overlay(image, cam), interpolation="nearest")
        ax_over.set_title("overlay", fontsize=8)
        if is_flat:
            ax_heat.text(0.5, 0.5, "constant map:\nno spatial signal", ha="center", va="center",
                         transform=ax_heat.transAxes, fontsize=8, color="white")
        on_ink, ink_area = ink_mass(cam, image, background)
        ink = np.where(is_ink, cam.numpy(), np.nan)
        ax_ink.imshow(paper)
        ax_ink.imshow(ink, cmap=CMAP, vmin=0, vmax=1, interpolation="nearest")
        ax_ink.set_title(f"{on_ink:.0%} of map on ink ({ink_area:.0%} of pixels)"
                         if not math.isnan(on_ink) else "no map mass", fontsize=8)
        for ax in axes[row]:
            _blank(ax)
    _save(fig, path)


def save_mistakes_grid(path: str | Path, cells: list[dict], classes: list[str], columns: int = 4) -> None:
    """One PNG of confident mistakes: per cell the overlay for the predicted class and for the true class.

    Each cell: {image (3 x H x W uint8), pred_map, true_map (H x W), pred, target (ints), probs, name}.
    """
    rows = max(1, math.ceil(len(cells) / columns))
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2 * columns * 2.0, rows * 2.3 + 0.4), dpi=DPI, squeeze=False)
    fig.suptitle(f"{len(cells)} most confident mistakes: where the model looked for its wrong answer "
                 f"(left) and for the true class (right)", fontsize=10)
    for ax in axes.flat:
        _blank(ax)
        ax.axis("off")
    for i, cell in enumerate(cells):
        ax_pred, ax_true = axes[i // columns, 2 * (i % columns)], axes[i // columns, 2 * (i % columns) + 1]
        for ax, key, cls, who in ((ax_pred, "pred_map", cell["pred"], "pred"), (ax_true, "true_map", cell["target"], "true")):
            ax.axis("on")
            ax.imshow(overlay(cell["image"], cell[key]), interpolation="nearest")
            ax.set_title(f"{who}: {short(classes[cls], 16)} {cell['probs'][cls]:.0%}", fontsize=7,
                         color="firebrick" if who == "pred" else "darkgreen")
        ax_pred.set_xlabel(short(cell["name"], 20), fontsize=6)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (rows * 2.3 + 0.4)))
    _save(fig, path)
