"""One writer per fold folder: an exclusive lock (flock) on a lock file, released by the kernel when the
process ends however it ends, so a crash never leaves a stale lock behind."""
from __future__ import annotations

import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from engine.errors import UserError


@contextmanager
def exclusive(lock_file: Path, what: str) -> Iterator[None]:
    """Hold lock_file for the block; if another process holds it, a one-line error naming that process."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    f = open(lock_file, "a+")
    try:
        _flock_soon(f)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise UserError(f"{what} is being trained by {holder} (lock {lock_file}); wait for it to finish, "
                        f"train another fold with --fold K, or pick a new --name") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield
    finally:
        f.close()  # closing releases the lock


def _flock_soon(f) -> None:
    """The exclusive lock, trying for a moment: a `holder` probe holds the file for microseconds."""
    for wait in (0.01, 0.05, 0.2, None):
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if wait is None:
                raise
            time.sleep(wait)


def holder(lock_file: Path) -> str | None:
    """Who holds lock_file now ("pid N on HOST"), or None when no process does (probed with a shared lock
    taken and dropped at once, so nothing waits on this process)."""
    lock_file = Path(lock_file)
    if not lock_file.is_file():
        return None
    with open(lock_file) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "another process"
    return None  # closing the file dropped the probe's lock


@contextmanager
def waiting(lock_file: Path) -> Iterator[None]:
    """Hold lock_file for the block, waiting for whoever holds it (a store being checked or built elsewhere)."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
