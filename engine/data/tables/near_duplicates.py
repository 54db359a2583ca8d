"""Near-duplicate images: 256-bit perceptual hashes (also of the mirrored image), close pairs and their groups.

Used by the folds (recipe key fold_groups = "near_duplicates": a group never straddles train and
validation) and by the explore report. Hashes are cached per file (path, size, mtime) in
<disk cache root>/near_duplicate_hashes.csv, so only new or changed files are decoded again.
"""
from __future__ import annotations

import os
import warnings
from multiprocessing import Pool
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from engine.data.pixels.images import load_image
from engine.data.stores.image_cache import disk_cache_root
from engine.system.atomic import write_csv
from engine.system.device import cpu_count

HASH_SIDE, HASH_FREQS = 32, 16  # pHash: DCT of a 32 x 32 thumbnail, its 16 x 16 lowest frequencies
_DCT = np.cos(np.pi / HASH_SIDE * (np.arange(HASH_SIDE)[:, None]) * (np.arange(HASH_SIDE)[None, :] + 0.5))
NEAR_DUPLICATE_BITS = 30  # of 255: resized, re-encoded copies land under ~28; unrelated sketches above ~80
DECODE_SIDE = 256  # hashes need no more pixels than this
CACHE_NAME = "near_duplicate_hashes.csv"
CACHE_COLUMNS = ["path", "file_bytes", "mtime_ns", "phash", "phash_flipped"]


def perceptual_hash(gray: np.ndarray) -> str:
    """256-bit pHash of a 2-D uint8 image as 64 hex digits: low DCT frequencies above their median.

    256 bits rather than the usual 64: sketches are mostly white paper, and at 64 bits two unrelated
    sketches often come within a few bits of each other.
    """
    thumb = np.asarray(Image.fromarray(gray).resize((HASH_SIDE, HASH_SIDE), Image.BOX), dtype=np.float64)
    low = (_DCT @ thumb @ _DCT.T)[:HASH_FREQS, :HASH_FREQS].ravel()
    low[0] = np.median(low[1:])  # the DC term only says how dark the image is: its bit is always 0
    return np.packbits(low > np.median(low[1:])).tobytes().hex()


