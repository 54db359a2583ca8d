"""Prediction: checkpoints -> models, class probabilities over a table of images, TTA and ensembles.

An ensemble's probabilities are the mean of the softmax of every (model, view) pair: the views are
the eval crop, its flips (TTA: the flips the model trained with, its recipe's `flip`: "h" 2 views, "hv" 4) and
the same at other scales (multi-scale TTA). Models whose
eval transform is the same share one pass over the images, so K folds decode each image once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from engine import checkpoint, run_folder
from engine.data.batches.factory import prediction_batches
from engine.data.batches.loader import UNREADABLE, ImageDataset, default_num_workers, eval_dataset
from engine.data.pixels.background import WHITE, checkpoint_background
from engine.data.pixels.transforms import DEFAULT_CROP_PCT, FLIP_VIEWS, IMAGENET_MEAN, IMAGENET_STD, Normalize
from engine.data.stores import feature_store as fs
from engine.data.tables.read import class_list_difference
from engine.errors import UserError
from engine.models import model_from_recipe
from engine.recipe import Recipe, from_dict
from engine.system.device import (PRECISION_NAMES, autocast, autocast_dtype, device_feed, memory_format,
                                  use_channels_last)
from engine.system.distributed import Dist
from engine.system.progress import progress
from engine.train.late_read import LateRead


@dataclass
class Member:
    """One checkpoint of an ensemble, ready to run: the model on its device and how it sees images."""
    path: Path
    model: torch.nn.Module
    normalize: Normalize
    recipe: Recipe
    classes: list[str]
    crop_pct: float
    background: tuple[int, int, int] = WHITE  # the paper colour it trained on (engine.data.pixels.background)


def pick_device(name: str | None = None) -> torch.device:
    """`name` if given, else CUDA when available, else the CPU."""
    if name:
        try:
            device = torch.device(name)
        except RuntimeError as e:
            raise UserError(f"--device {name!r} is not a device name (cpu, cuda, cuda:1)") from e
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_member(path: str | Path, device: torch.device) -> Member:
    """Rebuild a checkpoint's model (eval mode, channels_last on CUDA) from the checkpoint alone."""
    ckpt = checkpoint.load_checkpoint(path)
    saved_recipe, classes, data = checkpoint.saved_base(ckpt)
    recipe = from_dict(saved_recipe)
    model = model_from_recipe(recipe, classes, weights=False)  # the recipe's head (linear or mlp), no download
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"'{path}': weights do not fit {recipe.model} with {len(classes)} classes ({e})") from e
    channels_last = use_channels_last(recipe.channels_last, device)
    model = model.to(device, memory_format=memory_format(channels_last)).eval()
    data = data or {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "crop_pct": DEFAULT_CROP_PCT}
    normalize = Normalize(data["mean"], data["std"], channels_last).to(device)
    return Member(Path(path), model, normalize, recipe, classes, float(data["crop_pct"]), checkpoint_background(data))


def load_ensemble(paths: Sequence[str | Path], device: torch.device) -> list[Member]:
    """Every checkpoint as a Member; their class lists must be identical (same names, same order)."""
    if not paths:
        raise UserError("no checkpoints to predict with")
    members = [load_member(p, device) for p in paths]
    first = members[0]
    for m in members[1:]:
        if where := class_list_difference(first.classes, m.classes):
            raise UserError(f"cannot ensemble {first.path} and {m.path}: their classes differ ({where}); "
                            f"ensemble only models trained on the same class list")
    return members


def parse_scales(text: str | None) -> tuple[float, ...]:
    """'0.9,1.1' -> (0.9, 1.1): extra TTA scales of the image size."""
    if not text:
        return ()
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError as e:
        raise UserError(f"--tta-scales {text!r}: expected numbers separated by commas, e.g. 0.9,1.1") from e
    if any(s <= 0 for s in scales):
        raise UserError(f"--tta-scales {text!r}: scales must be positive")
    return scales


def view_groups(members: Sequence[Member], scales: Sequence[float]) -> dict[tuple[int, float, bool], list[Member]]:
    """(image size, crop_pct, is the trained size) -> the members that see the images through that eval view."""
    groups: dict[tuple[int, float, bool], list[Member]] = {}
    for m in members:
        for scale in (1.0, *scales):
            size = max(8, round(m.recipe.image_size * scale))
            groups.setdefault((size, m.crop_pct, size == m.recipe.image_size), []).append(m)
    return groups


