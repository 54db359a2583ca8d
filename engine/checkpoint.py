"""Checkpoints: plain dicts of tensors and Python values, written atomically, loaded with weights_only=True.

Keys: model, recipe, classes, epoch, metrics, data (normalisation and crop), fold (`model_checkpoint`);
last.pt adds optimizer, scheduler, scaler, ema, rng, early_stopping and progress (step inside the epoch,
running sums), written and read by engine/train/state.py alone.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from engine.system.atomic import write_atomic
from engine.errors import UserError


def model_checkpoint(base: dict, model_state: dict, epoch: int, metrics: dict) -> dict:
    """best.pt: the weights with what predict and cam need to rebuild them (`base`: recipe, classes, data, fold)."""
    return {**base, "model": model_state, "epoch": epoch, "metrics": metrics}


def save_atomic(obj: dict, path: str | Path) -> None:
    """torch.save through a temporary file and a rename: a killed write or a full disk leaves the old file."""
    write_atomic(path, lambda f: torch.save(obj, f), binary=True, size_hint=tensor_bytes(obj))


def tensor_bytes(obj) -> int:
    """Bytes of every tensor in a nested checkpoint: about what torch.save writes."""
    if isinstance(obj, torch.Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint on the CPU; a clear UserError for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"'{path}' is not a readable sketchbook checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or not {"model", "recipe", "classes"} <= set(ckpt):
        raise UserError(f"'{path}' is not a sketchbook checkpoint (needs model, recipe and classes)")
    return ckpt


def rng_state() -> dict:
    """This process's RNGs (Python, NumPy, torch, its CUDA device) as weights_only-loadable values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                       "has_gauss": has_gauss, "cached": cached}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device: each rank saves its own
    return state


def restore_rng(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
