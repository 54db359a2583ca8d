"""One fold, start to finish: build the model, loaders and train state, run the epochs, validate, keep
best.pt / last.pt / metrics.csv / val_predictions.csv, stop early, and resume exactly from a last.pt."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from engine import checkpoint, run_folder
from engine.data.batches.factory import PATH_NAMES, FoldBatches, build_fold_batches
from engine.data.pixels.background import WHITE, checkpoint_background
from engine.errors import UserError
from engine.evaluate.predictions import write_probs, write_val_predictions
from engine.input_size import check_input_size
from engine.model_speed import speed_line
from engine.models import count_parameters, data_config, model_from_recipe, small_map_warning
from engine.recipe import Recipe
from engine.system import distributed, preemption
from engine.system.device import PRECISION_NAMES
from engine.system.distributed import Dist
from engine.train.early_stopping import EarlyStopping
from engine.train.freezing import count as count_trainable
from engine.train.loop import evaluate, train_one_epoch
from engine.train.run_log import RunLog
from engine.train.split_record import fingerprint
from engine.train.state import TrainState, build_train_state

NO_VAL = dict.fromkeys(("loss", "acc", "top5", "f1"), math.nan)  # a refit's validation "result"


@dataclass
class FoldRun:
    """One fold in training: what its epochs share (built by start_fold, advanced by train_epoch)."""
    recipe: Recipe
    fold: int
    val: pd.DataFrame
    classes: list[str]
    fold_dir: Path
    d: Dist
    log: RunLog
    s: TrainState
    batches: FoldBatches
    base: dict  # the fields best.pt and last.pt share
    early: EarlyStopping
    show_progress: bool = True
    start_epoch: int = 0
    start_step: int = 0  # where a resumed epoch goes on
    reshard: tuple[int, int] | None = None  # a resumed epoch begun on another process count
    saved_world: int = 1
    metrics: dict = field(default_factory=dict)

    @property
    def has_val(self) -> bool:  # no validation rows: a full-data refit, whose best.pt is its last epoch
        return len(self.val) > 0


def fit(recipe: Recipe, fold: int, train: pd.DataFrame, val: pd.DataFrame, classes: list[str], fold_dir: Path,
        d: Dist, log: RunLog, resume: dict | None = None, show_progress: bool = True,
        on_epoch: Callable[[dict], None] | None = None, background: tuple[int, int, int] = WHITE) -> dict:
    """Train one fold; returns the best epoch's metrics. Raises Preempted or Diverged after saving last.pt.

    `on_epoch(metrics_row)` is called after each epoch's checkpoints (a sweep's pruner listens here).
    `background`: the paper colour augmentation fills with; checkpoints keep it for predict and cam.
    """
    run = start_fold(recipe, fold, train, val, classes, fold_dir, d, log, resume, show_progress, background)
    for epoch in range(run.start_epoch, recipe.epochs):
        stop = train_epoch(run, epoch)
        if on_epoch is not None:
            on_epoch(run.metrics)
        if stop:
            log.print(stop)
            break
    run.batches.stop()  # its workers end now, while the last checkpoints are written (folds.train waits for them)
    distributed.barrier()
    return run.early.result() if run.has_val else {"best_epoch": run.metrics.get("epoch"), recipe.monitor: None}


def start_fold(recipe: Recipe, fold: int, train: pd.DataFrame, val: pd.DataFrame, classes: list[str],
               fold_dir: Path, d: Dist, log: RunLog, resume: dict | None, show_progress: bool,
               background: tuple[int, int, int]) -> FoldRun:
    """The fold's model, batch sources and train state, fresh or restored from `resume` (a last.pt)."""
    torch.manual_seed(recipe.seed + fold)
    model = model_from_recipe(recipe, classes)
    check_input_size(model, recipe.model, recipe.image_size)
    small_map = small_map_warning(model, recipe.image_size, recipe.model) if d.is_main and resume is None else None
    if resume is not None:  # the colour it started with (white for checkpoints from before it was saved)
        background = checkpoint_background(checkpoint.saved_base(resume)[2])
    data_cfg = {**data_config(model), "background": tuple(int(c) for c in background)}
    batches = build_fold_batches(recipe, model, data_cfg, train, val, fold, d, show_progress and d.is_main, log.print,
                                 saved_path=resume["progress"].get("feed") if resume is not None else None)
    s = build_train_state(recipe, model, len(classes), len(batches.train), d.device, fold, d.rank, d.enabled,
                          batches.train.takes)
    s.feed = batches.path  # last.pt keeps it: a resume draws its batches the same way
    torch.manual_seed(recipe.seed + fold + 1000 * (d.rank + 1))  # same init everywhere, own dropout per rank
    base = checkpoint.base_fields(recipe.to_dict(), classes, data_cfg, fold)
    base["split"] = fingerprint(pd.concat([train, val]))  # --resume checks split.csv against it (issue 32)
    run = FoldRun(recipe, fold, val, classes, fold_dir, d, log, s, batches, base,
                  EarlyStopping(recipe.monitor, recipe.early_stopping), show_progress, saved_world=d.world)
    if resume is not None:
        restore_fold(run, resume)
    else:
        log.print(start_line(recipe, fold, s, batches, d))
        if small_map:
            log.print(small_map)
        if recipe.init_head == "imagenet" and (recipe.pretrained or recipe.pretrained_path) and len(val):  # copied rows
            res = evaluate(s.eval_model, batches.val, s.amp_dtype)
            log.print(f"fold {fold}: the ImageNet-initialised head scores val acc {res['acc']:.3f} before training")
    if d.is_main:  # rows of epochs a crash made us redo would be written twice
        log.trim_metrics(fold_dir / run_folder.METRICS, run.start_epoch)
    return run


