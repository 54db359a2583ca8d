"""The learning-rate range test (`python train.py RECIPE --find-lr`): a fresh model set up as the recipe trains it
(freeze, layer_decay, head_lr_scale, its parameter groups; only the head from stored features when feature_views is
set) takes one update per batch while the LR grows exponentially, until the smoothed loss diverges. It writes
runs/<recipe>/lr_find.png and suggests an lr; it writes no run folder and no checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from matplotlib.figure import Figure

from engine import run_folder
from engine.data.batches.factory import build_fold_batches
from engine.errors import UserError
from engine.models import data_config, model_from_recipe
from engine.recipe import Recipe
from engine.system import distributed
from engine.system.atomic import write_atomic
from engine.system.outputs import OutputGuard, drawn_by_matplotlib
from engine.train.loop import optimizer_update
from engine.train.state import build_train_state
from engine.train.training_data import load_data

SMOOTHING = 0.98  # of the loss's exponential moving average (debiased), as fastai's
DIVERGED = 4.0  # stop once the smoothed loss exceeds this multiple of its lowest value
FELL = 0.05  # the smoothed loss must fall by this share of its settled start for any suggestion
RULE = "steepest descent of the smoothed loss before its minimum"
FLAT = "the loss never fell: no suggestion"


@dataclass
class LrFind:
    """What a range test measured: each update's base lr and loss, the smoothed loss, the suggestion."""
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None  # None: the loss never fell (FLAT)
    rule: str
    plot: Path
    stopped: str


