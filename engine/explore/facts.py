"""Per-image facts for exploring a data set: size, format, colour, file size, hashes, ink density.

Facts are computed in parallel worker processes and cached in a CSV keyed by (path, file size,
mtime), so a second look at the same files decodes nothing.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from multiprocessing import Pool
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from engine.data.pixels.images import load_image
from engine.data.tables.near_duplicates import perceptual_hash
from engine.system.atomic import write_csv
from engine.system.device import cpu_count

FACT_COLUMNS = ["path", "file_bytes", "mtime_ns", "error", "format", "mode", "width", "height",
                "is_colour", "ink", "sha1", "phash"]
ANALYSIS_SIDE = 256  # facts are computed on a copy at most this big: ink and hashes need no more
INK_CONTRAST = 48  # a pixel is ink when it differs from the background by more than this (0..255)
def decode_for_facts(path: str) -> tuple[str, str, int, int, np.ndarray]:
    """(format, mode, width, height, pixels at most ~ANALYSIS_SIDE): the one decode per file.

    Pixels are H x W uint8 for grayscale files, H x W x 3 otherwise.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as im:
            fmt, mode, (width, height) = im.format or "?", im.mode, im.size
            if mode in ("RGB", "L", "CMYK", "YCbCr"):
                im.draft("L" if mode == "L" else "RGB", (ANALYSIS_SIDE, ANALYSIS_SIDE))  # JPEG: decode at 1/2..1/8
                image = im.convert("L" if mode == "L" else "RGB")
            else:  # alpha, palette, 16-bit: the training decoder knows how to put these on white paper
                image = Image.fromarray(load_image(path).permute(1, 2, 0).numpy())
    factor = max(1, max(image.size) // ANALYSIS_SIDE)
    return fmt, mode, width, height, np.asarray(image.reduce(factor) if factor > 1 else image)


def colour_share(rgb: np.ndarray) -> float:
    """Share of pixels whose channels differ by more than JPEG chroma noise does."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    return float((spread > 24).mean())


def ink_share(gray: np.ndarray) -> float:
    """Share of pixels that differ clearly from the background (its most common grey level)."""
    background = int(np.bincount(gray.ravel(), minlength=256).argmax())
    return float((np.abs(gray.astype(np.int16) - background) > INK_CONTRAST).mean())


def facts_of_file(path: str) -> dict:
    """All facts of one file; a file that cannot be read gets its error and no pixel facts."""
    row = dict.fromkeys(FACT_COLUMNS)
    row.update(path=path, error="")
    try:
        stat = os.stat(path)
        row.update(file_bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)
        with open(path, "rb") as f:
            row["sha1"] = hashlib.sha1(f.read()).hexdigest()
        fmt, mode, width, height, pixels = decode_for_facts(path)
    except FileNotFoundError:
        row["error"] = "missing"
        return row
    except Exception as e:  # any decoder failure is a finding, not a crash
        row["error"] = f"unreadable ({type(e).__name__})"
        return row
    gray = pixels if pixels.ndim == 2 else np.asarray(Image.fromarray(pixels).convert("L"))
    row.update(format=fmt, mode=mode, width=width, height=height,
               is_colour=pixels.ndim == 3 and colour_share(pixels) > 0.005,
               ink=ink_share(gray), phash=perceptual_hash(gray))
    return row


def _read_cache(cache: Path | None) -> dict[str, dict]:
    if cache is None or not cache.is_file():
        return {}
    try:
        old = pd.read_csv(cache, dtype={"path": str, "error": str, "format": str, "mode": str, "sha1": str,
                                        "phash": str, "file_bytes": "Int64", "mtime_ns": "Int64"})
    except Exception:  # a damaged cache is only a slower run
        return {}
    if list(old.columns) != FACT_COLUMNS:
        return {}
    old["error"] = old["error"].fillna("")
    return {r["path"]: r for r in old.to_dict("records")}


def _still_valid(row: dict | None, path: str) -> bool:
    if row is None:
        return False
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return row["file_bytes"] == stat.st_size and row["mtime_ns"] == stat.st_mtime_ns


def scan_images(paths: Sequence[str], cache: str | Path | None = None, workers: int | None = None,
                progress: bool = True, compute: Callable[[str], dict] | None = None) -> tuple[pd.DataFrame, int]:
    """Facts for every distinct path (cached ones reused); returns (facts indexed by path, files decoded)."""
    compute = compute or facts_of_file
    cache = Path(cache) if cache else None
    known = _read_cache(cache)
    unique = list(dict.fromkeys(map(str, paths)))
    todo = [p for p in unique if not _still_valid(known.get(p), p)]
    if workers is None:
        workers = cpu_count()
    fresh: list[dict] = []
    bar = tqdm(total=len(todo), desc="scanning images", unit="img", disable=not progress or not todo)
    if workers > 1 and len(todo) > 64:
        with Pool(workers) as pool:
            for row in pool.imap(compute, todo, chunksize=32):
                fresh.append(row)
                bar.update()
    else:
        for path in todo:
            fresh.append(compute(path))
            bar.update()
    bar.close()
    known.update({r["path"]: r for r in fresh})
    facts = pd.DataFrame([known[p] for p in unique], columns=FACT_COLUMNS)
    if cache is not None and fresh:
        kept = [r for r in known.values() if r["error"] != "missing"]  # a missing file has no key to check
        everything = pd.DataFrame(kept, columns=FACT_COLUMNS)
        write_csv(everything, cache)
    return facts.set_index("path", drop=False), len(todo)
