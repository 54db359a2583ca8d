"""The competition endgame: leak-free folds, OOF-weighted ensembles, pseudo-labels and full-data refits."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

import cam
import predict
from conftest import digits_recipe
from engine import run_folder
from engine.data.tables.near_duplicates import group_ids
from engine.data.tables.folds import assign_folds
from engine.errors import UserError
from engine.evaluate.ensemble import caruana_weights, plan_ensemble
from engine.recipe import save_json
from engine.system import distributed
from engine.train.orchestrator import train
from engine.train.training_data import load_data

FAST = ["--workers", "0", "--no-progress"]


def few_test_images(digits_dir, folder) -> list[str]:
    """predict.py arguments for the first 16 test images (prediction speed is not under test here)."""
    pd.read_csv(digits_dir / "test.csv").head(16).to_csv(folder / "few.csv", index=False)
    return ["--test-csv", str(folder / "few.csv"), "--test-dir", str(digits_dir / "test")]


def sketch(seed: int, size: int = 96) -> Image.Image:
    """A random pen drawing on white paper: a few thick strokes, asymmetric enough that its mirror differs."""
    rng = np.random.default_rng(seed)
    im = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(im)
    for _ in range(4):
        draw.line([tuple(rng.integers(5, size - 5, 2)) for _ in range(3)], fill=0, width=5)
    return im


# ---- leak-free folds -------------------------------------------------------------------------------

def test_group_folds_never_split_a_group_and_stay_stratified():
    rng = np.random.default_rng(0)
    targets = np.repeat(np.arange(6), 40)
    groups = np.arange(len(targets))
    for start in rng.choice(len(targets) - 3, 40, replace=False):  # plant groups of 2-3 rows inside one class
        if targets[start] == targets[start + 2]:
            groups[start:start + 3] = groups[start]
    for folds, val_fraction in ((5, 0.2), (1, 0.2)):
        fold = assign_folds(targets, folds, val_fraction, seed=1, groups=groups)
        for g in np.unique(groups):
            assert len(set(fold[groups == g])) == 1, (folds, g)  # a group never straddles train and validation
        if folds == 5:
            for c in range(6):  # still stratified: every class spread nearly evenly over the folds
                per_fold = np.bincount(fold[targets == c], minlength=5)
                assert per_fold.max() - per_fold.min() <= 3, (c, per_fold)
        else:
            assert 0.15 <= (fold == 0).mean() <= 0.25 and set(np.unique(targets[fold == 0])) == set(range(6))
    no_groups = assign_folds(targets, 5, 0.2, seed=1)
    assert (assign_folds(targets, 5, 0.2, seed=1, groups=np.arange(len(targets))) == no_groups).all()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Class folders of random sketches; image 0 of each class also has a mirrored, resized JPEG copy."""
    root = tmp_path_factory.mktemp("planted") / "train"
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(10):
            sketch(100 * c + i).save(root / f"c{c}" / f"{i}.png")
        mirrored = sketch(100 * c).transpose(Image.FLIP_LEFT_RIGHT).resize((80, 80))
        mirrored.convert("RGB").save(root / f"c{c}" / "copy.jpg", quality=90)
    return root


def test_a_mirrored_copy_is_grouped_and_kept_in_its_originals_fold(planted, tmp_path):
    paths = [str(p) for p in sorted(planted.glob("*/*"))]
    ids = group_ids(paths, progress=False, cache=tmp_path / "hashes.csv")
    by_name = dict(zip((p.split("train/")[1] for p in paths), ids))
    for c in range(3):
        assert by_name[f"c{c}/copy.jpg"] == by_name[f"c{c}/0.png"]
    assert len(set(ids)) == len(paths) - 3  # nothing else is grouped
    recipe = digits_recipe(planted, tmp_path, data_dir=str(planted), train_csv=None, folds=3)
    lines = []
    table = load_data(recipe, distributed.setup(), lines.append)[0]
    assert any(line.startswith("fold groups: 3 groups of near duplicates (6 rows)") for line in lines), lines
    fold = dict(zip(table["image_path"], table["fold"]))
    assert all(fold[f"c{c}/copy.jpg"] == fold[f"c{c}/0.png"] for c in range(3))


# ---- ensembles weighted on out-of-fold probabilities --------------------------------------------------

