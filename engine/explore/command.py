"""The body of `python -m engine.explore`: the data report of a recipe's data, or with --augment only the
augmentation preview, or with --drop only the training table without a run's label issues."""
from __future__ import annotations

import argparse

from engine.errors import UserError
from engine.explore.analysis import default_out_dir, explore
from engine.explore.augment_preview import write_augment_preview
from engine.explore.label_cleaning import write_without_issues
from engine.recipe import DEFAULT_RECIPE, load_recipe_args
from engine.system.outputs import OutputGuard


def run_explore(args: argparse.Namespace) -> None:
    """The report (or with --augment only the augmentation picture) for the recipe's data."""
    recipe = load_recipe_args(args.items, DEFAULT_RECIPE)
    if args.drop or args.relabel:
        if not (args.drop and args.write_clean):
            raise UserError("--drop needs --write-clean PATH (where the cleaned train.csv goes), and --relabel needs "
                            "--drop: python -m engine.explore RECIPE --write-clean clean.csv "
                            "--drop RUN/label_issues.csv")
        write_without_issues(recipe, args.drop, args.write_clean, args.relabel)
        return
    out = args.out or default_out_dir(recipe)
    if args.augment:
        folder = OutputGuard("explore --out", example="eda", recognise=lambda p: p.name == "augment.png").folder(
            out, ["augment.png"])
        print(f"wrote {write_augment_preview(recipe, folder / 'augment.png')}")
        return
    result = explore(recipe, out, args.classes, args.write_clean, args.workers, not args.no_progress)
    print(f"report: {result.report}")
