"""Evaluation report of a run's validation predictions (oof.csv or any val_predictions.csv).

    python -m engine.report RUN_OR_CSV [--data-dir DIR]

Writes into the run folder (or the CSV's folder): confused_pairs.csv and report_confusion.png (the
worst classes against what they are mistaken for), report_per_class.png, report_curves.png (every
fold's metrics.csv) and report_mistakes.png (the most confident mistakes, with their images).
Every plot stays readable at 500 classes: no plot labels more than a few dozen classes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # figures without pyplot: no GUI backend, no global state
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageOps

from engine import run_folder
from engine.data.pixels.images import load_image
from engine.errors import UserError
from engine.evaluate import label_issues
from engine.evaluate.predictions import class_names, confident_mistakes, read_predictions
from engine.system.atomic import write_atomic, write_csv
from engine.system.outputs import OutputGuard, csv_header

REPORT_FILES = ("confused_pairs.csv", "report_confusion.png", "report_per_class.png", "report_curves.png",
                "report_mistakes.png", run_folder.LABEL_ISSUES, "report_label_issues.png")  # next to the predictions it reads

WORST = 20  # classes in the heat map rows
MISTAKES = 24  # images in the gallery
CELL, CAPTION = 200, 40  # gallery pixels: each image's square, and the two caption lines above it


def confusion(table: pd.DataFrame, n: int) -> np.ndarray:
    """n x n counts: rows are true classes, columns predicted classes."""
    t, p = table["target"].to_numpy(int), table["pred"].to_numpy(int)
    return np.bincount(t * n + p, minlength=n * n).reshape(n, n)


def confused_pairs(conf: np.ndarray, names: list[str], k: int = 20) -> pd.DataFrame:
    """The k most frequent (true, predicted) mistakes with their share of the true class."""
    off = conf.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:k]
    rows = [(names[i], names[j], int(off[i, j]), off[i, j] / max(1, conf[i].sum()))
            for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j] > 0]
    return pd.DataFrame(rows, columns=["true", "predicted", "count", "share_of_true"])


def save(fig: Figure, path: Path) -> Path:
    # no bbox_inches="tight": constrained layout already fits every label, and "tight" draws the figure twice
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100), binary=True)
    return path


def plot_worst_confusion(conf: np.ndarray, names: list[str], path: Path, k: int = WORST) -> Path:
    """Heat map: the k least accurate classes (rows) against themselves and their top confusions (columns)."""
    totals = conf.sum(1)
    acc = np.where(totals > 0, np.diag(conf) / np.maximum(totals, 1), np.inf)
    rows = [i for i in np.argsort(acc, kind="stable")[:k] if totals[i] > 0]
    off = conf.astype(float)
    np.fill_diagonal(off, 0)
    cols = list(rows)
    for i in rows:  # add each worst class's two biggest confusions, up to 1.5 k columns
        for j in np.argsort(off[i])[::-1][:2]:
            if off[i, j] > 0 and j not in cols and len(cols) < int(1.5 * k):
                cols.append(int(j))
    share = conf[np.ix_(rows, cols)] / np.maximum(totals[rows], 1)[:, None]
    fig = Figure(figsize=(2 + 0.45 * len(cols), 2 + 0.4 * len(rows)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), [names[j] for j in cols], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{names[i]} ({acc[i]:.0%})" for i in rows], fontsize=8)
    for r in range(len(rows)):
        for c in range(len(cols)):
            if share[r, c] >= 0.05:
                ax.text(c, r, f"{share[r, c]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if share[r, c] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true class (accuracy)")
    ax.set_title(f"the {len(rows)} least accurate classes: share of each predicted as ...")
    fig.colorbar(image, ax=ax, fraction=0.03)
    return save(fig, path)


def plot_per_class(conf: np.ndarray, names: list[str], path: Path, k: int = 30) -> Path:
    """Left: every class's accuracy, sorted (no labels); right: the k worst classes, labelled."""
    totals = conf.sum(1)
    present = np.flatnonzero(totals > 0)
    acc = np.diag(conf)[present] / totals[present]
    order = np.argsort(acc, kind="stable")
    fig = Figure(figsize=(14, max(4, 0.25 * min(k, len(order)) + 1.5)), layout="constrained")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    left.plot(np.arange(len(order)), acc[order], color="tab:blue")
    left.axhline(acc.mean(), color="tab:red", linestyle="--", label=f"mean {acc.mean():.3f}")
    left.set_xlabel(f"classes sorted by accuracy ({len(order)} with validation images)")
    left.set_ylabel("accuracy")
    left.set_ylim(0, 1.02)
    left.legend(loc="lower right")
    worst = order[:k]
    right.barh(np.arange(len(worst)), acc[worst], color="tab:orange")
    right.set_yticks(np.arange(len(worst)), [f"{names[present[i]]} (n={totals[present[i]]})" for i in worst], fontsize=8)
    right.invert_yaxis()
    right.set_xlim(0, 1)
    right.set_title(f"the {len(worst)} least accurate classes")
    return save(fig, path)


