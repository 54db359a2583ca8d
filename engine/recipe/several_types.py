"""The recipe keys that take more than one type of value, and how each value is checked and converted (a
ValueError says what fits; engine/recipe/keys.py turns it into the one-line error naming the key)."""
from __future__ import annotations

from typing import Any


def parse_background(value: Any) -> Any:
    """`background`: "auto", "white", "black" or an RGB triple of ints 0-255 (a list, as JSON gives it, too)."""
    if isinstance(value, str) and value in ("auto", "white", "black"):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 3 and all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value):
        return tuple(value)
    raise ValueError(f'must be "auto", "white", "black" or an RGB triple of ints 0-255 such as (0, 0, 0); '
                     f'got {value!r}')


def parse_teacher(value: Any) -> tuple[str, ...] | None:
    """`teacher`: None, one run folder, or a tuple (a list, as JSON gives it) of run folders."""
    if value is None:
        return None
    runs = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if not runs or not all(isinstance(r, str) and r for r in runs):
        raise ValueError(f'must be a run folder or a tuple of run folders, e.g. "runs/resnext/20261204-101500"; '
                         f'got {value!r}')
    return runs
