"""Progress bars: a tqdm bar on rank 0 at an interactive terminal, nothing in logs or on other ranks."""
from __future__ import annotations

import sys

from tqdm import tqdm


def progress(iterable, total: int, desc: str, enabled: bool):
    """A tqdm bar on rank 0 (refreshing at most twice a second so it costs nothing); the bare iterable elsewhere."""
    if not enabled or not sys.stderr.isatty():  # a bar in a log file is noise: the epoch line says it all
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5,
                file=sys.stderr)
