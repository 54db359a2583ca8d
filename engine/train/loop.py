"""The training loop: `train_one_epoch` and `evaluate` (train/state.py builds the state, train/fit.py runs the epochs).

Order of one optimizer update: autocast forward -> fp32 loss -> scaled backward (no_sync on
accumulation micro-steps) -> agree on stop / non-finite loss across ranks (on the device) -> unscale ->
clip -> step, skipped on the device when non-finite -> schedule -> EMA. The host reads the update's flags
one update later (a stop lands one update after the signal; a non-finite update never lands).
"""
from __future__ import annotations

import contextlib

import torch

from engine.evaluate.metrics import classification_metrics
from engine.system import distributed
from engine.system import preemption as preempt
from engine.system.device import autocast, device_feed
from engine.system.progress import progress
from engine.train.late_read import LateRead
from engine.train.optim import step_unless
from engine.train.state import TrainState
from engine.train.step_clock import StepClock


def optimizer_update(s: TrainState, bad_loss: torch.Tensor | None = None) -> torch.Tensor:
    """Unscale, clip, step unless the update is non-finite, schedule, EMA; returns the device flag of a skipped
    step. Nothing here reads a device value: the skip happens on the device (optim.step_unless)."""
    s.scaler.unscale_(s.optimizer)
    found = torch.zeros((), dtype=torch.bool, device=s.device) if bad_loss is None else bad_loss.bool()
    params = [p for g in s.optimizer.param_groups for p in g["params"] if p.grad is not None]
    norm = None
    if s.clip_grad_norm is not None:  # the norm also tells a non-finite gradient (no norm: the loss check only)
        norm = torch.nn.utils.clip_grad_norm_(params, s.clip_grad_norm, foreach=True)
    elif s.scaler.is_enabled():  # fp16: the scaler's own overflow check, made here so its flag stays on the device
        norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
    if norm is not None:
        found = found | ~torch.isfinite(norm)  # grads are all-reduced, so every rank agrees
    step_unless(s.optimizer, found)
    s.scaler.update()  # fp16: a lowered scale after an overflow, on the device
    s.optimizer.zero_grad(set_to_none=True)
    s.scheduler.step()
    if s.ema is not None:
        s.ema.update(s.model, ~found)
    return found


def train_one_epoch(s: TrainState, batches, epoch: int, start_step: int = 0, mixing: bool = True,
                    show_progress: bool = True) -> dict:
    """One pass over a batch source (engine/data/batches/sources.py, set to this epoch) from `start_step`; stops early
    (returning `stopped_at`) on a signal. Between its first and last step the host reads no device value at once:
    the stop agreement, the count of non-finite updates and the bar's loss are read one update late (LateRead)."""
    s.train_mode()
    n_steps = start_step + len(batches)
    sums = s.sums or {"loss": 0.0, "correct": 0.0, "seen": 0, "wait": 0.0}  # a resumed epoch's, or new
    # device-side running sums continue from a resumed epoch's, so the epoch's numbers are exact too
    loss_sum = torch.tensor(sums["loss"], dtype=torch.float64, device=s.device)
    correct = torch.tensor(sums["correct"], dtype=torch.float64, device=s.device)
    bad_loss = torch.zeros((), dtype=torch.bool, device=s.device)
    bad_run = torch.tensor(s.bad_steps, dtype=torch.float32, device=s.device)  # consecutive non-finite updates
    skipped = torch.tensor(s.skipped_steps, dtype=torch.float32, device=s.device)
    late, clock = LateRead(s.device), StepClock(s.device, sums["wait"])
    bar = progress(batches, len(batches), f"epoch {epoch + 1}", show_progress)
    upcoming = iter(bar)
    batch = next_batch(upcoming, clock)
    step = start_step - 1
    while batch is not None:
        step += 1
        x, y = batch
        x, soft, _ = s.mixer(x, y, epoch, step, s.rank, enabled=mixing)
        window = step - step % s.accumulate
        window_len = min(s.accumulate, n_steps - window)  # the last window may be shorter
        is_update = step + 1 == window + window_len
        with s.forward.no_sync() if s.ddp and not is_update else contextlib.nullcontext():
            with s.autocast():
                logits = s.forward(x)
            loss = s.criterion(logits, soft)
            s.scaler.scale(loss / window_len).backward()
        loss_sum += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(1) == soft.argmax(1)).sum()  # dominant label under mixing
        bad_loss |= ~torch.isfinite(loss.detach())
        sums["seen"] += y.shape[0]
        batch = next_batch(upcoming, clock)  # queued while the device still computes this step
        if is_update:
            stop, bad = distributed.agree(torch.stack([device_feed(torch.tensor(float(preempt.requested())),
                                                                   s.device), bad_loss.float()]))
            found = optimizer_update(s, bad > 0)
            # fp16: the GradScaler skips overflowing steps by design; only a non-finite loss counts
            counted = bad > 0 if s.scaler.is_enabled() else found
            bad_run = torch.where(counted, bad_run + 1, torch.zeros_like(bad_run))
            skipped += found
            bad_loss.zero_()
            seen = late.push(torch.stack([stop, bad_run, loss.detach().float()]), step)
            if seen is not None and show_progress and bar is not batches:
                bar.set_postfix(loss=f"{seen[0][2]:.3f}", lr=f"{s.optimizer.param_groups[0]['lr']:.2e}", refresh=False)
            if seen is not None and late_stop(s, seen, epoch) and step + 1 < n_steps:
                keep_counts(s, bad_run, skipped)  # last.pt keeps every rank's sums: a resume on any count goes on
                s.sums = global_sums(add_sums({**sums, "wait": clock.wait_s()}, loss_sum, correct), s.device)
                return {"stopped_at": step + 1}
    seen = late.flush()
    if seen is not None:
        late_stop(s, seen, epoch)  # a stop asked at the last update lands at the next epoch's first
    keep_counts(s, bad_run, skipped)
    sums = add_sums({**sums, "wait": clock.wait_s()}, loss_sum, correct)
    s.sums = {}
    total = distributed.all_sum(torch.tensor([sums["loss"], sums["correct"], sums["seen"]], dtype=torch.float64,
                                             device=s.device)).tolist()  # every rank's shard
    seen = max(1.0, total[2])
    return {"train_loss": total[0] / seen, "train_acc": total[1] / seen, "seen": int(total[2]),
            "data_wait": sums["wait"]}


