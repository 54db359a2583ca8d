"""A store of decoded uint8 images: one flat file of image bytes plus an index, memory-mapped by readers.

    <folder>/index.json   {"format", "settings", "data_file", "entries": {abs path: [size, mtime_ns, offset, c, h, w]}}
    <folder>/data-<n>.bin the images back to back (C x H x W uint8 each)
    <folder>/lock         held while the store is checked or extended (runs, ranks and trials share it)

An entry is used only while its file's size and mtime match; a changed file is decoded again. A store
whose settings or format differ from the expected ones, or whose data file is too short, is discarded.
Readers map the data file with mmap (MAP_SHARED), so every process on the machine shares one copy.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from engine.errors import UserError
from engine.system import lock, preemption

FORMAT = 1


class CachedImages:
    """index -> uint8 C x H x W tensor, read from a memory-mapped data file (picklable: maps lazily)."""

    def __init__(self, data_file: Path, offsets: np.ndarray, shapes: np.ndarray):
        self.data_file = str(data_file)
        self.offsets = offsets
        self.shapes = shapes
        self._map = None
        self._open()  # map now, so forked dataloader workers inherit the mapping

    def _open(self) -> None:
        if self._map is None and len(self.offsets):
            self._map = np.memmap(self.data_file, dtype=np.uint8, mode="r")

    def __len__(self) -> int:
        return len(self.offsets)

    def __call__(self, index: int) -> torch.Tensor:
        self._open()
        c, h, w = (int(v) for v in self.shapes[index])
        start = int(self.offsets[index])
        # a private copy of one image: transforms may write, the shared store must never change
        return torch.from_numpy(np.array(self._map[start:start + c * h * w])).view(c, h, w)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None}  # spawned workers map the file themselves


def _file_stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"image '{path}' not found while building the cache; run the audit again "
                        f"(bad_images='skip') or restore the file")
    return st.st_size, st.st_mtime_ns


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """The (H, W) `engine.data.stores.image_cache.pre_resize` gives: the shorter side down to short_side, never up."""
    short, long = min(height, width), max(height, width)
    if short <= short_side:
        return height, width
    new_long = int(short_side * long / short)  # torchvision's rounding for Resize(int)
    return (short_side, new_long) if height <= width else (new_long, short_side)


def estimate_bytes(paths: Sequence[str], short_side: int, sample: int = 2000, round_to: int = 1) -> tuple[int, bool]:
    """Bytes the cached images take, from image headers (no decoding); (bytes, exact). Samples big sets.
    `round_to`: each side rounded up to a multiple of it (the resident path's packed canvases)."""
    chosen = list(paths)
    exact = len(chosen) <= sample
    if not exact:
        chosen = [chosen[i] for i in np.random.default_rng(0).choice(len(chosen), sample, replace=False)]
    total = 0
    for path in chosen:
        try:
            with Image.open(path) as im:
                width, height = im.size
        except Exception:
            continue  # the decoder will name it; an estimate need not
        h, w = (-(-side // round_to) * round_to for side in resized_shape(height, width, short_side))
        total += 3 * h * w
    return (total if exact else int(total * len(paths) / max(1, len(chosen)))), exact


def _init_worker() -> None:
    torch.set_num_threads(1)  # one image per process; threads would only fight over the cores
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a fork keeps the trainer's preemption handler: Pool.terminate must end it


class Store:
    """The store in `folder` for one set of `settings` (what the cached bytes depend on)."""

    def __init__(self, folder: Path, settings: dict, decode: Callable[[str], torch.Tensor],
                 log: Callable[[str], None] = print):
        self.folder = Path(folder)
        self.settings = settings
        self.decode = decode
        self.log = log

    def _read_index(self) -> dict:
        empty = {"format": FORMAT, "settings": self.settings, "data_file": "data-0.bin", "entries": {}}
        path = self.folder / "index.json"
        if not path.is_file():
            return empty
        try:
            index = json.loads(path.read_text())
            data = self.folder / index["data_file"]
            end = max((e[2] + e[3] * e[4] * e[5] for e in index["entries"].values()), default=0)
            problem = ("it was built with other settings" if index.get("format") != FORMAT
                       or index.get("settings") != self.settings else
                       "its data file is shorter than its index" if (data.stat().st_size if data.exists() else 0) < end
                       else None)
        except (ValueError, KeyError, TypeError, IndexError, OSError):
            problem = "its index is unreadable"
        if problem is None:
            return index
        self.log(f"cache: discarding {self.folder} ({problem}); rebuilding")
        for f in self.folder.glob("data-*.bin"):
            f.unlink()
        path.unlink()
        return empty

    def _write_index(self, index: dict) -> None:
        tmp = self.folder / "index.json.tmp"
        tmp.write_text(json.dumps(index))
        tmp.replace(self.folder / "index.json")

    def ensure(self, paths: Sequence[str], workers: int, show_progress: bool = True) -> CachedImages:
        """Decode whatever of `paths` is missing or changed, then return a reader of all of them (in order)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with lock.waiting(self.folder / "lock"):
            index = self._read_index()
            entries = index["entries"]
            stamps = {p: _file_stamp(p) for p in dict.fromkeys(paths)}
            todo = [p for p, stamp in stamps.items() if p not in entries or tuple(entries[p][:2]) != stamp]
            if todo:
                self._append(index, todo, stamps, workers, show_progress)
            self._compact_if_wasteful(index)
            rows = np.array([entries[p][2:] for p in paths], dtype=np.int64).reshape(-1, 4)
        return CachedImages(self.folder / index["data_file"], rows[:, 0], rows[:, 1:])

    def _append(self, index: dict, todo: list[str], stamps: dict, workers: int, show_progress: bool) -> None:
        need, _ = estimate_bytes(todo, self.settings["short_side"])
        free = shutil.disk_usage(self.folder).free
        if need > free:
            raise UserError(f"the image cache needs ~{need / 2**30:.1f} GiB more but {self.folder} has "
                            f"{free / 2**30:.1f} GiB free; free space (for cache='memory' in Docker: --shm-size) "
                            f"or use another cache mode")
        data = self.folder / index["data_file"]
        workers = max(1, min(workers, len(todo) // 32))
        pool = multiprocessing.get_context("fork").Pool(workers, _init_worker) if workers > 1 else None
        try:
            decoded = pool.imap(self.decode, todo, chunksize=8) if pool else map(self.decode, todo)
            with open(data, "ab") as f:
                bar = tqdm(decoded, total=len(todo), desc=f"caching images ({workers} processes)",
                           disable=not show_progress, leave=False, mininterval=0.5)
                for path, image in zip(todo, bar):
                    offset = f.tell()
                    f.write(image.numpy().tobytes())
                    index["entries"][path] = [*stamps[path], offset, *image.shape]
                    preemption.check("caching images")  # no index written: the next run decodes them again
                f.flush()
                os.fsync(f.fileno())  # the index must never point at bytes that are not on disk
        except OSError as e:
            raise UserError(f"could not write the image cache in {self.folder} ({e}); free space or use "
                            f"another cache mode") from e
        finally:
            if pool:
                pool.terminate()
        self._write_index(index)

    def _compact_if_wasteful(self, index: dict) -> None:
        """Rewrite the data file once more than half of it is replaced entries (changed images)."""
        data = self.folder / index["data_file"]
        live = sum(e[3] * e[4] * e[5] for e in index["entries"].values())
        if not data.exists() or data.stat().st_size <= 2 * live:
            return
        generation = int(index["data_file"][5:-4]) + 1
        new_file = f"data-{generation}.bin"
        with open(data, "rb") as src, open(self.folder / new_file, "wb") as dst:
            for entry in index["entries"].values():
                src.seek(entry[2])
                entry[2] = dst.tell()
                dst.write(src.read(entry[3] * entry[4] * entry[5]))
            dst.flush()
            os.fsync(dst.fileno())
        index["data_file"] = new_file
        self._write_index(index)
        data.unlink()  # readers that mapped it keep their copy until they close it
