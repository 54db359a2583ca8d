"""One fold, start to finish: build model, data and optimizer from the recipe, run the epochs,
validate, keep best.pt / last.pt, stop early, and resume exactly from a last.pt."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel

from engine import checkpoint, distributed, preempt
from engine.data import EpochSampler, ImageDataset, ShardSampler, default_num_workers, make_loader
from engine.atomic import write_csv
from engine.distributed import Dist
from engine.errors import UserError
from engine.loop import TrainState, evaluate, resolve_precision, train_one_epoch
from engine.losses import build_loss
from engine.mix import Mixer
from engine.models import build_model, count_parameters, data_config
from engine.optim import ModelEma, build_optimizer, build_scheduler
from engine.recipe import Recipe
from engine.runlog import RunLog
from engine.transforms import Normalize, build_eval_transform, build_train_transform

PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler"}
BETTER = {"val_loss": lambda new, best: new < best, "val_acc": lambda new, best: new > best,
          "val_f1": lambda new, best: new > best}


def build_datasets(recipe: Recipe, train: pd.DataFrame, val: pd.DataFrame, crop_pct: float, fold: int):
    """Training and validation datasets of one fold (uint8 images, seeded augmentation)."""
    from engine.cache import image_loader  # the decode-once cache, when the recipe asks for it
    train_tf = build_train_transform(recipe.image_size, recipe.augment, recipe.random_erase, recipe.crop_scale)
    eval_tf = build_eval_transform(recipe.image_size, crop_pct)
    seed = recipe.seed + 7919 * fold
    return (ImageDataset(train["path"], train["target"], train_tf, seed, image_loader(recipe, train["path"], crop_pct)),
            ImageDataset(val["path"], val["target"], eval_tf, seed, image_loader(recipe, val["path"], crop_pct)))


def fit(recipe: Recipe, fold: int, train: pd.DataFrame, val: pd.DataFrame, classes: list[str], fold_dir: Path,
        d: Dist, log: RunLog, resume: dict | None = None, show_progress: bool = True,
        on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train one fold; returns the best epoch's metrics. Raises Preempted or Diverged after saving last.pt.

    `on_epoch(metrics_row)` is called after each epoch's checkpoints (a sweep's pruner listens here).
    """
    torch.manual_seed(recipe.seed + fold)
    num_classes = len(classes)
    model = build_model(recipe.model, num_classes, recipe.pretrained, recipe.pretrained_path, recipe.drop_path)
    data_cfg = data_config(model)
    train_ds, val_ds = build_datasets(recipe, train, val, data_cfg["crop_pct"], fold)
    workers = recipe.num_workers if recipe.num_workers is not None else default_num_workers(d.local_world)
    sampler = EpochSampler(len(train_ds), recipe.batch_size, True, recipe.seed + fold, d.rank, d.world)
    on_cuda = d.device.type == "cuda"
    train_loader = make_loader(train_ds, recipe.batch_size, sampler, workers, True, pin_memory=on_cuda)
    val_loader = make_loader(val_ds, recipe.batch_size * 2, ShardSampler(len(val_ds), d.rank, d.world), workers,
                             False, pin_memory=on_cuda)
    if len(val_ds) < d.world:
        raise UserError(f"fold {fold}: {len(val_ds)} validation rows for {d.world} processes; "
                        f"raise val_fraction or use fewer processes")
    if len(train_loader) == 0:
        raise UserError(f"fold {fold}: no training batches (batch_size {recipe.batch_size} x {d.world} process(es) > "
                        f"{len(train_ds)} rows); lower batch_size")

    channels_last = on_cuda if recipe.channels_last is None else recipe.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(d.device, memory_format=memory_format)
    if recipe.sync_bn and d.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    amp_dtype = resolve_precision(recipe.precision, d.device)
    steps_per_epoch = len(train_loader)
    updates_per_epoch = math.ceil(steps_per_epoch / recipe.accumulate_grad_batches)
    optimizer = build_optimizer(model, recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.momentum)
    s = TrainState(
        model=model,
        forward=DistributedDataParallel(model, device_ids=[d.device] if on_cuda else None) if d.enabled else model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, recipe.epochs * updates_per_epoch,
                                  round(recipe.warmup_epochs * updates_per_epoch), recipe.scheduler),
        scaler=torch.amp.GradScaler(d.device.type, enabled=amp_dtype == torch.float16),
        criterion=build_loss(recipe.loss, recipe.focal_alpha, recipe.focal_gamma),
        mixer=Mixer(num_classes, recipe.mixup_ratio, recipe.cutmix_ratio, recipe.mix_alpha,
                    recipe.label_smoothing, recipe.seed + fold),
        normalize=Normalize(data_cfg["mean"], data_cfg["std"], channels_last).to(d.device),
        device=d.device, amp_dtype=amp_dtype, accumulate=recipe.accumulate_grad_batches,
        clip_grad_norm=recipe.clip_grad_norm, max_bad_steps=recipe.max_bad_steps,
        ema=ModelEma(model, recipe.ema_decay) if recipe.ema_decay > 0 else None, rank=d.rank)
    if recipe.compile:
        s.forward = torch.compile(s.forward)
    torch.manual_seed(recipe.seed + fold + 1000 * (d.rank + 1))  # same init everywhere, own dropout per rank

    base = {"recipe": recipe.to_dict(), "classes": list(classes), "data": data_cfg, "fold": fold}
    early = {"best": None, "best_epoch": -1, "bad_epochs": 0}
    start_epoch, start_step = 0, 0
    if resume is not None:
        start_epoch, start_step, early = restore_state(s, resume)
        log.print(f"fold {fold}: resumed at epoch {start_epoch + 1}, step {start_step}")
    if start_step == 0 and start_epoch == 0:
        log.print(f"fold {fold}: {recipe.model} ({count_parameters(model) / 1e6:.2f}M params), {len(train_ds)} train / "
                  f"{len(val_ds)} val images, {steps_per_epoch} steps per epoch, {d.device.type}"
                  f"{' x' + str(d.world) if d.enabled else ''}, precision {PRECISION_NAMES[amp_dtype]}, {workers} workers")
        if s.mixer.active:
            log.print("note: under mixup/cutmix, train acc is measured against each sample's dominant label")

    def last_checkpoint(epoch: int, step: int, rng: list) -> dict:
        return {**base, "model": s.model.state_dict(), "epoch": epoch, "metrics": metrics_row,
                "optimizer": s.optimizer.state_dict(), "scheduler": s.scheduler.state_dict(),
                "scaler": s.scaler.state_dict(), "ema": s.ema.module.state_dict() if s.ema else None,
                "rng": rng, "early_stopping": dict(early),
                "progress": {"epoch": epoch, "step": step, "finished": False, "sums": dict(s.sums),
                             "bad_steps": s.bad_steps, "skipped_steps": s.skipped_steps,
                             "ema_updates": s.ema.updates if s.ema else 0}}

    metrics_row: dict = resume.get("metrics", {}) if resume else {}
    better = BETTER[recipe.monitor]
    for epoch in range(start_epoch, recipe.epochs):
        sampler.set_epoch(epoch, start_step)
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(d.device)
        t0 = time.perf_counter()
        mixing = epoch < recipe.epochs - recipe.mix_off_epochs
        stats = train_one_epoch(s, train_loader, epoch, start_step, mixing, show_progress and d.is_main)
        if "stopped_at" in stats:
            rng = distributed.all_objects(checkpoint.rng_state())  # every rank's, for an exact resume
            if d.is_main:
                checkpoint.save_atomic(last_checkpoint(epoch, stats["stopped_at"], rng), fold_dir / "last.pt")
            distributed.barrier()
            raise preempt.Preempted(f"stopped at epoch {epoch + 1}, step {stats['stopped_at']}; last.pt written",
                                    preempt.signal_number())
        start_step = 0
        train_time = time.perf_counter() - t0
        eval_model = s.ema.module if s.ema else s.model
        res = evaluate(eval_model, val_loader, d.device, s.normalize, amp_dtype)
        metrics_row = {"epoch": epoch + 1, "train_loss": stats["train_loss"], "train_acc": stats["train_acc"],
                       "val_loss": res["loss"], "val_acc": res["acc"], "val_top5": res["top5"], "val_f1": res["f1"],
                       "lr": s.optimizer.param_groups[0]["lr"], "img_per_s": stats["seen"] / train_time,
                       "data_wait": stats["data_wait"] / train_time, "skipped_steps": s.skipped_steps,
                       "time_s": time.perf_counter() - t0,
                       "gpu_mem_gb": torch.cuda.max_memory_allocated(d.device) / 2**30 if on_cuda else 0.0}
        value = metrics_row[recipe.monitor]
        improved = math.isfinite(value) and (early["best"] is None or better(value, early["best"]))
        if improved:
            early.update(best=value, best_epoch=epoch + 1, bad_epochs=0)
        else:
            early["bad_epochs"] += 1
        stop = None
        if not math.isfinite(metrics_row["val_loss"]):
            stop = f"stopping: validation loss is {metrics_row['val_loss']} at epoch {epoch + 1}"
        elif recipe.early_stopping and early["bad_epochs"] >= recipe.early_stopping:
            stop = (f"early stopping: no {recipe.monitor} improvement for {recipe.early_stopping} epochs "
                    f"(best {early['best']:.4f} at epoch {early['best_epoch']})")
        rng = distributed.all_objects(checkpoint.rng_state())
        if d.is_main:
            log.metrics(fold_dir / "metrics.csv", metrics_row, prefix=f"fold{fold}/")
            log.print(epoch_line(metrics_row, recipe.epochs, improved))
            if metrics_row["data_wait"] > 0.1:
                fix = "a lighter augment" if recipe.cache != "none" else "cache='memory'"
                log.print(f"warning: the step waited for data {metrics_row['data_wait']:.0%} of the epoch; raise "
                          f"num_workers (now {workers}) or use {fix}")
            if improved:
                best = {**base, "model": eval_model.state_dict(), "epoch": epoch + 1, "metrics": metrics_row}
                checkpoint.save_atomic(best, fold_dir / "best.pt")
                write_val_predictions(fold_dir / "val_predictions.csv", val, res["probs"], classes)
            last = last_checkpoint(epoch + 1, 0, rng)
            last["progress"]["finished"] = stop is not None or epoch + 1 == recipe.epochs
            checkpoint.save_atomic(last, fold_dir / "last.pt")
        if on_epoch is not None:
            on_epoch(metrics_row)
        if stop:
            log.print(stop)
            break
    distributed.barrier()
    return {"best_epoch": early["best_epoch"], recipe.monitor: early["best"]}


