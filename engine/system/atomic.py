"""Files users keep, written atomically: a uniquely named temporary file in the same folder, then a
rename. A killed write leaves the old file, and two writers never share a temporary file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable

import pandas as pd


def write_atomic(path: str | Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """Call write(file) on a temporary file, flush it to disk, then rename it to path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the permissions a plain open() gives (mkstemp: owner only)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text))


def write_csv(frame: pd.DataFrame, path: str | Path, **to_csv) -> None:
    write_atomic(path, lambda f: frame.to_csv(f, index=False, **to_csv))
