"""The training loop: `train_one_epoch` and `evaluate` (train/state.py builds the state, train/fit.py runs the epochs).

Order of one optimizer update: autocast forward -> fp32 loss -> scaled backward (no_sync on
accumulation micro-steps) -> agree on stop / non-finite loss across ranks -> unscale -> clip ->
step (or skip) -> schedule -> EMA.
"""
from __future__ import annotations

import contextlib
import time

import torch

from engine.evaluate.metrics import classification_metrics
from engine.system import distributed
from engine.system import preemption as preempt
from engine.system.device import autocast
from engine.system.runlog import progress
from engine.train.state import TrainState


def optimizer_update(s: TrainState, skip: bool = False) -> bool:
    """Unscale, clip, step (unless skipped or non-finite), schedule, EMA; returns whether the step was applied."""
    s.scaler.unscale_(s.optimizer)
    if s.clip_grad_norm is not None:  # the norm also tells a non-finite gradient (no norm: the loss check only)
        params = [p for g in s.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, s.clip_grad_norm, foreach=True)
        skip = skip or not bool(torch.isfinite(norm))  # grads are all-reduced, so every rank agrees
    scale = s.scaler.get_scale() if s.scaler.is_enabled() else 1.0
    if not skip or s.scaler.is_enabled():
        s.scaler.step(s.optimizer)  # the GradScaler skips a step with inf/NaN gradients on its own
    s.scaler.update()
    applied = not skip and (not s.scaler.is_enabled() or s.scaler.get_scale() >= scale)  # a lowered scale = skipped
    s.optimizer.zero_grad(set_to_none=True)
    s.scheduler.step()
    if applied and s.ema is not None:
        s.ema.update(s.model)
    return applied


def train_one_epoch(s: TrainState, batches, epoch: int, start_step: int = 0, mixing: bool = True,
                    show_progress: bool = True) -> dict:
    """One pass over a batch source (engine/data/batches/sources.py, set to this epoch) from `start_step`; stops early
    (returning `stopped_at`) on a signal."""
    s.train_mode()
    n_steps = start_step + len(batches)
    sums = s.sums or {"loss": 0.0, "correct": 0.0, "seen": 0, "wait": 0.0}  # a resumed epoch's, or new
    # device-side running sums continue from a resumed epoch's, so the epoch's numbers are exact too
    loss_sum = torch.tensor(sums["loss"], dtype=torch.float64, device=s.device)
    correct = torch.tensor(sums["correct"], dtype=torch.float64, device=s.device)
    bad_loss = torch.zeros((), dtype=torch.bool, device=s.device)
    bar = progress(batches, len(batches), f"epoch {epoch + 1}", show_progress)
    upcoming = iter(bar)
    batch = next_batch(upcoming, sums)
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
        # the next batch's work is queued while the device computes this one: after the update's host sync
        # (agreeing on stop / a bad loss) the device would sit idle while it is prepared
        batch = next_batch(upcoming, sums)
        if is_update:
            stop, loss_was_bad = distributed.any_true([preempt.requested(), bool(bad_loss)], s.device)
            bad_loss.zero_()
            applied = optimizer_update(s, skip=loss_was_bad)
            # fp16: the GradScaler skips overflowing steps by design; only a non-finite loss counts
            bad = loss_was_bad if s.scaler.is_enabled() else not applied
            s.bad_steps = s.bad_steps + 1 if bad else 0
            s.skipped_steps += not applied
            if s.bad_steps > s.max_bad_steps:
                raise preempt.Diverged(f"{s.bad_steps} consecutive non-finite updates at epoch {epoch + 1}, "
                                       f"step {step + 1}: lower lr, set clip_grad_norm, or check the data")
            if stop and step + 1 < n_steps:  # last.pt keeps every rank's sums: a resume on any count goes on
                s.sums = global_sums(add_sums(sums, loss_sum, correct), s.device)
                return {"stopped_at": step + 1}
        if show_progress and bar is not batches and step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{s.optimizer.param_groups[0]['lr']:.2e}", refresh=False)
    sums = add_sums(sums, loss_sum, correct)
    s.sums = {}
    total = distributed.all_sum(torch.tensor([sums["loss"], sums["correct"], sums["seen"]], dtype=torch.float64,
                                             device=s.device)).tolist()  # every rank's shard
    seen = max(1.0, total[2])
    return {"train_loss": total[0] / seen, "train_acc": total[1] / seen, "seen": int(total[2]),
            "data_wait": sums["wait"]}


def global_sums(sums: dict, device: torch.device) -> dict:
    """The epoch's sums of loss, correct and seen over every rank (this rank's data wait)."""
    total = distributed.all_sum(torch.tensor([sums["loss"], sums["correct"], sums["seen"]], dtype=torch.float64,
                                             device=device)).tolist()
    return {**sums, "loss": total[0], "correct": total[1], "seen": int(total[2])}


def next_batch(upcoming, sums: dict):
    """The next (x, y) or None at the end, its wait added to sums["wait"] (the data-wait share of the epoch)."""
    t0 = time.perf_counter()
    batch = next(upcoming, None)
    sums["wait"] += time.perf_counter() - t0
    return batch


def add_sums(sums: dict, loss_sum: torch.Tensor, correct: torch.Tensor) -> dict:
    """The epoch's (checkpointable) sums with the device-side running totals read back."""
    return {**sums, "loss": loss_sum.item(), "correct": correct.item()}


@torch.inference_mode()
def evaluate(model: torch.nn.Module, batches, amp_dtype: torch.dtype | None = None,
             show_progress: bool = False) -> dict:
    """Exact metrics over a whole (rank-sharded, unpadded) batch source: loss, acc, top5, f1, and the probabilities.
    `model`: what the source's batches go into (`batches.takes(model)`)."""
    was_training = model.training
    model.eval()
    probs, targets, index = [], [], []
    position = 0
    indices = batches.order()
    for x, y in progress(batches, len(batches), "validate", show_progress):
        with autocast(batches.device, amp_dtype):
            logits = model(x)
        probs.append(logits.float().softmax(1).cpu())
        targets.append(y.cpu())
        index.append(torch.as_tensor(indices[position:position + len(y)]))
        position += len(y)
    model.train(was_training)
    p, t = distributed.gather_rows(torch.cat(index), torch.cat(probs), torch.cat(targets))
    loss = -torch.log(p.gather(1, t.view(-1, 1)).clamp_min(1e-12)).mean().item()
    return {"loss": loss, **classification_metrics(p, t), "probs": p, "targets": t}
