"""Train a timm image classifier from a recipe.

    python train.py [RECIPE] [KEY=VALUE ...] [--fold K] [--resume RUN_OR_CKPT] [--name NAME] [--dry-run]
    python train.py [RECIPE] [KEY=VALUE ...] --find-lr [--lr-steps N]     # LR range test: plot + suggested lr
    torchrun --nproc_per_node=4 train.py recipes/resnext.py
"""
from __future__ import annotations

import argparse
import sys

from torch.distributed.elastic.multiprocessing.errors import record

from engine.errors import UserError, exit_process, run_command
from engine.recipe import DEFAULT_RECIPE, describe


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train a timm image classifier from a flat Python recipe.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="recipe keys (set in the recipe file or as KEY=VALUE):\n" + describe())
    p.add_argument("items", nargs="*", metavar="RECIPE | KEY=VALUE",
                   help=f"a recipe file (default {DEFAULT_RECIPE}) and overrides such as lr=3e-4")
    p.add_argument("--fold", type=int, help="train only this fold (folds can run on different machines)")
    p.add_argument("--resume", metavar="RUN_OR_CKPT", help="continue a run folder or last.pt exactly where it stopped")
    p.add_argument("--name", help="suffix of the run folder; an existing run of that name is added to")
    p.add_argument("--dry-run", action="store_true", help="show recipe, data audit, model size, steps; train nothing")
    p.add_argument("--find-lr", action="store_true",
                   help="LR range test: lr grows exponentially until the loss diverges; writes runs/<recipe>/lr_find.png, "
                        "prints a suggested lr=, trains no run")
    p.add_argument("--lr-steps", type=int, default=100, help="--find-lr: at most this many updates (default 100)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs and CI)")
    return p.parse_intermixed_args(argv)  # flags may stand between KEY=VALUE overrides


def run_train(args: argparse.Namespace) -> None:
    """What `python train.py ARGS` does once its arguments are parsed: the LR range test or the run orchestrator."""
    if args.resume and args.items:
        raise UserError("--resume continues the saved recipe exactly; drop the recipe and KEY=VALUE arguments")
    if args.find_lr and (args.resume or args.fold is not None or args.dry_run or args.name):
        raise UserError("--find-lr trains no run: drop --resume, --fold, --name and --dry-run")
    from engine.recipe import load_recipe_args  # late: --help and argument errors answer before torch and timm load
    from engine.train import lr_find
    from engine.train.orchestrator import train
    recipe = None if args.resume else load_recipe_args(args.items, DEFAULT_RECIPE)
    if args.find_lr:
        lr_find.find_lr(recipe, args.lr_steps, show_progress=not args.no_progress)
        return
    train(recipe, fold=args.fold, name=args.name, resume=args.resume, dry_run=args.dry_run,
          show_progress=not args.no_progress)


@record  # under torchrun, the failing rank's traceback is the one reported
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: run_train(args))


if __name__ == "__main__":
    exit_process(main())