def plot_curves(run_dir: Path, path: Path) -> Path | None:
    """Loss and accuracy per epoch for every fold (train dashed, validation solid)."""
    files = run_folder.fold_files(run_dir, run_folder.METRICS)
    if not files:
        return None
    fig = Figure(figsize=(13, 4.5), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    for i, f in enumerate(files):
        m = pd.read_csv(f)
        color = f"C{i % 10}"
        fold = f.parent.name
        loss_ax.plot(m["epoch"], m["train_loss"], "--x", color=color, alpha=0.7, markersize=3)
        loss_ax.plot(m["epoch"], m["val_loss"], "-o", color=color, markersize=3, label=fold)
        acc_ax.plot(m["epoch"], m["train_acc"], "--x", color=color, alpha=0.7, markersize=3)
        acc_ax.plot(m["epoch"], m["val_acc"], "-o", color=color, markersize=3, label=fold)
    loss_ax.set(title="loss (dashed: train, solid: validation)", xlabel="epoch", ylabel="loss")
    acc_ax.set(title="accuracy (dashed: train, solid: validation)", xlabel="epoch", ylabel="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
    return save(fig, path)


def plot_mistakes(table: pd.DataFrame, names: list[str], image_root: Path | None, path: Path,
                  k: int = MISTAKES) -> Path | None:
    """The k most confident wrong predictions: the image, its true class and what it was taken for."""
    wrong = confident_mistakes(table, k)
    if wrong.empty:
        return None
    captions = [f"true: {names[int(r.target)]}\npred: {names[int(r.pred)]} ({r.confidence:.2f})"
                for r in wrong.itertuples()]
    return plot_gallery(image_paths(wrong["image_path"], image_root), captions, "most confident mistakes", path)


def plot_label_issues(issues: pd.DataFrame, typical: dict[int, str], image_root: Path | None, path: Path,
                      k: int = MISTAKES // 2) -> Path | None:
    """The k most suspect training rows, each beside the typical image of the class suggested for it."""
    top = issues.head(k)
    if top.empty:
        return None
    paths, captions = [], []
    for r in top.itertuples():
        paths += [r.image_path, typical.get(int(r.suggested), "")]
        captions += [f"given: {r.class_name}\nsuggested: {r.suggested_name} (q={r.label_quality:.2f})",
                     f"typical {r.suggested_name}\n"]
    return plot_gallery(image_paths(paths, image_root), captions,
                        "label issues: the most suspect training rows (left), the suggested class's typical "
                        "image (right)",
                        path)


def image_paths(paths, image_root: Path | None) -> list[Path]:
    """The table's image paths as files (relative to image_root when there is one)."""
    return [Path(p) if image_root is None else image_root / str(p) for p in paths]


def plot_gallery(paths: list[Path], captions: list[str], title: str, path: Path) -> Path:
    """The images on one montage, each under its two-line caption."""
    image, cells = mistake_montage(paths)
    # one image in one axes: 24 separate axes cost matplotlib about a second to lay out
    fig = Figure(figsize=(image.shape[1] / 100, image.shape[0] / 100 + 0.4))
    ax = fig.add_axes((0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    ax.imshow(image, interpolation="nearest")
    ax.axis("off")
    for (x, y, found), caption in zip(cells, captions):
        ax.text(x + CELL / 2, y - 4, caption, ha="center", va="bottom", fontsize=8)
        if not found:
            ax.text(x + CELL / 2, y + CELL / 2, "image not found", ha="center", va="center", fontsize=8)
    fig.suptitle(title)
    return save(fig, path)


def mistake_montage(paths: list[Path], cols: int = 6) -> tuple[np.ndarray, list[tuple[int, int, bool]]]:
    """The images in reading order on one white H x W x 3 uint8 montage, each fitted (aspect kept, framed
    in grey) into a CELL x CELL square below a CAPTION band; per image: its square's (x, y) and whether it read."""
    rows = -(-len(paths) // cols)
    montage = np.full((rows * (CELL + CAPTION), cols * CELL, 3), 255, dtype=np.uint8)
    cells = []
    for i, path in enumerate(paths):
        x, y = (i % cols) * CELL, (i // cols) * (CELL + CAPTION) + CAPTION
        thumb = thumbnail(path, CELL - 8)
        if thumb is not None:
            h, w = thumb.shape[:2]
            top, left = y + (CELL - h) // 2, x + (CELL - w) // 2
            montage[top - 1:top + h + 1, left - 1:left + w + 1] = 200  # the frame shows where white paper ends
            montage[top:top + h, left:left + w] = thumb
        cells.append((x, y, thumb is not None))
    return montage, cells


def thumbnail(path: Path, side: int) -> np.ndarray | None:
    """The image scaled to fit side x side (aspect kept, small ones enlarged) as H x W x 3 uint8, or None if it
    cannot be read."""
    try:
        image = load_image(str(path))
    except UserError:  # one unreadable image never fails the report
        return None
    fitted = ImageOps.contain(Image.fromarray(image.permute(1, 2, 0).numpy()), (side, side), Image.Resampling.BILINEAR)
    return np.asarray(fitted)


def make_report(source: str | Path, data_dir: str | None = None) -> list[Path]:
    """Write the report's files next to the predictions; returns their paths."""
    source = Path(source)
    table, out_dir = read_predictions(source)
    run_dir = run_folder.find_run_dir(source)
    recipe = run_folder.read_recipe_values(run_dir) if run_dir else {}
    n = max(int(table[["target", "pred"]].to_numpy().max()) + 1, int(recipe.get("num_classes") or 0))
    names = class_names(table, n)
    conf = confusion(table, n)
    pairs = confused_pairs(conf, names)
    pairs_path = out_dir / "confused_pairs.csv"
    headers = (",".join(pairs.columns), ",".join(label_issues.COLUMNS))
    guard = OutputGuard("engine.report", [source], example="report",
                        recognise=lambda p: p.name in REPORT_FILES and (p.suffix == ".png" or csv_header(p) in headers))
    for name in REPORT_FILES:  # all checked before the first is drawn
        guard.check(out_dir / name)
    write_csv(pairs, pairs_path)
    image_root = Path(data_dir) if data_dir else Path(recipe["data_dir"]) if "data_dir" in recipe else None
    written = [pairs_path, plot_worst_confusion(conf, names, out_dir / "report_confusion.png"),
               plot_per_class(conf, names, out_dir / "report_per_class.png"),
               plot_curves(run_dir, out_dir / "report_curves.png") if run_dir else None,
               plot_mistakes(table, names, image_root, out_dir / "report_mistakes.png")]
    if run_dir is not None and out_dir == run_dir:  # a k-fold run's out-of-fold rows: the suspect labels too
        written += write_issue_gallery(run_dir, image_root, out_dir / "report_label_issues.png")
    written = [p for p in written if p is not None]
    guard.wrote(*written)
    return written


def write_issue_gallery(run_dir: Path, image_root: Path | None, path: Path) -> list[Path | None]:
    """label_issues.csv and its gallery, for a run with out-of-fold probabilities (else nothing)."""
    inputs = label_issues.oof_inputs(run_dir)
    if inputs is None:
        return []
    table, probs = inputs
    issues = label_issues.write_label_issues(run_dir, table, probs)
    typical = label_issues.typical_rows(table, probs, set(issues["image_path"]))
    return [run_dir / run_folder.LABEL_ISSUES, plot_label_issues(issues, typical, image_root, path)]
