"""Hyper-parameter sweeps of a recipe's `sweep` dict (W&B sweep format): Optuna offline, W&B online.

    python sweep.py recipes/resnext.py --count 30                  # offline (Optuna, SQLite in runs/sweeps/)
    python sweep.py recipes/resnext.py --count 30 --resume         # 30 more trials of the same sweep
    python sweep.py recipes/resnext.py --backend wandb --count 30  # W&B sweep server + agent
    python sweep.py recipes/resnext.py --resume --storage postgresql://me@db-host/sweeps   # more workers
    python sweep.py recipes/resnext.py --resume --storage journal:/shared/sweeps/resnext.log  # no database
"""
from __future__ import annotations

import argparse
import sys

from engine.errors import Stopped, UserError, exit_process, run_command
from engine.recipe import load_recipe_args


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Hyper-parameter sweep of a recipe's `sweep` dict (W&B sweep format).",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    p.add_argument("items", nargs="+", metavar="RECIPE | KEY=VALUE",
                   help="a recipe file with a `sweep` dict, and overrides of the base recipe such as epochs=5")
    p.add_argument("--count", type=int, help="trials to add (default: the grid size, run_cap, or 10)")
    p.add_argument("--backend", choices=("optuna", "wandb"),
                   help="default: wandb when W&B credentials are set, WANDB_MODE is online and the recipe's "
                        "wandb key is 'online'; optuna otherwise")
    p.add_argument("--storage", metavar="URL", help="study storage shared by several workers: postgresql://user@host/db, "
                                                    "or journal:/shared/path/sweep.log on a shared file system "
                                                    "(default: sqlite in runs/sweeps/<name>/study.db)")
    p.add_argument("--heartbeat", type=int, metavar="S", help="seconds between a worker's heartbeats (default 60); a "
                                                           "trial silent for 3x this long is failed and re-run")
    p.add_argument("--resume", action="store_true", help="add --count trials to an existing sweep (or join it as a worker)")
    p.add_argument("--nproc", type=int, default=1, help="run each trial under torchrun with N processes")
    p.add_argument("--name", help="sweep name (default: the recipe name); folder runs/sweeps/<name>/")
    p.add_argument("--progress", action="store_true", help="show each trial's progress bars")
    return p.parse_intermixed_args(argv)


def run(args: argparse.Namespace) -> None:
    if args.count is not None and args.count < 0:
        raise UserError(f"--count must be >= 0, got {args.count}")
    from engine.sweep.command import run_sweep  # late: --help and argument errors answer before torch loads
    recipe = load_recipe_args(args.items)
    try:
        run_sweep(recipe, count=args.count, backend=args.backend, storage=args.storage, resume=args.resume,
                  nproc=args.nproc, name=args.name, show_progress=args.progress, heartbeat_s=args.heartbeat)
    except KeyboardInterrupt as e:
        raise Stopped(f"sweep interrupted{f' ({e})' if str(e) else ''}; add trials later with --resume", 130) from e


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda: run(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    exit_process(main())
