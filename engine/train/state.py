"""The train state: every object one fold's training carries from step to step, built from the recipe,
and the one owner of last.pt's training fields (written by `last_checkpoint`, read by `restore`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from engine import checkpoint
from engine.data.transforms import Normalize
from engine.recipe import Recipe
from engine.system import device as dev
from engine.train.ema import ModelEma
from engine.train.losses import build_loss
from engine.train.mix import Mixer
from engine.train.optim import build_optimizer
from engine.train.schedule import build_scheduler
from engine.train.sync_bn import convert_sync_batchnorm


@dataclass
class TrainState:
    """Everything one fold's training carries from step to step (and into last.pt)."""
    model: torch.nn.Module  # the bare model (weights to save)
    forward: torch.nn.Module  # what the loop calls: DDP- and/or compile-wrapped model
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: torch.nn.Module
    mixer: Mixer
    normalize: torch.nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None  # None: fp32
    accumulate: int = 1
    clip_grad_norm: float | None = None
    max_bad_steps: int = 10
    ema: ModelEma | None = None
    rank: int = 0
    bad_steps: int = 0  # consecutive non-finite updates
    skipped_steps: int = 0  # all skipped updates
    sums: dict = field(default_factory=dict)  # running sums of the current epoch (resumable)

    @property
    def ddp(self) -> bool:
        """Whether forward is DDP (also under torch.compile, which wraps it)."""
        return isinstance(getattr(self.forward, "_orig_mod", self.forward), DistributedDataParallel)

    def autocast(self):
        return dev.autocast(self.device, self.amp_dtype)

    @property
    def eval_model(self) -> torch.nn.Module:
        """What validation and best.pt use: the EMA when there is one."""
        return self.ema.module if self.ema else self.model

    def last_checkpoint(self, base: dict, epoch: int, step: int, finished: bool, metrics: dict,
                        early_stopping: dict, rng: list) -> dict:
        """last.pt: the model checkpoint plus everything an exact resume needs."""
        return {**checkpoint.model_checkpoint(base, self.model.state_dict(), epoch, metrics),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": self.ema.module.state_dict() if self.ema else None,
                "rng": rng, "early_stopping": dict(early_stopping),
                "progress": {"epoch": epoch, "step": step, "finished": finished, "sums": dict(self.sums),
                             "bad_steps": self.bad_steps, "skipped_steps": self.skipped_steps,
                             "ema_updates": self.ema.updates if self.ema else 0}}

    def restore(self, ckpt: dict) -> tuple[int, int, dict]:
        """Load a last.pt into the live objects; returns (epoch, step inside it, early-stopping state)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:  # empty unless it trained in fp16
            self.scaler.load_state_dict(ckpt["scaler"])
        progress = ckpt["progress"]
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
            self.ema.updates = progress.get("ema_updates", 0)
        checkpoint.restore_rng(ckpt["rng"][min(self.rank, len(ckpt["rng"]) - 1)])
        self.sums = dict(progress["sums"])
        self.bad_steps, self.skipped_steps = progress["bad_steps"], progress["skipped_steps"]
        return progress["epoch"], progress["step"], dict(ckpt["early_stopping"])


def finished(ckpt: dict) -> bool:
    """Whether a loaded last.pt says its fold finished training."""
    return bool(ckpt.get("progress", {}).get("finished"))


def is_finished(last_pt: Path) -> bool:
    """Whether a last.pt says its fold finished (memory-mapped: the weights are not read)."""
    if not Path(last_pt).is_file():
        return False
    try:
        state = torch.load(last_pt, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False  # being written by another machine, or damaged: not finished as far as we know
    return finished(state)


def build_train_state(recipe: Recipe, model: torch.nn.Module, num_classes: int, data_cfg: dict,
                      steps_per_epoch: int, device: torch.device, fold: int = 0, rank: int = 0,
                      distributed: bool = False) -> TrainState:
    """The state fit() trains: model on its device, optimizer, schedule, scaler, loss, mixer, EMA, DDP."""
    on_cuda = device.type == "cuda"
    channels_last = dev.use_channels_last(recipe.channels_last, device)
    model = model.to(device, memory_format=dev.memory_format(channels_last))
    if recipe.sync_bn and distributed:
        model = convert_sync_batchnorm(model, device)
    amp_dtype = dev.autocast_dtype(recipe.precision, device)
    updates_per_epoch = math.ceil(steps_per_epoch / recipe.accumulate_grad_batches)
    optimizer = build_optimizer(model, recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.momentum)
    s = TrainState(
        model=model,
        forward=DistributedDataParallel(model, device_ids=[device] if on_cuda else None) if distributed else model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, recipe.epochs * updates_per_epoch,
                                  round(recipe.warmup_epochs * updates_per_epoch), recipe.scheduler),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        criterion=build_loss(recipe.loss, recipe.focal_alpha, recipe.focal_gamma),
        mixer=Mixer(num_classes, recipe.mixup_ratio, recipe.cutmix_ratio, recipe.mix_alpha,
                    recipe.label_smoothing, recipe.seed + fold),
        normalize=Normalize(data_cfg["mean"], data_cfg["std"], channels_last).to(device),
        device=device, amp_dtype=amp_dtype, accumulate=recipe.accumulate_grad_batches,
        clip_grad_norm=recipe.clip_grad_norm, max_bad_steps=recipe.max_bad_steps,
        ema=ModelEma(model, recipe.ema_decay) if recipe.ema_decay > 0 else None, rank=rank)
    if recipe.compile:
        s.forward = torch.compile(s.forward)
    return s