def noisy_probs(targets: np.ndarray, classes: int, correct: float, rng) -> np.ndarray:
    """Probabilities whose argmax is right on a `correct` share of the rows."""
    probs = rng.dirichlet(np.ones(classes), len(targets)).astype(np.float32)
    right = rng.random(len(targets)) < correct
    pred = np.where(right, targets, (targets + rng.integers(1, classes, len(targets))) % classes)
    probs[np.arange(len(targets)), pred] += 1.0
    return probs / probs.sum(1, keepdims=True)


def test_weights_favour_the_strictly_better_member_and_never_lose_to_it():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        targets = rng.integers(0, 8, 800)
        members = [noisy_probs(targets, 8, share, rng) for share in (0.6, 0.9, 0.55)]
        weights = caruana_weights(members, targets)
        assert weights.argmax() == 1 and abs(weights.sum() - 1) < 1e-9 and (weights >= 0).all()
        mixed = sum(w * p for w, p in zip(weights, members))
        best = max((p.argmax(1) == targets).mean() for p in members)
        assert (mixed.argmax(1) == targets).mean() >= best


def fake_run(folder, targets, probs, **recipe_changes):
    """A run folder holding only what --weights oof reads: recipe.json, oof.csv and oof_probs.npy."""
    from engine.evaluate.predictions import write_probs
    from engine.recipe import load_recipe
    folder.mkdir(parents=True)
    save_json(load_recipe(None, {"folds": 5, **recipe_changes}), folder / run_folder.RECIPE)
    pd.DataFrame({"image_path": [f"{i}.png" for i in range(len(targets))], "target": targets,
                  "class_name": [f"k{t}" for t in targets], "pred": probs.argmax(1), "fold": np.arange(len(targets)) % 5}
                 ).to_csv(folder / run_folder.OOF, index=False)
    write_probs(folder / run_folder.OOF_PROBS, probs)
    return folder


def test_runs_with_other_folds_or_no_oof_probabilities_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 4, 100)
    a = fake_run(tmp_path / "r" / "a", targets, noisy_probs(targets, 4, 0.8, rng))
    b = fake_run(tmp_path / "r" / "b", targets, noisy_probs(targets, 4, 0.7, rng), seed=7)
    c = fake_run(tmp_path / "r" / "c", targets, noisy_probs(targets, 4, 0.7, rng), fold_groups="none")
    with pytest.raises(UserError, match="seed = 7 vs 42") as e:
        plan_ensemble([a, b])
    assert str(b) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="fold_groups"):
        plan_ensemble([a, c])
    (c / run_folder.OOF_PROBS).unlink()
    with pytest.raises(UserError, match="--weights equal"):
        plan_ensemble([c])


@pytest.fixture(scope="module")
def two_runs(digits_dir, tmp_path_factory):
    """Two 2-fold runs of different models on 120 digits (the same folds)."""
    out = tmp_path_factory.mktemp("ens")
    pd.read_csv(digits_dir / "train.csv").groupby("target").head(12).to_csv(out / "train.csv", index=False)
    common = dict(folds=2, epochs=1, batch_size=30, train_csv=str(out / "train.csv"))
    with pytest.MonkeyPatch.context() as patch:  # the evaluation report is tested elsewhere and slow to draw
        patch.setattr("engine.evaluate.report_figures.make_report", lambda run_dir: [])
        return [train(digits_recipe(digits_dir, out, model=m, name=m, **common), show_progress=False)
                for m in ("test_resnet", "test_efficientnet")]


def test_oof_probabilities_follow_oof_csv_row_for_row(two_runs):
    for run_dir in two_runs:
        oof, probs = pd.read_csv(run_dir / run_folder.OOF), np.load(run_dir / run_folder.OOF_PROBS)
        assert probs.shape == (len(oof), 10)
        assert (probs.argmax(1) == oof["pred"].to_numpy()).mean() > 0.97  # float16 may swap near-ties


