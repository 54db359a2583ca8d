"""`python -m engine.report RUN_OR_CSV [--data-dir DIR]`: (re)draw a run's evaluation report."""
import sys

from engine.evaluate.report import main

if __name__ == "__main__":
    sys.exit(main())
