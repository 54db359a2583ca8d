"""`python -m engine.runs [RUNS_DIR] [--sort COLUMN] [--html FILE]`: every run as one table;
`python -m engine.runs diff RUN_A RUN_B`: the recipe keys two runs differ in."""
import sys

from engine.errors import exit_process
from engine.run_table.command import main

if __name__ == "__main__":
    exit_process(main(sys.argv[1:]))
