"""What the model sees: a few training images as loaded, then through the recipe's training
transforms and each kind of mixing the recipe uses, with the soft targets written under each image."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.data.batches.factory import choose_path, device_augment  # noqa: E402
from engine.data.batches.loader import ImageDataset  # noqa: E402
from engine.data.pixels.background import resolve_background  # noqa: E402
from engine.data.pixels.device_augment import pad_to_canvas  # noqa: E402
from engine.data.pixels.transforms import (IMAGENET_MEAN, IMAGENET_STD, Normalize, build_eval_transform,  # noqa: E402
                                           recipe_train_transform)
from engine.data.tables.audit import audit_table  # noqa: E402
from engine.data.tables.demo_digits import ensure_demo_data  # noqa: E402
from engine.data.tables.read import read_train_table  # noqa: E402
from engine.errors import UserError  # noqa: E402
from engine.recipe import Recipe  # noqa: E402
from engine.train.losses import smooth_targets  # noqa: E402
from engine.train.mix import Mixer  # noqa: E402


MEAN, STD = IMAGENET_MEAN, IMAGENET_STD  # mixing is linear: any normalisation previews alike
MAX_COLUMNS = 8


def _to_pixels(x: torch.Tensor) -> np.ndarray:
    """Normalised float CHW -> HWC uint8 for imshow."""
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _label(soft: torch.Tensor, classes: list[str]) -> str:
    top = soft.topk(min(2, len(classes)))
    parts = [f"{classes[int(i)]} {float(w):.2f}" for w, i in zip(top.values, top.indices) if w > 0.005]
    return "\n".join(parts)


def _find_step(mixer: Mixer, x: torch.Tensor, y: torch.Tensor, mode: str, epoch: int):
    """The first step of `epoch` at which the mixer picks `mode`: the batch as training would mix it there."""
    for step in range(1000):
        mixed, soft, info = mixer(x, y, epoch, step)
        if info.mode == mode:
            return mixed, soft, info
    return None


def write_augment_preview(recipe: Recipe, path: str | Path, columns: int = MAX_COLUMNS, log=print) -> Path:
    """A grid: the images as decoded, then one row per mixing mode of the recipe (none, mixup, cutmix)."""
    ensure_demo_data(recipe.data_dir, log)
    table = audit_table(read_train_table(recipe.data_dir, recipe.train_csv), recipe.num_classes).table
    if table.empty:
        raise UserError("no usable training rows to preview; run `python -m engine.explore` to see why")
    n = min(columns, recipe.batch_size, len(table))
    rows = table.sample(n=n, random_state=recipe.seed).reset_index(drop=True)
    classes = {int(t): c for t, c in zip(table["target"], table["class_name"])}
    names = [classes.get(i, str(i)) for i in range(max(classes) + 1)]
    seen = ImageDataset(rows["path"], rows["target"], build_eval_transform(recipe.image_size), recipe.seed)
    normalize = Normalize(MEAN, STD)
    paper = resolve_background(recipe.background, table["path"]).rgb  # fills as training will
    path_here, _ = choose_path(recipe, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    where = "device" if path_here in ("device", "resident") else "workers"
    if where == "device":  # what training does there: one batched warp of the padded canvas
        canvas = pad_to_canvas([ImageDataset(rows["path"], rows["target"], None)[i][0] for i in range(n)], paper)
        batch_augment = device_augment(recipe, 0, paper)

        def augmented(epoch: int) -> torch.Tensor:
            return normalize(batch_augment(canvas, epoch, 0))
    else:
        trained = ImageDataset(rows["path"], rows["target"], recipe_train_transform(recipe, paper), recipe.seed)

        def augmented(epoch: int) -> torch.Tensor:
            return normalize(torch.stack([trained[(epoch, i)][0] for i in range(n)]))
    y = torch.tensor(rows["target"].tolist())
    mixer = Mixer(len(names), recipe.mixup_ratio, recipe.cutmix_ratio, recipe.mix_alpha, recipe.label_smoothing,
                  recipe.seed)
    grid = [("as decoded (eval view)", normalize(torch.stack([seen[i][0] for i in range(n)])),
             smooth_targets(y, len(names), 0.0))]
    modes = [("none", 1 - recipe.mixup_ratio - recipe.cutmix_ratio), ("mixup", recipe.mixup_ratio),
             ("cutmix", recipe.cutmix_ratio)]
    for epoch, (mode, chance) in enumerate(m for m in modes if m[1] > 1e-9):
        mixed, soft, info = _find_step(mixer, augmented(epoch), y, mode, epoch)
        lam = f", lam {info.lam:.2f}" if mode != "none" else ""
        grid.append((f"augment='{recipe.augment}' on the {where}, {mode} (p={chance:.2f}{lam})", mixed, soft))
    fig, axes = plt.subplots(len(grid), n, figsize=(1.9 * n, 2.25 * len(grid)), squeeze=False)
    for r, (title, batch, soft) in enumerate(grid):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(_to_pixels(batch[c]))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(_label(soft[c], names), fontsize=7)
        axes[r][0].set_title(title, loc="left", fontsize=9)
    fig.suptitle(f"what the model sees: {recipe.name}, {recipe.image_size} px, one batch of {n}", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
