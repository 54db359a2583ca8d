"""The predict.py command: checkpoints -> class probabilities of a test table -> output.csv (or a scored
--val CSV), and the probabilities themselves with --save-probs."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine import run_folder
from engine.data.tables.read import read_test_table
from engine.errors import UserError
from engine.evaluate.ensemble import checkpoint_weights, plan_ensemble, run_label, write_ensemble_report
from engine.evaluate.metrics import macro_f1, topk_accuracy
from engine.evaluate.predictions import predictions_frame
from engine.predict import inference
from engine.system.atomic import write_csv
from engine.system.outputs import OutputGuard, csv_header


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


def _predict_wrote(path: Path) -> bool:
    """A CSV predict.py wrote before the output ledger: by its header (and name, for the extra files)."""
    header = csv_header(path)
    if path.name.endswith(run_folder.PROBS_SUFFIX):
        return header.startswith("image_path,")
    if path.name.endswith(run_folder.UNREADABLE_SUFFIX):
        return header == "image_path,row"
    return header in ("ID,image_path,target", "image_path,target,class_name,pred,pred_name,confidence,top5")


def output_guard(inputs: list) -> OutputGuard:
    """predict.py's output rule: a new file or one predict.py wrote; never an input (the table, a checkpoint)."""
    return OutputGuard("predict.py --out", inputs, example="predictions.csv", recognise=_predict_wrote)


def run_predict(args: argparse.Namespace) -> None:
    """Everything predict.py does, from its parsed arguments."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be 0 (load in this process) or more, got {args.workers}")
    scales = inference.parse_scales(args.tta_scales)
    paths, ensemble, weights = inference.resolve_targets(args.targets, args.kfold, args.runs_dir), None, None
    if args.weights == "oof":
        ensemble = plan_ensemble(args.targets, args.kfold)
        counts = [len(inference.fold_checkpoints(r, args.kfold)) for r in ensemble.runs]
        weights = checkpoint_weights(ensemble.weights, counts)
        print("oof weights: " + ", ".join(f"{run_label(r)} {w:.2f}" for r, w in zip(ensemble.runs, ensemble.weights)))
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
    guard = output_guard([csv, recipe.train_csv, recipe.test_csv, *paths])
    if out_path is not None:  # checked before the long part: a refusal costs nothing
        guard.check(out_path)
        if args.save_probs:
            guard.check(run_folder.beside(out_path, run_folder.PROBS_SUFFIX))
    unreadable = [] if args.bad_images == "skip" else None
    probs = inference.predict_probs(members, table["path"].tolist(), args.batch_size, args.tta, scales,
                                    args.workers, not args.no_progress, use_store=not args.no_store, weights=weights,
                                    unreadable=unreadable)
    classes = members[0].classes
    pred = probs.argmax(1).numpy()
    folder = run_folder.output_folder_of(paths[0])
    if args.val:
        targets = torch.tensor(pd.to_numeric(table["target"]).astype(int).to_numpy())
        print(f"{Path(csv).name}: acc {topk_accuracy(probs, targets, 1):.4f}  top5 {topk_accuracy(probs, targets, 5):.4f}"
              f"  macro-F1 {macro_f1(pred, targets.numpy(), len(classes)):.4f}  ({len(table)} images)")
        out = predictions_frame(table["image_path"].values, targets.tolist(), probs, classes)
        out_path = out_path or run_folder.val_output(folder, csv)
    else:
        ids = table["ID"].to_numpy() if "ID" in table else np.arange(len(table))  # the test.csv's own IDs, kept
        out = pd.DataFrame({"ID": ids, "image_path": table["image_path"], "target": pred})
        out_path = out_path or folder / run_folder.OUTPUT
    write_csv(out, guard.check(out_path), float_format="%.6g")
    guard.wrote(out_path)
    print(f"wrote {out_path}")
    if unreadable:
        listed = guard.check(run_folder.beside(out_path, run_folder.UNREADABLE_SUFFIX))
        write_csv(table.iloc[unreadable][["image_path"]].assign(row=unreadable), listed)
        guard.wrote(listed)
        print(f"warning: {len(unreadable)} unreadable image(s) kept with uniform probabilities (first: "
              f"{table['image_path'].iloc[unreadable[0]]}); listed in {listed}")
    if args.save_probs:
        probs_frame = pd.DataFrame(probs.numpy(), columns=classes)
        probs_frame.insert(0, "image_path", table["image_path"].values)
        probs_path = guard.check(run_folder.beside(out_path, run_folder.PROBS_SUFFIX))
        write_csv(probs_frame, probs_path, float_format="%.6g")
        guard.wrote(probs_path)
        print(f"wrote {probs_path}")
    if ensemble is not None:
        written = write_ensemble_report(ensemble, out_path.parent)
        print(f"ensemble OOF acc {ensemble.report['oof_acc']:.4f} (best member "
              f"{max(m['oof_acc'] for m in ensemble.report['members']):.4f}); wrote {', '.join(map(str, written))}")
