"""DDP under torchrun: one process per device, NCCL on CUDA, gloo on CPU; rank 0 writes.

Without torchrun every function here degrades to the single-process answer.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def local_device(local_rank: int) -> torch.device:
    """This process's device (made current on CUDA)."""
    use_cuda = torch.cuda.is_available() and os.environ.get("SKETCHBOOK_CPU") != "1"
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    return device


def alone() -> Dist | None:
    """Rank 0 as a single process on its device (no process group); None on every other torchrun rank."""
    if int(os.environ.get("RANK", 0)) != 0:
        return None
    return Dist(device=local_device(int(os.environ.get("LOCAL_RANK", 0))))


def setup(timeout_s: float = 600) -> Dist:
    """Read torchrun's environment, pick this process's device and join the process group."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = local_device(local_rank)
    use_cuda = device.type == "cuda"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=device if use_cuda else None)
    return Dist(rank=int(os.environ.get("RANK", 0)), world=world, local_rank=local_rank,
                local_world=int(os.environ.get("LOCAL_WORLD_SIZE", 1)), device=device)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def agree(flags: torch.Tensor) -> torch.Tensor:
    """Each flag (a device tensor) set on every rank where any rank set it: one all-reduce on the device,
    nothing read by the host."""
    if not dist.is_initialized():
        return flags
    flags = flags.clone()
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks."""
    if dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
    return values


def gather_rows(index: torch.Tensor, *columns: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's rows (CPU tensors, one gather for all columns), sorted by their dataset index."""
    parts = all_objects((index, *columns))
    index = torch.cat([p[0] for p in parts])
    order = index.argsort()
    return [torch.cat([p[c] for p in parts])[order] for c in range(1, len(columns) + 1)]


def all_objects(obj) -> list:
    """Every rank's obj, in rank order."""
    if not dist.is_initialized():
        return [obj]
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


def broadcast_object(obj):
    """Rank 0's value of obj on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
