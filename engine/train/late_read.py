"""Device values the host reads one optimizer update late, so a step never waits for the device.

The loop needs a few device values per update (did the ranks agree to stop, how many updates in a row were
non-finite, the loss for the progress bar). Reading them at once would make the host wait for every queued
kernel and leave the GPU idle while the next batch is prepared. Instead each update starts a copy into
pinned host memory and the host reads the previous update's copy, long finished by then.
"""
from __future__ import annotations

import torch


class LateRead:
    """`push(values, tag)` starts the copy of a small 1-d device tensor; it returns the previous push's
    values as a list with its tag (None the first time). `flush()` reads what is left (an epoch's end)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pending: tuple[torch.Tensor, torch.cuda.Event | None, object] | None = None

    def push(self, values: torch.Tensor, tag: object = None) -> tuple[list[float], object] | None:
        """Start the copy of `values`; returns what the previous push held."""
        cuda = self.device.type == "cuda"
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=cuda)
        host.copy_(values.detach(), non_blocking=True)  # (a plain copy on the CPU)
        event = None
        if cuda:
            event = torch.cuda.Event()
            event.record()
        previous, self.pending = self.pending, (host, event, tag)
        return self._read(previous)

    def flush(self) -> tuple[list[float], object] | None:
        """The last push's values (waits for the device: call it where a sync is due anyway)."""
        previous, self.pending = self.pending, None
        return self._read(previous)

    @staticmethod
    def _read(entry) -> tuple[list[float], object] | None:
        if entry is None:
            return None
        host, event, tag = entry
        if event is not None:
            event.synchronize()  # recorded an update ago: the device is past it, so this returns at once
        return host.tolist(), tag