def lr_at(step: int, steps: int, start_lr: float, end_lr: float) -> float:
    """The base lr of `step` out of `steps`: exponential from start_lr to end_lr."""
    return start_lr * (end_lr / start_lr) ** (step / max(1, steps - 1))


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """Debiased exponential moving average of the losses."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float | None, str]:
    """(lr, rule): where the smoothed loss falls fastest per decade of lr, between the first tenth of the updates
    (the average is still settling there) and its minimum; (None, FLAT) when it never fell by FELL of its
    settled start. A suggestion is always one of the lrs the test ran."""
    low, skip = int(np.argmin(smoothed)), max(3, len(lrs) // 10)
    start = smoothed[min(skip, len(smoothed) - 1)]
    if low <= skip or start - smoothed[low] < FELL * abs(start):
        return None, FLAT
    if low < skip + 3:
        return lrs[skip], "the first settled lr: the loss was lowest soon after"
    slope = np.gradient(np.asarray(smoothed[skip:low + 1]), np.log10(lrs[skip:low + 1]))
    return float(lrs[skip + int(np.argmin(slope))]), RULE


def plot_guard() -> OutputGuard:
    """lr_find.png's rule: a new file or one an earlier range test drew; never a folder or the user's own image."""
    return OutputGuard("train.py --find-lr", example=run_folder.LR_FIND,
                       recognise=lambda p: p.name == run_folder.LR_FIND and drawn_by_matplotlib(p))


def find_lr(recipe: Recipe, steps: int = 100, start_lr: float = 1e-7, end_lr: float = 10.0,
            show_progress: bool = True, say: Callable[[str], None] = print) -> LrFind | None:
    """Run the range test on fold 0's training rows; rank 0 alone under torchrun (the other ranks return None)."""
    if not 0 < start_lr < end_lr or steps < 8:
        raise UserError(f"the LR range test needs 0 < start lr < end lr and at least 8 steps "
                        f"(got {start_lr:g}..{end_lr:g}, {steps} steps)")
    d = distributed.alone()
    if d is None:
        return None
    guard = plot_guard()
    plot = guard.check(Path(recipe.output_dir) / recipe.name / run_folder.LR_FIND)  # before the test: a refusal costs nothing
    table, classes, audit = load_data(recipe, d, say, show_progress)
    train, val = table[table["fold"] != 0], table[table["fold"] == 0]
    torch.manual_seed(recipe.seed)
    model = model_from_recipe(recipe, classes)
    data_cfg = {**data_config(model), "background": tuple(int(c) for c in audit.background.rgb)}
    batches = build_fold_batches(recipe, model, data_cfg, train, val, 0, d, show_progress, say)
    batches.val.stop()
    s = build_train_state(recipe, model, len(classes), len(batches.train), d.device, takes=batches.train.takes)
    peaks = [g["initial_lr"] / recipe.lr for g in s.optimizer.param_groups]  # each group's share of the base lr
    say(f"LR range test: {recipe.model}, {len(batches.train)} batches of {recipe.batch_size} per pass "
        f"({batches.path}), lr {start_lr:g} -> {end_lr:g} over at most {steps} updates")
    lrs, losses, stopped = [], [], f"reached {steps} updates"
    s.train_mode()
    try:
        for x, y in passes(batches.train, steps):
            lr = lr_at(len(lrs), steps, start_lr, end_lr)
            for g, share in zip(s.optimizer.param_groups, peaks):
                g["lr"] = lr * share
            x, soft, _ = s.mixer(x, y, 0, len(lrs), 0, enabled=False)  # label smoothing as configured, no mixing
            with s.autocast():
                logits = s.forward(x)
            loss = s.criterion(logits, soft)
            s.scaler.scale(loss).backward()
            optimizer_update(s)
            lrs.append(lr)
            losses.append(loss.item())
            smoothed = smooth(losses)
            if not math.isfinite(losses[-1]) or (len(lrs) > 5 and smoothed[-1] > DIVERGED * min(smoothed)):
                stopped = f"the loss diverged at lr {lr:.2e}"
                break
    finally:
        batches.stop()
    finite = [i for i, v in enumerate(losses) if math.isfinite(v)]
    if len(finite) < 4:
        raise UserError(f"the LR range test diverged at once (lr {lrs[-1]:.2e}); lower its start")
    lrs, losses = [lrs[i] for i in finite], [losses[i] for i in finite]
    smoothed = smooth(losses)
    lr, rule = suggest(lrs, smoothed)
    say(f"{stopped} after {len(lrs)} updates; the smoothed loss was lowest ({min(smoothed):.3f}) at lr "
        f"{lrs[int(np.argmin(smoothed))]:.2e}\n"
        + (f"suggested lr={lr:.2e} ({rule})" if lr is not None else f"{FLAT} (is the model able to learn: a frozen "
           f"random backbone, a tiny lr range?); keep lr={recipe.lr:g}"))
    draw(plot, lrs, losses, smoothed, lr, f"{recipe.name}: {recipe.model}")  # after the line: a full disk loses only the plot
    guard.wrote(plot)
    say(f"plot: {plot}")
    return LrFind(lrs, losses, smoothed, lr, rule, plot, stopped)


def passes(batches, steps: int):
    """Up to `steps` batches, starting a new pass (epoch) whenever one ends."""
    done, epoch = 0, 0
    while done < steps:
        batches.set_epoch(epoch)
        for batch in batches:
            yield batch
            done += 1
            if done == steps:
                return
        epoch += 1


def draw(path: Path, lrs: list[float], losses: list[float], smoothed: list[float], lr: float | None,
         title: str) -> None:
    """Smoothed (and raw) loss against lr on a log axis, the suggestion (if any) marked; written atomically."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.plot(lrs, losses, color="0.75", lw=0.8, label="loss")
    ax.plot(lrs, smoothed, color="C0", lw=2, label="smoothed loss")
    if lr is not None:
        at = int(np.argmin(np.abs(np.log(np.asarray(lrs)) - math.log(lr))))
        ax.plot([lr], [smoothed[at]], "o", color="C3", ms=9, label=f"suggested lr={lr:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (base lr; groups keep their layer_decay / head_lr_scale shares)")
    ax.set_ylabel("training loss")
    ax.set_ylim(min(smoothed) - 0.1 * abs(min(smoothed)), max(smoothed[0], min(smoothed)) * 1.5 + 1e-3)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100), binary=True)
