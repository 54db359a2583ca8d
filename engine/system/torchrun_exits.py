"""torchrun with the engine's exit codes (`python launch.py ...` takes torchrun's arguments).

torchrun itself turns a SIGTERM into a SignalException traceback and exit 1, and reports workers that
checkpointed and exited 128 + signal as a ChildFailedError traceback. Here both end with one line and
128 + signal, as a single-process run does; any other failure is torchrun's own report.
"""
from __future__ import annotations

import signal
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as torchrun


def stopped_code(exit_codes: list[int]) -> int | None:
    """128 + signal when every failed worker stopped on that signal after writing last.pt, else None."""
    codes = set(exit_codes)
    if len(codes) != 1:
        return None
    code = codes.pop()
    return code if 128 < code < 128 + signal.NSIG else None


def launch(argv: list[str]) -> int:
    """Run torchrun with `argv`; the exit code of the job."""
    try:
        torchrun(argv)
    except SignalException as e:
        print(f"launch: stopped by {e.sigval.name}; workers that had begun training wrote last.pt and their "
              f"train.log says how to resume (a run stopped before that has nothing to resume: start it again)",
              file=sys.stderr)
        return 128 + int(e.sigval)
    except ChildFailedError as e:
        code = stopped_code([f.exitcode for f in e.failures.values()])
        if code is None:
            raise
        print(f"launch: the workers stopped on signal {code - 128} after writing last.pt", file=sys.stderr)
        return code
    return 0