def hash_words(hashes: Sequence[str]) -> np.ndarray:
    """Hex pHashes -> N x 4 uint64 array for fast distances."""
    raw = b"".join(bytes.fromhex(h) for h in hashes)
    return np.frombuffer(raw, dtype=np.uint64).reshape(len(hashes), -1)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise distance between hash-word rows (a: N x W, b: M x W -> N x M)."""
    return np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(axis=2, dtype=np.int32)


def _signs(hashes: Sequence[str]) -> np.ndarray:
    return np.unpackbits(hash_words(hashes).view(np.uint8), axis=1).astype(np.float32) * 2 - 1


def near_pairs(hashes: list[str], max_bits: int, others: list[str] | None = None) -> list[tuple[int, int, int]]:
    """Every pair (i < j) whose pHashes differ in at most max_bits bits, with the distance.

    `others` (same length): compare hashes[i] with others[j] instead, e.g. the mirrored images' hashes.
    """
    if len(hashes) < 2:
        return []
    bits = _signs(hashes)
    other_bits = bits if others is None else _signs(others)
    n_bits, pairs = bits.shape[1], []
    for start in range(0, len(bits), 1024):  # +-1 codes: a dot product is n_bits - 2 * distance (BLAS-fast)
        dot = bits[start:start + 1024] @ other_bits[start:].T
        i, j = np.nonzero(dot >= n_bits - 2 * max_bits)
        keep = j > i  # upper triangle only: each pair once, never an image with itself
        for a, b, d in zip(i[keep] + start, j[keep] + start, dot[i[keep], j[keep]]):
            pairs.append((int(a), int(b), int(round((n_bits - d) / 2))))
    return pairs


def duplicate_groups(hashes: list[str], max_bits: int, flipped: list[str] | None = None) -> list[list[int]]:
    """Images linked by chains of close pHashes, each group sorted (its first member is its anchor).

    With `flipped` (each image's mirrored hash) an image also links to a mirrored copy of another.
    """
    pairs = near_pairs(hashes, max_bits)
    if flipped is not None:  # mirroring both images changes nothing, so one direction is enough
        pairs += near_pairs(hashes, max_bits, flipped)
    if not pairs:
        return []
    a, b, _ = zip(*pairs)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(hashes), len(hashes)))
    _, label = connected_components(graph, directed=False)
    linked = np.unique(np.concatenate([a, b]))
    groups: dict[int, list[int]] = {}
    for i in linked:
        groups.setdefault(int(label[i]), []).append(int(i))
    return [sorted(g) for g in groups.values()]


def hash_file(path: str) -> tuple[str, str]:
    """(pHash, pHash of the mirrored image) of one file, decoded once at most ~DECODE_SIDE pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as im:
            if im.mode in ("RGB", "L", "CMYK", "YCbCr"):
                im.draft("L", (DECODE_SIDE, DECODE_SIDE))  # JPEG: decode at 1/2..1/8 of the size
                gray = np.asarray(im.convert("L"))
            else:  # alpha, palette, 16-bit: the training decoder puts these on white paper
                gray = np.asarray(Image.fromarray(load_image(path).permute(1, 2, 0).numpy()).convert("L"))
    return perceptual_hash(gray), perceptual_hash(np.ascontiguousarray(gray[:, ::-1]))


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _read_cache(cache: Path) -> dict[str, tuple]:
    try:
        old = pd.read_csv(cache, dtype={"path": str, "phash": str, "phash_flipped": str})
    except Exception:  # a missing or damaged cache is only a slower run
        return {}
    if list(old.columns) != CACHE_COLUMNS:
        return {}
    return {r[0]: r[1:] for r in old.itertuples(index=False)}


def image_hashes(paths: Sequence[str], cache: str | Path | None = None, workers: int | None = None,
                 progress: bool = True) -> tuple[list[str], list[str], int]:
    """(pHashes, mirrored pHashes, files decoded) for every path; cached files are not decoded again."""
    cache = Path(cache) if cache else disk_cache_root() / CACHE_NAME
    known = _read_cache(cache)
    stamps = {p: _stamp(p) for p in dict.fromkeys(map(str, paths))}
    todo = [p for p, s in stamps.items() if p not in known or tuple(known[p][:2]) != s]
    workers = cpu_count() if workers is None else workers
    bar = tqdm(total=len(todo), desc="hashing images for fold_groups", unit="img",
               disable=not progress or len(todo) < 500)
    with Pool(workers) if workers > 1 and len(todo) > 256 else _Serial() as pool:
        for path, (h, f) in zip(todo, pool.imap(hash_file, todo, chunksize=64)):
            known[path] = (*stamps[path], h, f)
            bar.update()
    bar.close()
    if todo:
        rows = [(p, *v) for p, v in known.items() if p in stamps or os.path.exists(p)]  # forget deleted files
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_csv(pd.DataFrame(rows, columns=CACHE_COLUMNS), cache)
        except OSError:  # a read-only cache folder costs only time
            pass
    return [known[str(p)][2] for p in paths], [known[str(p)][3] for p in paths], len(todo)


class _Serial:
    """A stand-in for a process pool when the work is small (no start-up cost)."""

    def __enter__(self) -> "_Serial":
        return self

    def __exit__(self, *exc) -> None:
        return None

    @staticmethod
    def imap(fn, items, chunksize: int = 1):
        return map(fn, items)


def group_ids(paths: Sequence[str], max_bits: int = NEAR_DUPLICATE_BITS, progress: bool = True,
              cache: str | Path | None = None) -> np.ndarray:
    """One group id per row: rows that are near duplicates (or mirrored near duplicates) share an id."""
    hashes, flipped, _ = image_hashes(paths, cache, progress=progress)
    ids = np.arange(len(paths))
    for group in duplicate_groups(hashes, max_bits, flipped):
        ids[group] = group[0]
    return ids
