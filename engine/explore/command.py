"""The body of `python -m engine.explore`: the data report of a recipe's data, or with --augment only the
augmentation preview."""
from __future__ import annotations

import argparse

from engine.explore.analysis import default_out_dir, explore
from engine.explore.augment_preview import write_augment_preview
from engine.recipe import DEFAULT_RECIPE, load_recipe_args
from engine.system.outputs import OutputGuard


def run_explore(args: argparse.Namespace) -> None:
    """The report (or with --augment only the augmentation picture) for the recipe's data."""
    recipe = load_recipe_args(args.items, DEFAULT_RECIPE)
    out = args.out or default_out_dir(recipe)
    if args.augment:
        folder = OutputGuard("explore --out", example="eda", recognise=lambda p: p.name == "augment.png").folder(
            out, ["augment.png"])
        print(f"wrote {write_augment_preview(recipe, folder / 'augment.png')}")
        return
    result = explore(recipe, out, args.classes, args.write_clean, args.workers, not args.no_progress)
    print(f"report: {result.report}")
