"""Counting what would make a CUDA host wait, on the CPU: `HostReads` marks the tensors that would live on
the device (seeded ones and everything computed from them) and counts each host read of one.

On the CPU every tensor is a host tensor, so the mark is what tells them apart: a TorchDispatchMode spreads
it from inputs to outputs (and to tensors written in place); a TorchFunctionMode sees the reads that never
reach the dispatcher (`tolist`, `numpy`, `cpu`). A copy into host memory with
non_blocking=True (a late read into pinned memory) is not a wait.
"""
from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten
SYNCING_OPS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
               aten.equal.default, aten.repeat_interleave.Tensor, aten._unique2.default, aten.unique_dim.default}
READING_METHODS = {"tolist", "numpy", "cpu"}
MARK = "_sketchbook_on_device"


def mark(*tensors) -> None:
    """Say that these tensors live on the device."""
    for t in tensors:
        if isinstance(t, torch.Tensor):
            setattr(t, MARK, True)


def on_device(t) -> bool:
    return isinstance(t, torch.Tensor) and getattr(t, MARK, False)


class _Spread(TorchDispatchMode):
    def __init__(self, reads: list):
        super().__init__()
        self.reads, self.ops = reads, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        flat_in, _ = tree_flatten((args, kwargs))
        if any(on_device(t) for t in flat_in):
            boolean_index = func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default) and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in tree_flatten(args[1])[0])
            if func in SYNCING_OPS or boolean_index:
                self.reads.append(f"{func}: " + "".join(traceback.format_stack(limit=8)[:-2]))
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
            if func is aten.copy_.default and non_blocking and not on_device(args[0]):
                return out  # an asynchronous copy into host memory: read later, no wait now
            mark(*tree_flatten(out)[0])
            for arg, spec in zip(args, func._schema.arguments):
                if spec.alias_info is not None and spec.alias_info.is_write:
                    mark(*tree_flatten(arg)[0])
        return out


class _Reads(TorchFunctionMode):
    def __init__(self, reads: list):
        super().__init__()
        self.reads = reads

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if args and on_device(args[0]) and name in READING_METHODS:  # (.to("cpu") looks like .to(device) here)
            self.reads.append(f"{name}: " + "".join(traceback.format_stack(limit=8)[:-1]))
        return func(*args, **kwargs)


class HostReads:
    """with HostReads() as r: ...  then r.reads (where each read happened) and r.ops (dispatched operations)."""

    def __init__(self):
        self.reads: list[str] = []
        self._spread, self._fn = _Spread(self.reads), _Reads(self.reads)

    @property
    def ops(self) -> int:
        return self._spread.ops

    def __enter__(self) -> "HostReads":
        self._fn.__enter__()
        self._spread.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._spread.__exit__(*exc)
        self._fn.__exit__(*exc)
