"""SIGTERM / SIGINT -> a flag the loop reads at the next optimizer update, so it can checkpoint and exit."""
from __future__ import annotations

import signal

from engine.errors import Stopped

_requested: list[int] = []


def _handler(signum, frame) -> None:
    if _requested:  # second signal: the user really means it
        raise KeyboardInterrupt
    _requested.append(signum)


def install() -> None:
    """Catch SIGTERM and SIGINT (main thread only)."""
    _requested.clear()
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


def uninstall() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def request_stop() -> None:
    """Ask the loop to stop at its next update as on SIGTERM (a failed checkpoint write does: it then raises)."""
    if not _requested:
        _requested.append(signal.SIGTERM)


def requested() -> bool:
    return bool(_requested)


def check(what: str) -> None:
    """Raise Preempted at once if a signal was caught: for the long steps before the first update (a feature-store
    build, the image cache), which would otherwise finish first (minutes; a cloud pre-emption allows 30-120 s)."""
    if _requested:
        raise Preempted(f"stopped by {signal.Signals(_requested[0]).name} while {what}; nothing of it is kept",
                        _requested[0])


def signal_number() -> int:
    return _requested[0] if _requested else signal.SIGTERM


class Preempted(Stopped):
    """Training stopped on a signal after writing last.pt; the log already said how to resume."""

    show = False

    def __init__(self, message: str, signum: int):
        super().__init__(message, 128 + signum)


class Diverged(Stopped):
    """Too many consecutive non-finite updates; the last good checkpoint is kept."""

    exit_code = 3

    def __str__(self) -> str:
        return f"{self.args[0]} (last good checkpoint kept)"