def restore_fold(run: FoldRun, resume: dict) -> None:
    """Put a fold back where its last.pt stopped: weights, optimizer, schedule, early stopping, the epoch's place."""
    recipe, s, d, progress = run.recipe, run.s, run.d, resume["progress"]
    try:
        run.start_epoch, start_step, early_state = s.restore(resume)
    except (RuntimeError, KeyError, ValueError) as e:  # weights of another shape: one line, not 100
        raise UserError(f"{run.fold_dir / run_folder.LAST} does not fit {recipe.model} with {len(run.classes)} classes "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); it belongs to another run") from None
    run.early = EarlyStopping(recipe.monitor, recipe.early_stopping, early_state)
    run.metrics = resume.get("metrics", {})
    run.log.print(f"fold {run.fold}: resumed at epoch {run.start_epoch + 1}, step {start_step}")
    run.start_step, run.reshard = resume_point(progress, recipe.batch_size, s.accumulate, d.world)
    run.saved_world = progress.get("world", d.world)
    s.continue_schedule(run.start_epoch, run.start_step, progress.get("updates_per_epoch"))
    if run.reshard is None and run.saved_world != d.world:
        run.log.print(f"world size changed: {run.saved_world} -> {d.world} process(es); epoch {run.start_epoch + 1} "
                      f"starts whole, the schedule goes on in {s.updates_per_epoch} updates per epoch")