def restore_state(s: TrainState, ckpt: dict) -> tuple[int, int, dict]:
    """Load a last.pt into the live objects; returns (epoch, step inside it, early-stopping state)."""
    s.model.load_state_dict(ckpt["model"])
    s.optimizer.load_state_dict(ckpt["optimizer"])
    s.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt["scaler"]:  # empty unless it trained in fp16
        s.scaler.load_state_dict(ckpt["scaler"])
    progress = ckpt["progress"]
    if s.ema is not None and ckpt.get("ema") is not None:
        s.ema.module.load_state_dict(ckpt["ema"])
        s.ema.updates = progress.get("ema_updates", 0)
    checkpoint.restore_rng(ckpt["rng"][min(s.rank, len(ckpt["rng"]) - 1)])
    s.sums = dict(progress["sums"])
    s.bad_steps, s.skipped_steps = progress["bad_steps"], progress["skipped_steps"]
    return progress["epoch"], progress["step"], dict(ckpt["early_stopping"])


def epoch_line(m: dict, epochs: int, improved: bool) -> str:
    """The per-epoch summary the console shows."""
    return (f"epoch {m['epoch']:>3}/{epochs}  train loss {m['train_loss']:.4f} acc {m['train_acc']:.3f}  |  "
            f"val loss {m['val_loss']:.4f} acc {m['val_acc']:.3f} top5 {m['val_top5']:.3f} f1 {m['val_f1']:.3f}  |  "
            f"lr {m['lr']:.2e}  {m['img_per_s']:.0f} img/s  data {m['data_wait']:.0%}  {m['time_s']:.1f}s"
            + (f"  mem {m['gpu_mem_gb']:.1f}G" if m.get("gpu_mem_gb") else "") + ("  * best" if improved else ""))


def write_val_predictions(path: Path, table: pd.DataFrame, probs: torch.Tensor, classes: list[str]) -> None:
    """One row per validation image: target, prediction, confidence and the top-5 classes."""
    top = probs.topk(min(5, probs.shape[1]), dim=1)
    pred = top.indices[:, 0].numpy()
    out = pd.DataFrame({"image_path": table["image_path"].values, "target": table["target"].values,
                        "class_name": table["class_name"].values, "pred": pred,
                        "pred_name": [classes[p] for p in pred], "confidence": top.values[:, 0].numpy(),
                        "top5": [" ".join(map(str, row)) for row in top.indices.tolist()]})
    write_csv(out, path)
