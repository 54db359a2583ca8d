"""Predict the test set (or score a labelled CSV) with one checkpoint, a run's folds, or any ensemble.

    python predict.py                                   # newest run under runs/ -> its output.csv
    python predict.py runs/resnext/20260101-120000 --kfold --tta
    python predict.py a/fold0/best.pt b/fold0/best.pt --tta-scales 0.9,1.1 --out ensemble.csv
    python predict.py RUN --val data/demo/test_labels.csv   # accuracy, top-5 and macro-F1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine.system.atomic import refuse_inputs, write_csv
from engine import runs
from engine.errors import UserError, run_command


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Predict with a checkpoint, a run's folds or an ensemble (mean softmax).",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("targets", nargs="*", metavar="RUN_OR_CKPT", help="run folders and/or .pt files (default: newest run)")
    p.add_argument("--kfold", action="store_true", help="use every fold's best.pt of each run folder")
    p.add_argument("--tta", action="store_true", help="add the horizontally flipped view")
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
    return p.parse_args(argv)


def check_labels(table: pd.DataFrame, classes: list[str], csv: str) -> None:
    """--val needs integer targets of the model's classes; a class_name column must agree with them."""
    if "target" not in table:
        raise UserError(f"--val {csv}: needs a target column (class_name,image_path,target)")
    targets = pd.to_numeric(table["target"], errors="coerce")
    bad = table.index[targets.isna() | (targets < 0) | (targets >= len(classes))]
    if len(bad):
        value = table.at[bad[0], "target"]
        value = value.item() if hasattr(value, "item") else value  # 6, not np.int64(6)
        raise UserError(f"--val {csv}: row {bad[0]} has target {value!r}; "
                        f"the model knows targets 0..{len(classes) - 1}")
    if "class_name" in table:
        named = [(i, n, int(t)) for i, n, t in zip(table.index, table["class_name"], targets)
                 if isinstance(n, str) and n != classes[int(t)]]
        if named:
            i, n, t = named[0]
            raise UserError(f"--val {csv}: row {i} says target {t} is '{n}' but the model's class {t} is "
                            f"'{classes[t]}' ({len(named)} such rows); was it labelled with another class list?")


def run(args: argparse.Namespace) -> None:
    from engine import inference
    from engine.evaluate.metrics import macro_f1, topk_accuracy
    from engine.data.tables import read_test_table
    if args.batch_size < 1 or (args.workers is not None and args.workers < 0):
        raise UserError(f"--batch-size must be >= 1 and --workers >= 0; got {args.batch_size} and {args.workers}")
    scales = inference.parse_scales(args.tta_scales)
    paths = inference.resolve_targets(args.targets, args.kfold, args.runs_dir)
    members = inference.load_ensemble(paths, inference.pick_device(args.device))
    recipe = members[0].recipe
    csv = args.val or args.test_csv or recipe.test_csv
    image_dir = args.test_dir or recipe.test_dir
    if csv is None or image_dir is None:
        raise UserError("the checkpoint's recipe names no test_csv/test_dir; pass --test-csv and --test-dir")
    table = read_test_table(image_dir, csv)
    if args.val:
        check_labels(table, members[0].classes, csv)
    inference.check_images_exist(table["path"].tolist(), Path(csv).name,
                                 f"image paths are relative to '{image_dir}'; set --test-dir")
    print(f"predicting {len(table)} images of {csv} with {len(members)} model(s)"
          f"{' x flip' if args.tta else ''}{' x scales ' + args.tta_scales if scales else ''}")
    out_path = Path(args.out) if args.out else None
    if out_path is not None:  # an output must never replace an input
        refuse_inputs(out_path, [csv, recipe.train_csv, recipe.test_csv, *paths], "--out")
        refuse_inputs(out_path.with_name(out_path.stem + "_probs.csv"), [csv, *paths], "--out")
    unreadable = [] if args.bad_images == "skip" else None
    probs = inference.predict_probs(members, table["path"].tolist(), args.batch_size, args.tta, scales,
                                    args.workers, not args.no_progress, unreadable)
    classes = members[0].classes
    top = probs.topk(min(5, probs.shape[1]), dim=1)
    pred = top.indices[:, 0].numpy()
    folder = runs.output_folder_of(paths[0])
    if args.val:
        targets = torch.tensor(pd.to_numeric(table["target"]).astype(int).to_numpy())
        print(f"{Path(csv).name}: acc {topk_accuracy(probs, targets, 1):.4f}  top5 {topk_accuracy(probs, targets, 5):.4f}"
              f"  macro-F1 {macro_f1(pred, targets.numpy(), len(classes)):.4f}  ({len(table)} images)")
        out = pd.DataFrame({"image_path": table["image_path"], "target": targets.numpy(),
                            "class_name": [classes[t] if 0 <= t < len(classes) else "?" for t in targets.tolist()],
                            "pred": pred, "pred_name": [classes[p] for p in pred],
                            "confidence": top.values[:, 0].numpy(),
                            "top5": [" ".join(map(str, r)) for r in top.indices.tolist()]})
        out_path = out_path or folder / f"val_{Path(csv).stem}.csv"
    else:
        out = pd.DataFrame({"ID": np.arange(len(table)), "image_path": table["image_path"], "target": pred})
        out_path = out_path or folder / runs.OUTPUT
    write_csv(out, out_path, float_format="%.6g")
    print(f"wrote {out_path}")
    if unreadable:
        listed = out_path.with_name(out_path.stem + "_unreadable.csv")
        write_csv(table.iloc[unreadable][["image_path"]].assign(row=unreadable), listed)
        print(f"warning: {len(unreadable)} unreadable image(s) kept with uniform probabilities (first: "
              f"{table['image_path'].iloc[unreadable[0]]}); listed in {listed}")
    if args.save_probs:
        probs_frame = pd.DataFrame(probs.numpy(), columns=classes)
        probs_frame.insert(0, "image_path", table["image_path"].values)
        probs_path = out_path.with_name(out_path.stem + "_probs.csv")
        write_csv(probs_frame, probs_path, float_format="%.6g")
        print(f"wrote {probs_path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