def train_epoch(run: FoldRun, epoch: int) -> str | None:
    """Train and validate one epoch, keep its checkpoints; returns why to stop early (None: go on)."""
    recipe, s, d, batches = run.recipe, run.s, run.d, run.batches
    resharded = run.reshard if epoch == run.start_epoch else None
    batches.train.set_epoch(epoch, run.start_step, resharded)
    if resharded:
        run.log.print(world_change_line(run.saved_world, batches.train.sampler, epoch, d.world))
    s.continue_schedule(epoch, run.start_step)  # after a re-sharded epoch: back on this run's update count
    if s.maybe_unfreeze(epoch):
        run.log.print(f"epoch {epoch + 1}: everything trains now ({count_trainable(s.model)[0] / 1e6:.2f}M parameters)")
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.device)
    t0 = time.perf_counter()
    mixing = epoch < recipe.epochs - recipe.mix_off_epochs
    stats = train_one_epoch(s, batches.train, epoch, run.start_step, mixing, run.show_progress and d.is_main)
    if "stopped_at" in stats:
        sampler = batches.train.sampler
        save_last(s, run.base, epoch, stats["stopped_at"], False, run.metrics, run.early, run.fold_dir, d, position={
            "world": d.world, "plan_world": sampler.plan_world,
            "consumed": sampler.consumed(stats["stopped_at"] - run.start_step)})
        raise preemption.Preempted(f"stopped at epoch {epoch + 1}, step {stats['stopped_at']}; last.pt written",
                                   preemption.signal_number())
    run.start_step, train_time = 0, time.perf_counter() - t0
    res = evaluate(s.eval_model, batches.val, s.amp_dtype) if run.has_val else NO_VAL
    run.metrics = metrics = epoch_metrics(epoch, stats, res, s, train_time, time.perf_counter() - t0)
    improved = run.early.update(metrics) if run.has_val else True
    stop = run.early.stop_reason(metrics) if run.has_val else None
    best = keep_epoch(run, epoch, res, improved) if d.is_main else []
    save_last(s, run.base, epoch + 1, 0, stop is not None or epoch + 1 == recipe.epochs, metrics, run.early,
              run.fold_dir, d, best)
    return stop


def keep_epoch(run: FoldRun, epoch: int, res: dict, improved: bool) -> list[tuple[dict, Path]]:
    """Rank 0: the epoch's metrics row, its line, the data-wait advice and, when it improved, the validation
    predictions and best.pt (returned: it goes to disk with last.pt, in the background)."""
    metrics, log, fold_dir = run.metrics, run.log, run.fold_dir
    log.metrics(fold_dir / run_folder.METRICS, metrics, prefix=f"{fold_dir.name}/")
    log.print(epoch_line(metrics, run.recipe.epochs, improved))
    advice = run.batches.train.wait_advice(run.recipe, run.s.device) if metrics["data_wait"] > 0.1 else None
    if advice:
        log.print(f"warning: the step waited for data {metrics['data_wait']:.0%} of the epoch; {advice}")
    if not improved:
        return []
    if run.has_val:
        write_val_predictions(fold_dir / run_folder.VAL_PREDICTIONS, run.val, res["probs"], run.classes)
        write_probs(fold_dir / run_folder.VAL_PROBS, res["probs"])
    return [(checkpoint.model_checkpoint(run.base, run.s.eval_model.state_dict(), epoch + 1, metrics),
             fold_dir / run_folder.BEST)]


def save_last(s: TrainState, base: dict, epoch: int, step: int, finished: bool, metrics: dict,
              early: EarlyStopping, fold_dir: Path, d: Dist, also: list[tuple[dict, Path]] = (),
              position: dict | None = None) -> None:
    """Every rank's RNG state goes in (for an exact resume); rank 0 writes last.pt (after `also`, e.g.
    best.pt) in the background; stopping mid-epoch, it waits until they are on disk. `position`: where in
    the epoch's global order it stopped (TrainState.last_checkpoint)."""
    rng = distributed.all_objects(checkpoint.rng_state())
    if d.is_main:
        last = s.last_checkpoint(base, epoch, step, finished, metrics, early.state, rng, position or {"world": d.world})
        checkpoint.save_in_background([*also, (last, fold_dir / run_folder.LAST)])
        if step:
            checkpoint.wait_for_writes()
    if step:
        distributed.barrier()  # stopping mid-epoch: nobody exits before last.pt is on disk


def resume_point(progress: dict, batch_size: int, accumulate: int, world: int) -> tuple[int, tuple[int, int] | None]:
    """(step, reshard) a resumed fold starts its epoch at: the saved step on the process count the epoch began
    with; on another, the rest of the epoch's global order re-sharded (plan world, positions consumed), its
    steps numbered from the nearest whole accumulation window."""
    saved, step = progress.get("world", world), progress["step"]
    plan_world = progress.get("plan_world", saved)
    if not step or (saved == world == plan_world):
        return step, None
    consumed = progress.get("consumed", step * batch_size * saved)
    if saved != world:
        step = accumulate * round(consumed / (batch_size * world * accumulate))
    return step, (plan_world, consumed)