def test_predict_weights_oof_writes_the_ensemble_report(two_runs, digits_dir, tmp_path):
    out = tmp_path / "ens.csv"
    assert predict.main([*map(str, two_runs), "--kfold", "--weights", "oof", "--out", str(out)] + FAST
                        + few_test_images(digits_dir, tmp_path)) == 0
    assert len(pd.read_csv(out)) == 16
    report = json.loads((tmp_path / run_folder.ENSEMBLE).read_text())
    assert [m["run"] for m in report["members"]] == [str(r) for r in two_runs]
    assert abs(sum(m["weight"] for m in report["members"]) - 1) < 1e-3
    assert report["oof_acc"] >= max(m["oof_acc"] for m in report["members"])
    assert {"oof_f1", "soft_vote_oof_acc", "hard_vote_oof_acc"} <= set(report)
    table = pd.read_csv(tmp_path / run_folder.ENSEMBLE_PER_CLASS)
    assert table["member_spread"].is_monotonic_decreasing and "ensemble" in table
    assert (tmp_path / run_folder.ENSEMBLE_PER_CLASS_PLOT).stat().st_size > 0


# ---- pseudo-labels ----------------------------------------------------------------------------------

def test_only_confident_pseudo_labels_join_and_only_as_training_rows(digits_dir, tmp_path, capsys):
    test = pd.read_csv(digits_dir / "test.csv").head(40)
    probs = np.full((40, 10), 0.05)
    probs[np.arange(40), np.arange(40) % 10] = 0.55
    probs[:12, :] = 0.0
    probs[np.arange(12), np.arange(12) % 10] = 1.0  # 12 rows at probability 1, 28 at 0.55
    classes = [f"{n}" for n in pd.read_csv(digits_dir / "train.csv").drop_duplicates("target").sort_values("target")["class_name"]]
    frame = pd.DataFrame(probs, columns=classes)
    frame.insert(0, "image_path", test["image_path"])
    frame.to_csv(tmp_path / "p.csv", index=False)
    recipe = digits_recipe(digits_dir, tmp_path, folds=3, pseudo_labels=str(tmp_path / "p.csv"), pseudo_threshold=0.9)
    lines = []
    table = load_data(recipe, distributed.setup(), lines.append)[0]
    pseudo = table[table["pseudo"]]
    assert sorted(pseudo["image_path"]) == sorted(test["image_path"][:12])
    assert (pseudo["target"].to_numpy() == np.arange(12) % 10).all()
    assert (pseudo["fold"] == -1).all() and set(table.loc[~table["pseudo"], "fold"]) == {0, 1, 2}
    said = next(line for line in lines if line.startswith("pseudo-labels: 12 test images"))
    assert str(tmp_path / "p.csv") in said and f"{classes[0]}: 2" in said
    frame.rename(columns={classes[3]: "not_a_class"}).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(UserError, match="another class list") as e:
        load_data(recipe.replace(pseudo_labels=str(tmp_path / "other.csv")), distributed.setup(), lines.append)
    assert "not_a_class" in str(e.value) and "\n" not in str(e.value)


# ---- full-data refit ----------------------------------------------------------------------------------

def test_refit_trains_every_row_without_validation_and_predicts(digits_dir, tmp_path):
    rows = pd.read_csv(digits_dir / "train.csv").groupby("target").head(10)
    rows.to_csv(tmp_path / "train.csv", index=False)
    recipe = digits_recipe(digits_dir, tmp_path, val_fraction=0.0, epochs=2, train_csv=str(tmp_path / "train.csv"))
    run_dir = train(recipe, show_progress=False)
    log = (run_dir / run_folder.TRAIN_LOG).read_text()
    assert f"{len(rows)} train / 0 val images" in log and "best.pt is the last epoch" in log
    metrics = pd.read_csv(run_folder.fold_dir(run_dir, 0) / run_folder.METRICS)
    assert metrics["val_acc"].isna().all() and len(metrics) == 2
    from engine.checkpoint import load_checkpoint
    assert load_checkpoint(run_folder.fold_dir(run_dir, 0) / run_folder.BEST)["epoch"] == 2
    assert predict.main([str(run_dir)] + FAST + few_test_images(digits_dir, tmp_path)) == 0
    assert len(pd.read_csv(run_dir / run_folder.OUTPUT)) == 16
    image = digits_dir / "test" / pd.read_csv(digits_dir / "test.csv")["image_path"][0]
    assert cam.main([str(image), "--ckpt", str(run_dir), "--out", str(tmp_path / "cams")]) == 0
