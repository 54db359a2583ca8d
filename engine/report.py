"""`python -m engine.report RUN_OR_CSV [--data-dir DIR]`: (re)draw a run's evaluation report."""
from engine.errors import exit_process
from engine.evaluate.report import main

if __name__ == "__main__":
    exit_process(main())
