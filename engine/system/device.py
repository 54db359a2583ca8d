"""The machine a process runs on: CPU count, autocast precision and memory format, decided in one place."""
from __future__ import annotations

import contextlib
import os

import torch

PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler"}


def cpu_count() -> int:
    """Cores this process may use (its affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: fp32). auto: bf16 on CUDA where supported, else fp16; fp32 on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast for `dtype`, or nothing for fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def use_channels_last(setting: bool | None, device: torch.device) -> bool:
    """channels_last: the recipe's choice, else on CUDA only (it pays on tensor cores, not on CPU)."""
    return device.type == "cuda" if setting is None else setting


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def augment_on(setting: str, device: torch.device, preset_on_device: bool = True) -> str:
    """Where training augmentation runs: the recipe's choice; auto: "device" on CUDA (when the augment
    preset has a device version), "workers" on CPU.

    On CPU the "device" is the cores the workers would use, and its batched warp there measured slower
    than the workers' per-image transforms (bench/README.md).
    """
    if setting != "auto":
        return setting
    return "device" if device.type == "cuda" and preset_on_device else "workers"


def device_feed(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on `device` without waiting for the device: from pageable memory a CUDA copy would wait
    for every queued kernel (a host sync per step, idling the GPU while the next batch is prepared)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
