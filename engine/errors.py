"""The one exception type for bad input a user can fix; the CLIs print it as a single line."""
from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """Bad input (recipe, data, checkpoint, command line): the message says what and how to fix it."""

    def __init__(self, message: str = ""):
        if "Original Traceback" in message:  # re-raised from a DataLoader worker: keep the original line
            message = message.strip().splitlines()[-1].split("UserError: ", 1)[-1]
        super().__init__(message)


def run_command(action: Callable[[], object]) -> int:
    """A command line's exit code: 0 when `action()` returns, 2 with one `error: ...` line on a UserError."""
    try:
        action()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
