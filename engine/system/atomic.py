"""Files users keep, written atomically: a uniquely named temporary file in the same folder, then a
rename. A killed write leaves the old file, and two writers never share a temporary file.

Temporary files are named `.<name>.<host>.<pid>.<random>.tmp`, so the next write into a folder can
remove those of writers on this host that died (kill -9) without touching a live writer's file.
"""
from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterable

import pandas as pd

from engine.errors import Stopped, UserError


class DiskFull(Stopped):
    """A write ran out of space (or quota); the file it replaces is intact."""

    exit_code = 75  # EX_TEMPFAIL: nothing is wrong with the input, try again once there is room


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "host"


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 2**10:.0f} kB"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove `.<name>.<host>.<pid>.*.tmp` left in folder by dead writers on this host; returns what went."""
    pattern = re.compile(r"\..+\." + re.escape(_host()) + r"\.(\d+)\.[^.]+\.tmp$")
    removed = []
    for p in Path(folder).glob(".*.tmp"):
        match = pattern.match(p.name)
        if match and int(match.group(1)) != os.getpid() and not pid_alive(int(match.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def out_of_space(e: BaseException | None) -> bool:
    """Whether an error is, or was caused by, a full disk or quota (torch.save wraps the OSError in a
    RuntimeError)."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return False


def write_atomic(path: str | Path, write: Callable[[IO], None], binary: bool = False,
                 size_hint: int | None = None) -> None:
    """Call write(file) on a temporary file, flush it to disk, then rename it to path.

    A full disk raises DiskFull (one line: where, about how much was needed) and leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host()}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the permissions a plain open() gives (mkstemp: owner only)
        os.replace(tmp, path)
    except Exception as e:
        Path(tmp).unlink(missing_ok=True)
        if not out_of_space(e):
            raise
        need = f"about {_size(size_hint)} needed, " if size_hint else ""
        free = os.statvfs(path.parent)
        raise DiskFull(f"disk full writing {path} ({need}{_size(free.f_bavail * free.f_frsize)} free "
                       f"there); the previous {path.name} is intact") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text))


def write_csv(frame: pd.DataFrame, path: str | Path, **to_csv) -> None:
    write_atomic(path, lambda f: frame.to_csv(f, index=False, **to_csv))


def refuse_inputs(path: str | Path, inputs: Iterable[str | Path | None], option: str) -> None:
    """A one-line error if `path` is one of the command's input files (an output must never replace an input)."""
    target = Path(path).resolve()
    for source in inputs:
        if source and Path(source).resolve() == target:
            suggestion = target.with_name(target.stem + "_out" + target.suffix)
            raise UserError(f"{option} {path} is an input of this command ({source}); writing there would replace "
                            f"it: pick another file, e.g. {suggestion}")