def world_change_line(saved_world: int, sampler, epoch: int, world: int) -> str:
    """What a resume on another process count does with the epoch it stopped in."""
    line = (f"world size changed: {saved_world} -> {world} process(es); " if saved_world != world else "") + \
        (f"epoch {epoch + 1}: {sampler.start} samples were trained on, the {sampler.left} left are re-sharded "
         f"over {world} process(es), each seen once")
    return line + (f" ({sampler.unseen} left out: too few for a batch on every process)" if sampler.unseen else "")


def start_line(recipe: Recipe, fold: int, s: TrainState, batches: FoldBatches, d: Dist) -> str:
    """What a fold trains on, said once at its start."""
    trainable, frozen = count_trainable(s.model)
    line = (f"fold {fold}: {recipe.model} ({count_parameters(s.model) / 1e6:.2f}M params"
            + (f", {trainable / 1e6:.2f}M trainable, {frozen / 1e6:.2f}M frozen" if frozen else "") + "), "
            f"{batches.train.rows} train / {batches.val.rows} val images, {len(batches.train)} steps "
            f"per epoch, {d.device.type}{' x' + str(d.world) if d.enabled else ''}, precision "
            f"{PRECISION_NAMES[s.amp_dtype]}, {batches.train.workers} workers"
            f"\n{speed_line(s.model, recipe.compile, d.device, s.amp_dtype)}"
            f"\nbatches: {PATH_NAMES[batches.path]} ({batches.why})")
    if not batches.val.rows:
        line += "\nno validation rows (val_fraction = 0): every row trains; best.pt is the last epoch"
    per_rank = min(len(batches.train.sampler), len(batches.train) * recipe.batch_size)  # whole batches only
    if (left := batches.train.rows - d.world * per_rank) > 0:  # another `left` rows each epoch: the shuffle differs
        line += (f"\neach epoch leaves {left} of {batches.train.rows} training rows out (others each epoch): every "
                 f"process takes whole batches, {len(batches.train)} x {recipe.batch_size} x {d.world} process(es) "
                 f"= {d.world * per_rank}")
    if s.mixer.active:
        line += "\nnote: under mixup/cutmix, train acc is measured against each sample's dominant label"
    return line


def epoch_metrics(epoch: int, stats: dict, res: dict, s: TrainState, train_time: float, total_time: float) -> dict:
    """One metrics.csv row."""
    on_cuda = s.device.type == "cuda"
    return {"epoch": epoch + 1, "train_loss": stats["train_loss"], "train_acc": stats["train_acc"],
            "val_loss": res["loss"], "val_acc": res["acc"], "val_top5": res["top5"], "val_f1": res["f1"],
            "lr": s.optimizer.param_groups[0]["lr"], "img_per_s": stats["seen"] / train_time,
            "data_wait": stats["data_wait"] / train_time, "skipped_steps": s.skipped_steps, "time_s": total_time,
            "gpu_mem_gb": torch.cuda.max_memory_allocated(s.device) / 2**30 if on_cuda else 0.0}


def epoch_line(m: dict, epochs: int, improved: bool) -> str:
    """The per-epoch summary the console shows."""
    val = (f"val loss {m['val_loss']:.4f} acc {m['val_acc']:.3f} top5 {m['val_top5']:.3f} f1 {m['val_f1']:.3f}"
           if math.isfinite(m["val_acc"]) else "no validation")
    return (f"epoch {m['epoch']:>3}/{epochs}  train loss {m['train_loss']:.4f} acc {m['train_acc']:.3f}  |  {val}  |  "
            f"lr {m['lr']:.2e}  {m['img_per_s']:.0f} img/s  data {m['data_wait']:.0%}  {m['time_s']:.1f}s"
            + (f"  mem {m['gpu_mem_gb']:.1f}G" if m.get("gpu_mem_gb") else "") + ("  * best" if improved else ""))
