"""Exploratory plots as PNG files (matplotlib, Agg), readable at 500 classes, train and test side by side.

Each function takes the per-image table (split, class_name, width, height, format, file_bytes,
is_colour, ink) and writes one figure; `write_plots` writes them all and returns (title, path) pairs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from engine.explore import facts  # noqa: E402

SPLIT_COLOURS = {"train": "#1f77b4", "test": "#ff7f0e"}
NAMED_BARS = 60  # up to this many classes every bar is labelled; beyond, only the extremes are named


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _splits(images: pd.DataFrame):
    return [(s, images[images["split"] == s]) for s in ("train", "test") if (images["split"] == s).any()]


def _hist(ax, values: pd.Series, bins, split: str, label: str | None = None) -> None:
    """Histogram as each bin's share of the split (train and test compare whatever their sizes)."""
    values = values.astype(float).to_numpy()
    ax.hist(values, bins=bins, weights=np.full(len(values), 1 / max(1, len(values))), alpha=0.5,
            color=SPLIT_COLOURS[split], label=label or split)


def class_counts_plot(counts: pd.Series, path: Path) -> Path:
    """Images per class, sorted, with the imbalance ratio; at many classes only the extremes are named."""
    counts = counts.sort_values(ascending=False)
    ratio = counts.max() / max(1, counts.min())
    fig, ax = plt.subplots(figsize=(12, 4.5))
    x = np.arange(len(counts))
    ax.bar(x, counts.to_numpy(), width=1.0 if len(counts) > NAMED_BARS else 0.8, color=SPLIT_COLOURS["train"])
    ax.axhline(counts.mean(), color="k", lw=1, ls="--", label=f"mean {counts.mean():.1f}")
    if len(counts) <= NAMED_BARS:
        ax.set_xticks(x, counts.index.astype(str), rotation=90, fontsize=max(5, 10 - len(counts) // 10))
    else:
        ax.set_xlabel("classes, most to fewest images")
        few = "\n".join(f"{n}: {c}" for n, c in counts.tail(5).items())
        many = "\n".join(f"{n}: {c}" for n, c in counts.head(5).items())
        ax.text(0.99, 0.97, f"fewest\n{few}", transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox=dict(fc="white", alpha=0.8))
        ax.text(0.30, 0.97, f"most\n{many}", transform=ax.transAxes, ha="left", va="top", fontsize=8,
                bbox=dict(fc="white", alpha=0.8))
    ax.set_ylabel("training images")
    ax.set_title(f"images per class: {len(counts)} classes, {counts.min()}..{counts.max()} per class, "
                 f"imbalance ratio {ratio:.1f}")
    ax.legend(loc="upper center")
    return _save(fig, path)


def sizes_plot(images: pd.DataFrame, path: Path) -> Path:
    """Width against height, and the aspect-ratio histogram, train vs test."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    aspect = np.log2(images["width"] / images["height"])
    bins = np.linspace(min(-2.0, aspect.min()), max(2.0, aspect.max()), 41)
    for split, part in _splits(images):
        left.scatter(part["width"], part["height"], s=4, alpha=0.3, color=SPLIT_COLOURS[split],
                     label=f"{split} ({len(part)})", rasterized=True)
        _hist(right, np.log2(part["width"] / part["height"]), bins, split)
    left.set(xlabel="width (px)", ylabel="height (px)", title="image sizes")
    left.legend()
    ticks = [-2, -1, 0, 1, 2]
    right.set_xticks(ticks, ["1:4", "1:2", "1:1", "2:1", "4:1"])
    right.set(xlabel="aspect ratio (width : height, log scale)", ylabel="share of the split's images",
              title="aspect ratios")
    right.legend()
    return _save(fig, path)


def files_plot(images: pd.DataFrame, path: Path) -> Path:
    """File sizes (log scale) and file formats, train vs test."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    kb = images["file_bytes"].astype(float) / 1024
    bins = np.logspace(np.log10(max(kb.min(), 0.01)), np.log10(max(kb.max(), 0.02)) + 1e-3, 41)
    for split, part in _splits(images):
        _hist(left, part["file_bytes"] / 1024, bins, split)
    left.set_xscale("log")
    left.set(xlabel="file size (KiB)", ylabel="share of the split's images", title="file sizes")
    left.legend()
    table = images.groupby(["format", "split"]).size().unstack(fill_value=0)
    share = table / table.sum(axis=0)
    _grouped_bars(right, share, "share of the split's images", "file formats")
    return _save(fig, path)


def _grouped_bars(ax, share: pd.DataFrame, ylabel: str, title: str) -> None:
    share = share[[s for s in SPLIT_COLOURS if s in share.columns]]
    x = np.arange(len(share.index))
    width = 0.8 / max(1, len(share.columns))
    for k, split in enumerate(share.columns):
        ax.bar(x + k * width, share[split], width, color=SPLIT_COLOURS.get(split), label=split)
        for xi, v in zip(x, share[split]):
            ax.text(xi + k * width, v, f"{100 * v:.1f}%", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x + width * (len(share.columns) - 1) / 2, share.index.astype(str))
    ax.set(ylabel=ylabel, title=title, ylim=(0, 1.12), xlim=(-0.5, max(2, len(x)) - 0.5))
    ax.legend()


def colour_ink_plot(images: pd.DataFrame, path: Path) -> Path:
    """Colour vs grayscale share, and ink density (share of non-paper pixels), train vs test."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    kind = images["is_colour"].astype(bool).map({True: "colour", False: "grayscale"})
    table = pd.crosstab(kind, images["split"])
    _grouped_bars(left, table / table.sum(axis=0), "share of the split's images", "colour vs grayscale content")
    bins = np.linspace(0, max(0.05, float(images["ink"].max())), 51)
    for split, part in _splits(images):
        _hist(right, part["ink"], bins, split, f"{split} (median {100 * part['ink'].median():.1f}%)")
    right.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    right.set(xlabel="ink density (pixels that are not paper)", ylabel="share of the split's images",
              title="ink density: a few strokes to dense shading")
    right.legend()
    return _save(fig, path)


def ink_by_class_plot(images: pd.DataFrame, path: Path) -> Path:
    """Median ink density per class, sorted: classes drawn much lighter or darker than the rest stand out."""
    train = images[images["split"] == "train"]
    median = train.groupby("class_name")["ink"].median().sort_values()
    fig, ax = plt.subplots(figsize=(12, 4))
    x = np.arange(len(median))
    ax.plot(x, median.to_numpy(), marker="." if len(median) <= NAMED_BARS else None)
    if len(median) <= NAMED_BARS:
        ax.set_xticks(x, median.index.astype(str), rotation=90, fontsize=max(5, 10 - len(median) // 10))
    else:
        light = "\n".join(f"{n}: {100 * v:.2f}%" for n, v in median.head(5).items())
        dark = "\n".join(f"{n}: {100 * v:.2f}%" for n, v in median.tail(5).items())
        ax.text(0.01, 0.97, f"lightest\n{light}", transform=ax.transAxes, va="top", fontsize=8,
                bbox=dict(fc="white", alpha=0.8))
        ax.text(0.99, 0.03, f"darkest\n{dark}", transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
                bbox=dict(fc="white", alpha=0.8))
        ax.set_xlabel("classes, lightest to darkest")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set(ylabel="median ink density", title="ink density per class (training images)")
    return _save(fig, path)


def samples_plot(images: pd.DataFrame, classes: Sequence[str], path: Path, per_class: int = 8,
                 seed: int = 0, thumb: int = 96, subset_note: str = "") -> Path:
    """A grid: one row per chosen class, `per_class` random training images each (one canvas, one axes);
    `subset_note` says which classes are left out when not all are shown."""
    rng = np.random.default_rng(seed)
    cell = thumb + 6
    canvas = Image.new("RGB", (per_class * cell, len(classes) * cell), (235, 235, 235))
    train = images[images["split"] == "train"]
    for r, name in enumerate(classes):
        paths = train.loc[train["class_name"] == name, "path"].to_numpy()
        chosen = rng.choice(paths, size=min(per_class, len(paths)), replace=False) if len(paths) else []
        for c, image_path in enumerate(chosen):
            pixels = Image.fromarray(facts.decode_for_facts(image_path)[4]).convert("RGB")
            pixels.thumbnail((thumb, thumb))
            canvas.paste(pixels, (c * cell + (cell - pixels.width) // 2, r * cell + (cell - pixels.height) // 2))
    fig, ax = plt.subplots(figsize=(1.3 * per_class + 1.5, 1.3 * len(classes) + 0.6))
    ax.imshow(np.asarray(canvas))
    ax.set_yticks([r * cell + cell / 2 for r in range(len(classes))], [str(c) for c in classes], fontsize=9)
    ax.set_xticks([])
    ax.set_title(f"samples per class ({per_class} random images of each)" + (f"\n{subset_note}" if subset_note else ""),
                 fontsize=10)
    return _save(fig, path)


def duplicates_plot(pairs: Sequence[tuple[str, str, str]], path: Path, thumb: int = 110) -> Path:
    """Each duplicate pair side by side (copy | its original) with what kind of duplicate it is."""
    columns = min(3, len(pairs))
    rows = -(-len(pairs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.1 * rows), squeeze=False)
    for ax, (copy, original, caption) in zip(axes.ravel(), pairs):
        canvas = Image.new("RGB", (2 * thumb + 8, thumb), (235, 235, 235))
        for k, image_path in enumerate((copy, original)):
            pixels = Image.fromarray(facts.decode_for_facts(image_path)[4]).convert("RGB")
            pixels.thumbnail((thumb, thumb))
            canvas.paste(pixels, (k * (thumb + 8) + (thumb - pixels.width) // 2, (thumb - pixels.height) // 2))
        ax.imshow(np.asarray(canvas))
        ax.set_title(caption, fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("duplicates: the flagged image (left) and the image it copies (right)")
    return _save(fig, path)


def write_plots(images: pd.DataFrame, counts: pd.Series, sample_classes: Sequence[str], out_dir: Path,
                seed: int = 0) -> list[tuple[str, Path]]:
    """Every EDA figure as a PNG in out_dir; returns (title, path) in report order."""
    out_dir = Path(out_dir)
    plots = [("Images per class", class_counts_plot(counts, out_dir / "class_counts.png")),
             ("Image sizes and aspect ratios", sizes_plot(images, out_dir / "sizes.png")),
             ("File sizes and formats", files_plot(images, out_dir / "files.png")),
             ("Colour and ink density", colour_ink_plot(images, out_dir / "colour_ink.png")),
             ("Ink density per class", ink_by_class_plot(images, out_dir / "ink_by_class.png"))]
    if len(sample_classes):
        note = subset_note(sample_classes, counts.index[counts > 0])
        plots.append((f"Samples per class{f' ({note})' if note else ''}",
                      samples_plot(images, sample_classes, out_dir / "samples.png", seed=seed, subset_note=note)))
    return plots


def subset_note(shown: Sequence[str], present: Sequence[str], named: int = 6) -> str:
    """'8 of 10 classes shown; not shown: a, b' (empty when every class is shown)."""
    shown_set = {str(c) for c in shown}
    left_out = [str(c) for c in present if str(c) not in shown_set]
    if not left_out:
        return ""
    more = f", ... ({len(left_out) - named} more)" if len(left_out) > named else ""
    return (f"{len(shown)} of {len(shown) + len(left_out)} classes shown; not shown: "
            f"{', '.join(left_out[:named])}{more} (pick them with --classes)")