@torch.inference_mode()
def predict_probs(members: Sequence[Member], image_paths: Sequence[str], batch_size: int = 128, flip: bool = False,
                  scales: Sequence[float] = (), num_workers: int | None = None,
                  show_progress: bool = True, use_store: bool = True,
                  weights: Sequence[float] | None = None, unreadable: list[int] | None = None,
                  resident: bool | None = None) -> torch.Tensor:
    """Mean softmax (N x C, float32, CPU) of every member over every view of every image, in input order.

    Members trained from a feature store (`use_store`) read stored backbone features of each view instead.
    `weights` (one per member, summing to 1): a weighted mean of the members' own view means instead.
    An image that cannot be decoded stops with its name, unless `unreadable` is a list: then its row index
    goes there and its row is the uniform distribution (the model saw nothing). The images come from a batch
    source (engine/data/batches/factory.prediction_batches): eval crops resident on the device (`resident`;
    None: on CUDA when they fit), else the loader workers; every TTA view of a batch is one forward per member."""
    if not members:
        raise UserError("no checkpoints to predict with")
    device = next(members[0].model.parameters()).device
    n, num_classes = len(image_paths), len(members[0].classes)
    workers = default_num_workers() if num_workers is None else num_workers
    amp = autocast_dtype("auto", device)
    groups = view_groups(members, scales)
    total = torch.zeros(n, num_classes, device=device)
    views, bad = 0, set()
    def member_views(m: Member) -> int:
        return len(tta_flips(m, flip))  # a store holds the same views: the eval crop and each TTA flip

    weight = {id(m): None if weights is None else float(w) / ((1 + len(scales)) * member_views(m))
              for m, w in zip(members, weights if weights is not None else members)}  # w over the member's views
    for (size, crop_pct, at_trained_size), group in groups.items():
        stored = [m for m in group if use_store and trained_from_store(m.recipe)]
        views += sum(member_views(m) for m in stored)
        # the images the stores were built from (other scales: a raw decode)
        dataset = eval_dataset(image_paths, size, crop_pct, as_validated=at_trained_size) if stored else None
        for part in ([stored] if weights is None else [[m] for m in stored]) if stored else []:
            summed = stored_probs(part, dataset, size, crop_pct, at_trained_size, flip, amp, batch_size, workers,
                                  show_progress)
            total += summed if weights is None else weight[id(part[0])] * summed
        group = [m for m in group if m not in stored]
        if not group:
            continue
        source = prediction_batches(image_paths, size, crop_pct, at_trained_size, device, batch_size, workers,
                                    resident and at_trained_size, show_progress)
        marks, start, late = [], 0, LateRead(device)
        try:
            for x, y in progress(source, len(source), f"predict {size}px", show_progress):
                marks.append(y)
                seen = late.push((y == UNREADABLE).any().view(1))  # read a batch late: no wait per batch
                if seen is not None and seen[0][0] and unreadable is None:
                    stop_at_unreadable(marks, image_paths)
                rows = slice(start, start + y.shape[0])
                for m in group:
                    p = member_probs(m, x, amp, size, flip)
                    total[rows] += p if weight[id(m)] is None else weight[id(m)] * p
                start += y.shape[0]
        finally:
            source.stop()
        bad_rows = torch.cat(marks).cpu() == UNREADABLE if marks else torch.zeros(0, dtype=torch.bool)
        if bad_rows.any() and unreadable is None:
            stop_at_unreadable(marks, image_paths)
        bad.update(bad_rows.nonzero()[:, 0].tolist())
        views += sum(member_views(m) for m in group)
    probs = (total / views if weights is None else total).cpu()
    if bad:
        probs[sorted(bad)] = 1.0 / num_classes
        unreadable.extend(sorted(bad))
    return probs


def tta_flips(m: Member, flip: bool) -> tuple[tuple[int, ...], ...]:
    """The flipped dims of each view: with TTA the flips the member trained with, else the plain view only."""
    return FLIP_VIEWS[m.recipe.flip] if flip else ((),)


def stop_at_unreadable(marks: list[torch.Tensor], image_paths: Sequence[str]) -> None:
    """Name the first image that could not be decoded and stop (--bad-images error)."""
    first = int((torch.cat(marks).cpu() == UNREADABLE).nonzero()[0, 0])
    raise UserError(f"image '{image_paths[first]}' (row {first}) could not be decoded; remove it, or "
                    f"predict the rest with --bad-images skip (its row gets uniform probabilities)")


def member_probs(m: Member, x: torch.Tensor, amp: torch.dtype | None, size: int, flip: bool) -> torch.Tensor:
    """Summed softmax of one member over every TTA view of a batch of pixels: the views concatenated into one
    forward (one per view only when that batch does not fit in memory)."""
    xn = m.normalize(x)
    views = tta_flips(m, flip)
    if len(views) > 1:
        try:
            batch = torch.cat([xn.flip(dims) if dims else xn for dims in views])
            return run_model(m, batch, amp, size).view(len(views), xn.shape[0], -1).sum(0)
        except UserError as e:
            if not isinstance(e.__cause__, torch.OutOfMemoryError):
                raise
            batch = None
    return sum(run_model(m, xn.flip(dims) if dims else xn, amp, size) for dims in views)


