"""K-fold training: stratified folds, folds trained separately into one run folder, out-of-fold results."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import digits_recipe
from engine.errors import UserError
from engine.data.tables.folds import assign_folds


def test_folds_are_stratified_disjoint_and_cover_every_row_once():
    targets = np.repeat(np.arange(7), [50, 31, 12, 9, 64, 5, 23])
    fold = assign_folds(targets, 5, 0.2, seed=3)
    assert fold.shape == targets.shape and set(fold) == set(range(5))  # one fold per row: disjoint, covering
    for c in range(7):  # every class spread evenly: fold sizes within one of each other
        per_fold = np.bincount(fold[targets == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1, (c, per_fold)
    assert (assign_folds(targets, 5, 0.2, seed=3) == fold).all()  # seeded: every machine agrees
    assert (assign_folds(targets, 5, 0.2, seed=4) != fold).any()


@pytest.fixture(scope="module")
def split_run(digits_dir, tmp_path_factory):
    """A 2-fold run trained as two machines would: --fold 0, then --fold 1 into the same --name folder."""
    from engine.predict.inference import fold_checkpoints
    from engine.train.orchestrator import train
    out = tmp_path_factory.mktemp("folds")
    rows = pd.read_csv(digits_dir / "train.csv").groupby("target").head(30)  # 300 rows keep it quick
    rows.to_csv(out / "train.csv", index=False)
    recipe = digits_recipe(digits_dir, out, folds=2, epochs=1, batch_size=32, train_csv=str(out / "train.csv"))
    run_dir = train(recipe, fold=0, name="split", show_progress=False)
    after_first = {"oof": (run_dir / "oof.csv").exists()}
    with pytest.raises(UserError) as missing:
        fold_checkpoints(run_dir, kfold=True)
    after_first["error"] = str(missing.value)
    assert train(recipe, fold=1, name="split", show_progress=False) == run_dir
    return run_dir, after_first


def test_out_of_fold_results_appear_when_the_last_fold_finishes(split_run):
    run_dir, after_first = split_run
    assert not after_first["oof"]
    assert "fold1" in after_first["error"] and "fold0" not in after_first["error"]
    assert (run_dir / "oof.csv").is_file() and (run_dir / "oof_metrics.json").is_file()
    for name in ("report_confusion.png", "report_per_class.png", "report_curves.png", "report_mistakes.png",
                 "confused_pairs.csv"):
        assert (run_dir / name).stat().st_size > 0, name


def test_oof_predictions_cover_every_training_row_once(split_run):
    run_dir, _ = split_run
    oof = pd.read_csv(run_dir / "oof.csv")
    train_rows = pd.read_csv(json.loads((run_dir / "recipe.json").read_text())["train_csv"])
    assert len(oof) == len(train_rows)
    assert sorted(oof["image_path"]) == sorted(train_rows["image_path"])
    truth = dict(zip(train_rows["image_path"], train_rows["target"]))
    assert (oof["target"] == oof["image_path"].map(truth)).all()
    for k in (0, 1):  # each row comes from the fold that validated (never trained on) it
        val = pd.read_csv(run_dir / f"fold{k}" / "val_predictions.csv")
        part = oof[oof["fold"] == k]
        assert list(part["image_path"]) == list(val["image_path"]) and list(part["pred"]) == list(val["pred"])
    assert {"image_path", "target", "pred", "confidence", "top5"} <= set(oof.columns)


def test_oof_metrics_match_the_predictions(split_run):
    run_dir, _ = split_run
    oof = pd.read_csv(run_dir / "oof.csv")
    metrics = json.loads((run_dir / "oof_metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx((oof["pred"] == oof["target"]).mean())
    top5 = [str(t) in s.split() for t, s in zip(oof["target"], oof["top5"])]
    assert metrics["top5"] == pytest.approx(np.mean(top5))
    per_class = metrics["per_class_accuracy"]
    assert len(per_class) == 10
    six = oof[oof["class_name"] == "six"]
    assert per_class["six"] == pytest.approx((six["pred"] == six["target"]).mean())
    assert 0 <= metrics["macro_f1"] <= 1 and set(metrics["folds"]) == {"0", "1"}


def test_kfold_prediction_averages_both_folds(split_run, tmp_path):
    import torch

    from engine.predict.inference import fold_checkpoints, load_ensemble, predict_probs
    run_dir, _ = split_run
    paths = fold_checkpoints(run_dir, kfold=True)
    assert [p.parent.name for p in paths] == ["fold0", "fold1"]
    test_dir = json.loads((run_dir / "recipe.json").read_text())["test_dir"]
    images = [f"{test_dir}/{name}" for name in ("00000.png", "00001.png", "00002.png")]
    members = load_ensemble(paths, torch.device("cpu"))
    both = predict_probs(members, images, num_workers=0, show_progress=False)
    alone = [predict_probs([m], images, num_workers=0, show_progress=False) for m in members]
    torch.testing.assert_close(both, (alone[0] + alone[1]) / 2)


def test_report_counts_the_most_confused_pairs(split_run, capsys):
    from engine.report import main
    run_dir, _ = split_run
    oof = pd.read_csv(run_dir / "oof.csv")
    wrong = oof[oof["pred"] != oof["target"]]
    counts = wrong.groupby(["class_name", "pred_name"]).size()
    pairs = pd.read_csv(run_dir / "confused_pairs.csv")
    assert len(pairs) == min(20, len(counts)) and pairs["count"].iloc[0] == counts.max()
    for r in pairs.itertuples():
        assert r.count == counts[(r.true, r.predicted)]
    fold_csv = run_dir / "fold1" / "val_predictions.csv"  # any predictions CSV: the report goes next to it
    assert main([str(fold_csv)]) == 0 and (fold_csv.parent / "report_per_class.png").is_file()
    assert main([str(run_dir / "nothing.csv")]) == 2 and "not found" in capsys.readouterr().err


def test_mistakes_gallery_shows_each_image_in_order_and_survives_a_missing_one(tmp_path):
    from PIL import Image
    from engine.evaluate.report_figures import CELL, mistake_montage
    colours = [(200, 30, 30), (30, 160, 30), (30, 30, 200)]
    paths = []
    for i, (colour, size) in enumerate(zip(colours, [(40, 20), (10, 30), (64, 64)])):  # wide, tall, square
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", size, colour).save(paths[-1])
    paths.insert(1, tmp_path / "gone.png")
    montage, cells = mistake_montage(paths, cols=3)
    assert [found for _, _, found in cells] == [True, False, True, True]
    assert montage.shape == (cells[3][1] + CELL, 3 * CELL, 3)  # the fourth image opens a second row
    centre = [tuple(montage[y + CELL // 2, x + CELL // 2]) for x, y, _ in cells]
    assert centre == [colours[0], (255, 255, 255), colours[1], colours[2]]  # reading order; the missing cell blank
    x, y, _ = cells[0]  # the 2:1 image fills the width and half the height of its square, aspect kept
    column = montage[y:y + CELL, x + CELL // 2]
    assert abs(int((column == colours[0]).all(1).sum()) - (CELL - 8) // 2) <= 2
