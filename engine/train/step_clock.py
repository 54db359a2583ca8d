"""How long the steps waited for their batches: host time in `next()` on the CPU; on CUDA the GPU's own
clock (CUDA events just before the batch is asked for and just after it came), read at the epoch's end.

On CUDA host time in `next()` would also count a host blocked on a full launch queue while the GPU is
busy, which is not waiting for data. The events count what the GPU did between them: idle time waiting
for the host to hand over the batch, plus the batch's own kernels (a resident batch's gather and warp)."""
from __future__ import annotations

import time

import torch


class StepClock:
    """`asked()` / `came()` around each wait for a batch; `wait_s()`: the epoch's data wait in seconds."""

    def __init__(self, device: torch.device, wait_s: float = 0.0):
        self.cuda = device.type == "cuda"
        self.total, self.start = wait_s, 0.0
        self.spans: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def _event(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def asked(self) -> None:
        if self.cuda:
            self.spans.append((self._event(), None))
        else:
            self.start = time.perf_counter()

    def came(self) -> None:
        if self.cuda:
            self.spans[-1] = (self.spans[-1][0], self._event())
        else:
            self.total += time.perf_counter() - self.start

    def wait_s(self) -> float:
        """Seconds spent on data so far (on CUDA this waits for the device: call it at a sync point)."""
        if self.spans:
            self.spans[-1][1].synchronize()
            self.total += sum(a.elapsed_time(b) for a, b in self.spans) / 1000
            self.spans.clear()
        return self.total
