"""The train state: every object one fold's training carries from step to step, built from the recipe,
and the one owner of last.pt's training fields (written by `last_checkpoint`, read by `restore`)."""
from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field

import torch
from torch.nn.parallel import DistributedDataParallel

from engine import checkpoint
from engine.recipe import Recipe
from engine.system import device as dev
from engine.train.ema import ModelEma
from engine.train.freezing import apply_freeze, set_train_mode, trainable_names, unfreeze_index
from engine.train.losses import build_loss
from engine.train.lr_schedule import build_scheduler, join_warmup_updates, step_milestone_updates
from engine.train.mix import Mixer
from engine.train.optim import add_groups, build_optimizer, joining_groups, load_optimizer_state
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
    recipe: Recipe | None = None  # for unfreezing: lr, weight decay, layer decay, head scale, unfreeze_epoch
    updates_per_epoch: int = 1
    distributed: bool = False
    unfrozen: bool = False  # whether unfreeze_epoch has been reached (saved in last.pt's progress)
    net: torch.nn.Module | None = None  # the part of the model batches go into (the head, for stored features)
    feed: str = ""  # the batch source's path (engine/data/batches/factory.py), kept for an exact resume

    @property
    def ddp(self) -> bool:
        """Whether forward is DDP (also under torch.compile, which wraps it)."""
        return isinstance(getattr(self.forward, "_orig_mod", self.forward), DistributedDataParallel)

    def autocast(self):
        return dev.autocast(self.device, self.amp_dtype)

    def train_mode(self) -> None:
        """Training mode, except frozen parts: their batch-norm statistics and dropout stay still."""
        set_train_mode(self.forward, self.model)

    def maybe_unfreeze(self, epoch: int) -> bool:
        """At the recipe's unfreeze_epoch, everything trains from here on; returns whether it happened now."""
        at = unfreeze_index(self.recipe.unfreeze_epoch) if self.recipe else None
        if at is None or self.unfrozen or epoch < at:
            return False
        self.unfreeze(epoch)
        return True

    def unfreeze(self, epoch: int) -> None:
        """Every parameter trains: new optimizer groups joining with their own warm-up (at least one epoch),
        and a fresh DDP wrapper, since DDP registers the parameters that train when it wraps the model."""
        r = self.recipe
        already = {n for n, p in self.model.named_parameters() if p.requires_grad}
        apply_freeze(self.model, {n for n, _ in self.model.named_parameters()})
        warmup = join_warmup_updates(r.warmup_epochs, self.updates_per_epoch)
        add_groups(self.optimizer, joining_groups(self.model, already, r.weight_decay, r.layer_decay, r.head_lr_scale),
                   r.lr, epoch * self.updates_per_epoch, warmup)
        self.scheduler.refresh()
        self.forward = None
        gc.collect()  # the old DDP wrapper's gradient hooks go with it
        self.forward = wrap_forward(self.net or self.model, self.device, self.distributed, r.compile)
        self.unfrozen = True

    @property
    def eval_model(self) -> torch.nn.Module:
        """What validation and best.pt use: the EMA when there is one."""
        return self.ema.module if self.ema else self.model

    def last_checkpoint(self, base: dict, epoch: int, step: int, finished: bool, metrics: dict,
                        early_stopping: dict, rng: list, position: dict | None = None) -> dict:
        """last.pt: the model checkpoint plus everything an exact resume needs. `position` (world, plan_world,
        consumed): where in its epoch's global order the run stopped, for a resume on another process count;
        `sums` are every rank's (see train_one_epoch)."""
        return {**checkpoint.model_checkpoint(base, self.model.state_dict(), epoch, metrics),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": self.ema.module.state_dict() if self.ema else None,
                "rng": rng, "early_stopping": dict(early_stopping),
                "progress": {"epoch": epoch, "step": step, "finished": finished, "sums": dict(self.sums),
                             "bad_steps": self.bad_steps, "skipped_steps": self.skipped_steps,
                             "ema_updates": self.ema.updates if self.ema else 0, "unfrozen": self.unfrozen,
                             "updates_per_epoch": self.updates_per_epoch, "feed": self.feed, **(position or {})}}

    def restore(self, ckpt: dict) -> tuple[int, int, dict]:
        """Load a last.pt into the live objects; returns (epoch, step inside it, early-stopping state)."""
        self.model.load_state_dict(ckpt["model"])
        if ckpt["progress"].get("unfrozen") and not self.unfrozen:  # the optimizer's joined groups must exist first
            self.unfreeze(ckpt["progress"]["epoch"])
        load_optimizer_state(self.optimizer, ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:  # empty unless it trained in fp16
            self.scaler.load_state_dict(ckpt["scaler"])
        progress = ckpt["progress"]
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
            self.ema.updates = progress.get("ema_updates", 0)
        checkpoint.restore_rng(ckpt["rng"][min(self.rank, len(ckpt["rng"]) - 1)])
        # the saved sums are every rank's: rank 0 carries them on, the others add their part from zero
        self.sums = dict(progress["sums"])
        if self.sums and self.rank and progress.get("world"):
            self.sums.update(loss=0.0, correct=0.0, seen=0)
        self.bad_steps, self.skipped_steps = progress["bad_steps"], progress["skipped_steps"]
        return progress["epoch"], progress["step"], dict(ckpt["early_stopping"])


    def continue_schedule(self, epoch: int, step: int, saved_updates_per_epoch: int | None = None) -> None:
        """Put the schedule at `step` of `epoch` in this run's updates (a resume on another process count has
        another number of updates per epoch); groups that joined at unfreeze_epoch keep their epoch."""
        upe, old = self.updates_per_epoch, saved_updates_per_epoch or self.updates_per_epoch
        update = epoch * upe + step // self.accumulate
        if update == self.scheduler.last_epoch and upe == old:
            return
        for g in self.optimizer.param_groups:
            if "join_update" in g:
                g["join_update"] = round(g["join_update"] * upe / old)
                g["join_warmup"] = join_warmup_updates(self.recipe.warmup_epochs, upe)
        r, sched = self.recipe, self.scheduler  # load_state_dict brought the saved run's update counts
        sched.total_updates, sched.warmup_updates = r.epochs * upe, round(r.warmup_epochs * upe)
        sched.milestones = step_milestone_updates(r.step_milestones, upe)
        sched.last_epoch = update
        sched.refresh()


def wrap_forward(model: torch.nn.Module, device: torch.device, distributed: bool, compile: bool) -> torch.nn.Module:
    """What the loop calls: the model, DDP-wrapped under torchrun, compiled if asked."""
    forward = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if distributed else model
    return torch.compile(forward) if compile else forward


def build_train_state(recipe: Recipe, model: torch.nn.Module, num_classes: int, steps_per_epoch: int,
                      device: torch.device, fold: int = 0, rank: int = 0, distributed: bool = False,
                      takes=None) -> TrainState:
    """The state fit() trains: model on its device, frozen parts, optimizer, schedule, scaler, loss, mixer, EMA,
    DDP. `takes` (a batch source's): the part of the model its batches go into; forward wraps that part."""
    channels_last = dev.use_channels_last(recipe.channels_last, device)
    model = model.to(device, memory_format=dev.memory_format(channels_last))
    if recipe.sync_bn and distributed:
        model = convert_sync_batchnorm(model, device)
    amp_dtype = dev.autocast_dtype(recipe.precision, device)
    updates_per_epoch = math.ceil(steps_per_epoch / recipe.accumulate_grad_batches)
    apply_freeze(model, trainable_names(model, recipe.freeze))
    if recipe.grad_checkpointing:
        model.set_grad_checkpointing(True)
    optimizer = build_optimizer(model, recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.momentum,
                                recipe.layer_decay, recipe.head_lr_scale)
    net = takes(model) if takes is not None else model
    return TrainState(
        model=model,
        forward=wrap_forward(net, device, distributed, recipe.compile),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, recipe.epochs * updates_per_epoch,
                                  round(recipe.warmup_epochs * updates_per_epoch), recipe.scheduler,
                                  step_milestone_updates(recipe.step_milestones, updates_per_epoch), recipe.step_gamma),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        criterion=build_loss(recipe.loss, recipe.focal_alpha, recipe.focal_gamma),
        mixer=Mixer(num_classes, recipe.mixup_ratio, recipe.cutmix_ratio, recipe.mix_alpha,
                    recipe.label_smoothing, recipe.seed + fold),
        device=device, amp_dtype=amp_dtype, accumulate=recipe.accumulate_grad_batches,
        clip_grad_norm=recipe.clip_grad_norm, max_bad_steps=recipe.max_bad_steps,
        ema=ModelEma(model, recipe.ema_decay) if recipe.ema_decay > 0 else None, rank=rank,
        recipe=recipe, updates_per_epoch=updates_per_epoch, distributed=distributed,
        net=net if net is not model else None)
