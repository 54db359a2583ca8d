"""The body of `python train.py`: check the arguments, then the LR range test (--find-lr) or the run orchestrator
(a run, a --resume or a --dry-run)."""
from __future__ import annotations

import argparse

from engine.errors import UserError
from engine.recipe import DEFAULT_RECIPE, load_recipe_args
from engine.train import lr_find
from engine.train.orchestrator import train


def run_train(args: argparse.Namespace) -> None:
    """What `python train.py ARGS` does once its arguments are parsed."""
    if args.resume and args.items:
        raise UserError("--resume continues the saved recipe exactly; drop the recipe and KEY=VALUE arguments")
    if args.find_lr and (args.resume or args.fold is not None or args.dry_run or args.name):
        raise UserError("--find-lr trains no run: drop --resume, --fold, --name and --dry-run")
    recipe = None if args.resume else load_recipe_args(args.items, DEFAULT_RECIPE)
    if args.find_lr:
        lr_find.find_lr(recipe, args.lr_steps, show_progress=not args.no_progress)
        return
    train(recipe, fold=args.fold, name=args.name, resume=args.resume, dry_run=args.dry_run,
          show_progress=not args.no_progress)
