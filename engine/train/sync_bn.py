"""sync_bn=True: batch-norm statistics over every DDP process's samples, not each process's own.

On CUDA: timm's convert_sync_batchnorm (PyTorch's SyncBatchNorm, keeping the activation of timm's
BatchNormAct layers, which PyTorch's own converter would drop). On CPU (gloo), where PyTorch's
SyncBatchNorm refuses to run, each batch-norm layer all-reduces its batch sums (differentiably) instead.
Parameter and buffer names stay those of plain batch-norm, so checkpoints load into the unsynced model.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from timm.layers import convert_sync_batchnorm as timm_convert
from torch.nn.modules.batchnorm import _BatchNorm


class _SumOverRanks(torch.autograd.Function):
    """all-reduce (sum) whose backward sums the gradients too: every rank's loss reaches every rank's inputs."""

    @staticmethod
    def forward(ctx, values: torch.Tensor) -> torch.Tensor:
        values = values.clone()
        dist.all_reduce(values)
        return values

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class AllReduceBatchNormMixin:
    """forward() of a batch-norm layer whose training statistics are summed over all processes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.tensor([x.numel() / channels], dtype=torch.float32, device=x.device)
        total = _SumOverRanks.apply(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))  # gradients flow to every rank
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels:2 * channels] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - factor).add_(factor * mean)
                self.running_var.mul_(1 - factor).add_(factor * var * n / (n - 1).clamp_min(1))
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        y = y.to(x.dtype)
        if hasattr(self, "act"):  # timm's BatchNormAct2d: batch-norm, then drop, then activation
            y = self.act(self.drop(y))
        return y


_SYNCED: dict[type, type] = {}


def _all_reduce_class(cls: type) -> type:
    if cls not in _SYNCED:
        _SYNCED[cls] = type(f"AllReduce{cls.__name__}", (AllReduceBatchNormMixin, cls), {})
    return _SYNCED[cls]


def convert_sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model with every batch-norm layer synchronised across DDP processes (call before wrapping in DDP)."""
    if device.type != "cpu":
        return timm_convert(model)
    for module in model.modules():
        if isinstance(module, _BatchNorm) and not isinstance(module, (torch.nn.SyncBatchNorm, AllReduceBatchNormMixin)):
            module.__class__ = _all_reduce_class(type(module))  # same parameters and buffers, synced forward
    return model
