"""Predict the test set (or score a labelled CSV) with one checkpoint, a run's folds, or any ensemble.

    python predict.py                                   # newest run under runs/ -> its output.csv
    python predict.py runs/resnext/20260101-120000 --kfold --tta
    python predict.py a/fold0/best.pt b/fold0/best.pt --tta-scales 0.9,1.1 --out ensemble.csv
    python predict.py RUN --val data/demo/test_labels.csv   # accuracy, top-5 and macro-F1
    python predict.py RUN_A RUN_B RUN_C --kfold --weights oof   # runs weighted on their out-of-fold predictions
"""
from __future__ import annotations

import argparse
import sys

from engine.errors import exit_process, run_command


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Predict with a checkpoint, a run's folds or an ensemble (mean softmax).",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("targets", nargs="*", metavar="RUN_OR_CKPT", help="run folders and/or .pt files (default: newest run)")
    p.add_argument("--kfold", action="store_true", help="use every fold's best.pt of each run folder")
    p.add_argument("--weights", choices=("equal", "oof"), default="equal",
                   help="equal: mean of every checkpoint; oof: per-run weights fit on the runs' out-of-fold "
                        "probabilities (writes ensemble.json and a per-class table and plot)")
    p.add_argument("--tta", action="store_true", help="add the flipped views the model trained with (recipe flip: h 2 views, hv 4)")
    p.add_argument("--tta-scales", metavar="S,S", help="extra views at these scales of the image size, e.g. 0.9,1.1")
    p.add_argument("--out", help="output CSV (default: output.csv in the run folder)")
    p.add_argument("--save-probs", action="store_true", help="also write the class probabilities (<out>_probs.csv)")
    p.add_argument("--val", metavar="CSV", help="score a labelled CSV (class_name,image_path,target) instead")
    p.add_argument("--test-csv", help="CSV with an image_path column (default: the checkpoint's recipe test_csv)")
    p.add_argument("--test-dir", help="folder the image paths are relative to (default: the recipe's test_dir)")
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass (default 128)")
    p.add_argument("--workers", type=int, help="data loader processes (default: from the CPU count)")
    p.add_argument("--bad-images", choices=("error", "skip"), default="error",
                   help="an unreadable image: stop naming it (default), or skip: keep its row with uniform "
                        "probabilities and list it in <out>_unreadable.csv")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--runs-dir", default="runs", help="where to look for the newest run (default runs/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-store", action="store_true",
                   help="run the backbone even for checkpoints trained from a feature store (feature_views > 0)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from engine.predict.command import run_predict  # late: --help and argument errors answer before torch loads
    return run_command(lambda: run_predict(args))


if __name__ == "__main__":
    exit_process(main())
