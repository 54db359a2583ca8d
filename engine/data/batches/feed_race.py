"""augment_on="auto" on CUDA: which feed is faster, measured, not assumed.

The device canvas (workers decode, the GPU warps) sends several times the output's bytes per image and
wins or loses against plain workers depending on the machine (an H100 with 16 cores: workers won at 1, 4
and 14 workers; an H200: the canvas won at 4). So before a fold trains, each candidate source makes a few
batches, timed after a warm-up on the device's clock, and the faster one feeds the fold; rank 0 decides for
every rank, and last.pt keeps the choice so a resume draws exactly the same batches.
"""
from __future__ import annotations

import itertools
import time

import torch

from engine.data.batches.sources import BatchSource
from engine.system import distributed

WARM_UP, TIMED = 2, 8  # batches per candidate, past what the workers have queued (PREFETCH per worker)
PREFETCH = 4  # make_loader's prefetch_factor


def batches_per_second(source: BatchSource, device: torch.device, warm_up: int = WARM_UP,
                       timed: int = TIMED) -> float:
    """How fast `source` hands over ready batches in its steady state: the batches its workers queued while
    starting are taken first (they would time a burst, not the rate), then `timed` more; its workers stop after."""
    source.set_epoch(0)
    warm_up += PREFETCH * source.workers
    timed = max(1, min(timed + source.workers, len(source) - warm_up))
    batches = iter(source)
    for _ in itertools.islice(batches, warm_up):
        pass
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, done = time.perf_counter(), 0
    for _ in itertools.islice(batches, timed):
        done += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rate = done / max(time.perf_counter() - start, 1e-9)
    source.stop()  # its queue must not fill while the next candidate is timed (the winner's start again)
    return rate


def race(candidates: dict[str, BatchSource], device: torch.device, measure=batches_per_second) -> tuple[str, str]:
    """(the faster candidate's name, one line saying what was measured); rank 0 measures, every rank follows."""
    main = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    rates = distributed.broadcast_object({name: measure(source, device) for name, source in candidates.items()}
                                         if main else {})
    winner = max(rates, key=rates.get)
    said = ", ".join(f"{name} {rate:.1f} batches/s" for name, rate in rates.items())
    return winner, f"measured past the workers' queues: {said}; {winner} is faster"
