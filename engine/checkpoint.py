"""Checkpoints: plain dicts of tensors and Python values, written atomically, loaded with weights_only=True.

Keys: model, recipe, classes, epoch, metrics, data (normalisation and crop), fold (`model_checkpoint`);
last.pt adds optimizer, scheduler, scaler, ema, rng, early_stopping and progress (step inside the epoch,
running sums), written and read by engine/train/state.py alone.
"""
from __future__ import annotations

import random
import threading
from pathlib import Path

import numpy as np
import torch

from engine.errors import UserError
from engine.system import preemption
from engine.system.atomic import write_atomic


def base_fields(recipe: dict, classes: list, data: dict, fold: int) -> dict:
    """What best.pt and last.pt both carry so predict, cam and a resume rebuild the model from the file alone:
    the recipe (as a dict), the class names, the data config (mean, std, crop_pct, background) and the fold."""
    return {"recipe": recipe, "classes": list(classes), "data": data, "fold": fold}


def saved_base(ckpt: dict) -> tuple[dict, list[str], dict | None]:
    """A checkpoint's recipe dict, class names and data config (None in files written before it was saved)."""
    return ckpt["recipe"], list(ckpt["classes"]), ckpt.get("data")


def model_checkpoint(base: dict, model_state: dict, epoch: int, metrics: dict) -> dict:
    """best.pt: the weights with what predict and cam need to rebuild them (`base`: base_fields)."""
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


def snapshot(obj, _copies: dict | None = None, buffers: dict | None = None, _at: tuple = ()):
    """`obj` with every tensor copied to the CPU: what training goes on changing is frozen as it is now.

    A tensor reached twice (the model in best.pt and last.pt) is copied once. `buffers` (position ->
    tensor) are reused from the last snapshot of the same shape: new memory costs page faults that
    take longer than the copy itself.
    """
    copies = {} if _copies is None else _copies
    if isinstance(obj, torch.Tensor):
        key = (obj.device, obj.data_ptr(), obj.dtype, tuple(obj.shape), obj.stride())
        if key not in copies:
            old = buffers.get(_at) if buffers is not None else None
            if old is not None and old.shape == obj.shape and old.dtype == obj.dtype:
                copies[key] = old.copy_(obj.detach())
            else:
                copies[key] = obj.detach().to("cpu", copy=True)
            if buffers is not None:
                buffers[_at] = copies[key]
        return copies[key]
    if isinstance(obj, dict):
        return {k: snapshot(v, copies, buffers, (*_at, k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v, copies, buffers, (*_at, i)) for i, v in enumerate(obj))
    return obj


class CheckpointWriter:
    """Writes checkpoints (atomically, durably) in one thread while training goes on.

    `submit` first waits for the previous writes, so files are written in order and at most one
    snapshot waits in memory; `join` waits for the writes (fit calls it before it returns and on any
    way out, so no run ends before its checkpoints are on disk) and raises what a write raised.
    """

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._buffers: dict = {}  # CPU copies reused by the next snapshot (written and done with by then)

    def submit(self, writes: list[tuple[dict, Path]]) -> None:
        """Snapshot each (checkpoint, path) now and write them in the background, in order."""
        self.join()
        copies: dict = {}
        frozen = [(snapshot(obj, copies, self._buffers, (Path(path).name,)), Path(path)) for obj, path in writes]
        self._thread = threading.Thread(target=self._write, args=(frozen,), name="checkpoint-writer")
        self._thread.start()  # not a daemon: the interpreter waits for it even on an unexpected exit

    def _write(self, writes: list[tuple[dict, Path]]) -> None:
        try:
            for obj, path in writes:
                save_atomic(obj, path)
        except BaseException as e:  # raised in the training thread by the next submit or join
            self._error = e
            preemption.request_stop()  # the loop stops at its next step and raises this there, not an epoch later

    def join(self) -> None:
        """Wait until everything submitted is on disk; raise the write's error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


_WRITER = CheckpointWriter()  # one per process: checkpoints reach the disk in the order training made them


def save_in_background(writes: list[tuple[dict, Path]]) -> None:
    """Snapshot (checkpoint, path) pairs now; write them atomically while training goes on."""
    _WRITER.submit(writes)


def wait_for_writes() -> None:
    """Block until every checkpoint submitted is on disk (before reading them, stopping, or exiting)."""
    _WRITER.join()


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


def finished(ckpt: dict) -> bool:
    """Whether a loaded last.pt says its fold finished training."""
    return bool(ckpt.get("progress", {}).get("finished"))


def peek(path: Path) -> dict | None:
    """A checkpoint's fields, memory-mapped (the weights are not read); None when it is missing or cannot be read
    (being written by another machine, or damaged)."""
    if not Path(path).is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  whatever a damaged file raises, the callers only need "unreadable"
        return None


def is_finished(last_pt: Path) -> bool:
    """Whether a last.pt says its fold finished (not finished as far as we know when it cannot be read)."""
    state = peek(last_pt)
    return state is not None and finished(state)
