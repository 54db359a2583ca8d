"""SIGTERM / SIGINT -> a flag the loop reads at the next optimizer update, so it can checkpoint and exit."""
from __future__ import annotations

import signal

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


def requested() -> bool:
    return bool(_requested)


def signal_number() -> int:
    return _requested[0] if _requested else signal.SIGTERM


class Preempted(Exception):
    """Training stopped on a signal after writing last.pt; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class Diverged(Exception):
    """Too many consecutive non-finite updates; the last good checkpoint is kept."""
