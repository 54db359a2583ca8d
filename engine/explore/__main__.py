"""Explore a recipe's data before training: EDA plots, data audit and repair, one HTML report.

    python -m engine.explore [RECIPE] [KEY=VALUE ...] [--write-clean PATH] [--out DIR] [--classes A B ...]
    python -m engine.explore [RECIPE] --augment      # a grid of what the model sees after augmentation and mixing
    python -m engine.explore [RECIPE] --write-clean PATH --drop RUN/label_issues.csv [--relabel]
"""
from __future__ import annotations

import argparse
import sys

from engine.errors import UserError, exit_process, run_command
from engine.recipe import DEFAULT_RECIPE, load_recipe_args
from engine.system.outputs import OutputGuard


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m engine.explore",
                                description="EDA plots, data audit and repair of a recipe's data, as one HTML report.")
    p.add_argument("items", nargs="*", metavar="RECIPE | KEY=VALUE",
                   help=f"a recipe file (default {DEFAULT_RECIPE}) and overrides such as data_dir=data/train")
    p.add_argument("--out", metavar="DIR", help="output folder (default <output_dir>/explore/<recipe>/)")
    p.add_argument("--write-clean", metavar="PATH", help="also write a cleaned train.csv training can use")
    p.add_argument("--drop", metavar="LABEL_ISSUES_CSV",
                   help="with --write-clean: only write the training table without the rows a k-fold run's "
                        "label_issues.csv flags (no report, no image decoded)")
    p.add_argument("--relabel", action="store_true", help="with --drop: give the flagged rows their suggested class")
    p.add_argument("--classes", nargs="+", metavar="CLASS", help="classes for the sample grid (default: 8 at random)")
    p.add_argument("--augment", action="store_true",
                   help="only write augment.png: one batch through the training transforms and mixing")
    p.add_argument("--workers", type=int, help="decoding processes (default: one per CPU core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_intermixed_args(argv)  # flags may stand between KEY=VALUE overrides


def explore_command(args: argparse.Namespace) -> None:
    """The report (or with --augment only the augmentation picture, or with --drop only the cleaned table)."""
    if (args.drop or args.relabel) and not (args.drop and args.write_clean):
        raise UserError("--drop needs --write-clean PATH (where the cleaned train.csv goes), and --relabel needs "
                        "--drop: python -m engine.explore RECIPE --write-clean clean.csv --drop LABEL_ISSUES_CSV "
                        "(the label_issues.csv of a k-fold run)")
    from engine.explore import analysis, augment_preview, label_cleaning  # late: argument errors answer before torch
    recipe = load_recipe_args(args.items, DEFAULT_RECIPE)
    if args.drop:
        label_cleaning.write_without_issues(recipe, args.drop, args.write_clean, args.relabel)
        return
    out = args.out or analysis.default_out_dir(recipe)
    if args.augment:
        folder = OutputGuard("explore --out", example="eda", recognise=lambda p: p.name == "augment.png").folder(
            out, ["augment.png"])
        print(f"wrote {augment_preview.write_augment_preview(recipe, folder / 'augment.png')}")
        return
    result = analysis.explore(recipe, out, args.classes, args.write_clean, args.workers, not args.no_progress)
    print(f"report: {result.report}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: explore_command(args))


if __name__ == "__main__":
    exit_process(main())