def late_stop(s: TrainState, seen: tuple[list[float], int], epoch: int) -> bool:
    """Act on an update's flags read late: raise Diverged past max_bad_steps, else whether to stop."""
    (stop, bad_run, _), step = seen
    if bad_run > s.max_bad_steps:
        raise preempt.Diverged(f"{int(bad_run)} consecutive non-finite updates at epoch {epoch + 1}, step {step + 1}: "
                               f"lower lr, set clip_grad_norm, or check the data")
    return stop > 0


def keep_counts(s: TrainState, bad_run: torch.Tensor, skipped: torch.Tensor) -> None:
    """The device counters back into the state (a checkpoint is due: reading them now costs nothing)."""
    s.bad_steps, s.skipped_steps = int(bad_run.item()), int(skipped.item())


def global_sums(sums: dict, device: torch.device) -> dict:
    """The epoch's sums of loss, correct and seen over every rank (this rank's data wait)."""
    total = distributed.all_sum(torch.tensor([sums["loss"], sums["correct"], sums["seen"]], dtype=torch.float64,
                                             device=device)).tolist()
    return {**sums, "loss": total[0], "correct": total[1], "seen": int(total[2])}


def next_batch(upcoming, clock: StepClock):
    """The next (x, y) or None at the end, its wait on the clock (the data-wait share of the epoch)."""
    clock.asked()
    batch = next(upcoming, None)
    clock.came()
    return batch


def add_sums(sums: dict, loss_sum: torch.Tensor, correct: torch.Tensor) -> dict:
    """The epoch's (checkpointable) sums with the device-side running totals read back."""
    return {**sums, "loss": loss_sum.item(), "correct": correct.item()}


@torch.inference_mode()
def evaluate(model: torch.nn.Module, batches, amp_dtype: torch.dtype | None = None,
             show_progress: bool = False) -> dict:
    """Exact metrics over a whole (rank-sharded, unpadded) batch source: loss, acc, top5, f1, and the probabilities.
    `model`: the whole model; its part that the source's batches go into is `batches.takes(model)`. The
    probabilities stay on the device until the pass ends: one copy to the host, not one wait per batch."""
    net = batches.takes(model)
    was_training = net.training
    net.eval()
    probs, targets = [], []
    for x, y in progress(batches, len(batches), "validate", show_progress):
        with autocast(batches.device, amp_dtype):
            logits = net(x)
        probs.append(logits.float().softmax(1))
        targets.append(y)
    net.train(was_training)
    index = torch.as_tensor(batches.order(), dtype=torch.int64)
    probs = torch.cat(probs).cpu() if probs else torch.zeros(0, 0)
    targets = torch.cat(targets).cpu() if targets else torch.zeros(0, dtype=torch.int64)
    p, t = distributed.gather_rows(index, probs, targets)
    loss = -torch.log(p.gather(1, t.view(-1, 1)).clamp_min(1e-12)).mean().item()
    return {"loss": loss, **classification_metrics(p, t), "probs": p, "targets": t}