def trained_from_store(recipe: Recipe) -> bool:
    """A frozen backbone whose head trained from stored features: predict from stored features too."""
    return recipe.feature_views > 0 and recipe.freeze == "backbone"


@torch.inference_mode()
def stored_probs(members: Sequence[Member], dataset: ImageDataset, size: int, crop_pct: float, pre_resized: bool,
                 flip: bool, amp: torch.dtype | None, batch_size: int, workers: int, show_progress: bool) -> torch.Tensor:
    """Summed softmax of each member's head over stored features of each view (members sharing a backbone share
    one store: K folds of a frozen backbone cost one backbone pass, reused by later predictions)."""
    device = next(members[0].model.parameters()).device
    total = torch.zeros(len(dataset), len(members[0].classes), device=device)
    for m in members:
        views = fs.eval_views(tta_flips(m, flip))  # "hv": the eval crop and its 3 flips
        key = fs.store_key(m.recipe.model, fs.tensor_identity(m.model), size, crop_pct, dataset.paths, views,
                           PRECISION_NAMES[amp], m.recipe.feature_dtype, pre_resized=pre_resized)
        builder = fs.Builder(m.model, m.normalize, lambda view: fs.view_images(view, None, dataset), amp, batch_size,
                             workers)
        store = fs.ensure(key, builder, Dist(device=device), show_progress)
        for view in views:
            features = store.view(view)
            for rows in torch.arange(len(dataset)).split(4096):
                with autocast(device, amp):
                    logits = m.model.get_classifier()(device_feed(features[rows], device).float())
                total[rows.to(device)] += logits.float().softmax(1)
    return total


def run_model(m: Member, x: torch.Tensor, amp: torch.dtype | None, size: int) -> torch.Tensor:
    """Softmax of one model on one normalised batch; a clear error if the model cannot take this size."""
    with autocast(x.device, amp):
        try:
            logits = m.model(x)
        except torch.OutOfMemoryError as e:
            raise UserError(f"out of memory predicting {size}px images with {m.recipe.model}; lower --batch-size") from e
        except (RuntimeError, AssertionError) as e:
            if size == m.recipe.image_size:
                raise
            raise UserError(f"{m.recipe.model} ({m.path}) cannot take {size}px images for multi-scale TTA "
                            f"({type(e).__name__}); drop --tta-scales for this model") from e
    return logits.float().softmax(1)


def check_images_exist(paths: Sequence[str], what: str, root_hint: str) -> None:
    """Every image must exist before the long pass starts; name the missing ones."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise UserError(f"{len(missing)} of {len(paths)} {what} images not found (first: {missing[0]}); "
                        f"{root_hint}")


def fold_checkpoints(run_dir: Path, kfold: bool) -> list[Path]:
    """A run folder's fold0/best.pt, or with `kfold` every fold's best.pt (an error lists missing folds)."""
    trained_folds = int(run_folder.read_recipe_values(run_dir).get("folds", 1))
    folds = trained_folds if kfold else 1
    if trained_folds > 1 and not kfold:
        print(f"note: {run_dir.name} has {trained_folds} folds; using fold0 only (--kfold averages all of them)")
    paths = [run_folder.fold_dir(run_dir, k) / run_folder.BEST for k in range(folds)]
    missing = [p.parent.name for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"{run_dir} lacks {run_folder.BEST} for {', '.join(missing)} of {folds} fold(s); train them with "
                        f"python train.py --resume {run_dir}  (or --fold K on each machine)")
    unfinished = [p.parent.name for p in paths if not checkpoint.is_finished(p.parent / run_folder.LAST)]
    if unfinished:  # a stopped fold's best.pt is an undertrained model: never average it in silently
        raise UserError(f"{run_dir}: {', '.join(unfinished)} did not finish training; resume with "
                        f"python train.py --resume {run_dir}, or pass a fold's {run_folder.BEST} explicitly to use it anyway")
    return paths


def resolve_targets(targets: Sequence[str], kfold: bool, runs_dir: str | Path = "runs") -> list[Path]:
    """Run folders and/or checkpoint files -> checkpoint paths; none given: the newest run under runs_dir."""
    if not targets:
        targets = [str(run_folder.newest_run(runs_dir))]
    paths: list[Path] = []
    for t in targets:
        p = Path(t)
        if p.is_dir():
            paths += fold_checkpoints(p, kfold)
        elif p.is_file():
            paths.append(p)
        else:
            raise UserError(f"'{t}' not found; pass a run folder (runs/<recipe>/<time>) or a checkpoint (.pt)")
    return paths
