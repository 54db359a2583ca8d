"""torchrun, ending with the engine's exit codes: a SIGTERM / Ctrl-C to the job ends it with one line and 143 / 130
(after every process wrote last.pt), not torchrun's SignalException traceback and 1.

    python launch.py --nproc_per_node=4 train.py recipes/resnext.py     # same arguments as torchrun
"""
import os
import sys

from engine.system.torchrun_exits import launch

if __name__ == "__main__":
    code = launch(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # after a signal the rendezvous threads still run, and a normal exit aborts on them (exit -6)
