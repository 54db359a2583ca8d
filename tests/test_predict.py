"""predict.py and engine.predict.inference: the submission file, ensembles, TTA, moved checkpoints, clear errors."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

import predict
from engine.checkpoint import load_checkpoint
from engine.data.pixels.images import load_image
from engine.predict.inference import load_ensemble, predict_probs
from engine.models import build_model, data_config
from engine.recipe import from_dict
from engine.data.pixels.transforms import build_eval_transform

FAST = ["--workers", "0", "--no-progress"]


def convnext_checkpoint(trained_run, path, classes=None):
    """A checkpoint of another architecture (untrained test_convnext) over the same classes."""
    ckpt = load_checkpoint(trained_run / "fold0" / "best.pt")
    recipe = from_dict(ckpt["recipe"]).replace(model="test_convnext")
    model = build_model("test_convnext", len(ckpt["classes"]))
    torch.save({"model": model.state_dict(), "recipe": recipe.to_dict(), "classes": classes or ckpt["classes"],
                "data": data_config(model), "epoch": 0, "metrics": {}}, path)
    return path


def by_hand(ckpt_path, image_paths, flip=False, size=None):
    """Softmax of one checkpoint (at `size` px, default the recipe's), computed without engine.predict.inference."""
    ckpt = load_checkpoint(ckpt_path)
    recipe = from_dict(ckpt["recipe"])
    model = build_model(recipe.model, len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    tf = build_eval_transform(size or recipe.image_size, ckpt["data"]["crop_pct"])
    x = torch.stack([tf(load_image(p)) for p in image_paths]).float() / 255
    mean, std = (torch.tensor(ckpt["data"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    x = (x - mean) / std
    with torch.no_grad():
        p = model(x).softmax(1)
        return (p + model(x.flip(-1)).softmax(1)) / 2 if flip else p


def test_output_csv_has_the_competition_columns_and_order(trained_run, digits_dir, capsys):
    assert predict.main([str(trained_run), "--save-probs"] + FAST) == 0
    out = pd.read_csv(trained_run / "output.csv")
    test = pd.read_csv(digits_dir / "test.csv")
    assert list(out.columns) == ["ID", "image_path", "target"]
    assert list(out["image_path"]) == list(test["image_path"])
    assert list(out["ID"]) == list(range(len(test)))
    probs = pd.read_csv(trained_run / "output_probs.csv")
    assert list(probs.columns[1:]) == load_checkpoint(trained_run / "fold0" / "best.pt")["classes"]
    assert (probs.iloc[:, 1:].to_numpy().argmax(1) == out["target"].to_numpy()).all()
    assert probs.iloc[:, 1:].sum(1).to_numpy() == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("flip", [False, True])
def test_ensemble_is_the_mean_of_the_softmaxes(trained_run, digits_dir, tmp_path, flip):
    paths = [trained_run / "fold0" / "best.pt", convnext_checkpoint(trained_run, tmp_path / "convnext.pt")]
    images = [str(digits_dir / "test" / f) for f in pd.read_csv(digits_dir / "test.csv")["image_path"][:12]]
    members = load_ensemble(paths, torch.device("cpu"))
    got = predict_probs(members, images, batch_size=5, flip=flip, num_workers=0, show_progress=False)
    expected = (by_hand(paths[0], images, flip) + by_hand(paths[1], images, flip)) / 2
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_multi_scale_tta_averages_the_scales(trained_run, digits_dir):
    path = trained_run / "fold0" / "best.pt"
    images = [str(digits_dir / "test" / f) for f in pd.read_csv(digits_dir / "test.csv")["image_path"][:8]]
    members = load_ensemble([path], torch.device("cpu"))
    got = predict_probs(members, images, scales=(0.75,), num_workers=0, show_progress=False)
    expected = (by_hand(path, images) + by_hand(path, images, size=24)) / 2
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_flip_tta_on_a_mirror_symmetric_image_changes_nothing(trained_run, digits_dir, tmp_path):
    from PIL import Image
    symmetric = []
    for name in pd.read_csv(digits_dir / "test.csv")["image_path"][:16]:
        image = load_image(str(digits_dir / "test" / name))
        image = torch.minimum(image, image.flip(-1))  # keep the ink of both halves: symmetric left-right
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / name)
        symmetric.append(str(tmp_path / name))
    ckpt = load_checkpoint(trained_run / "fold0" / "best.pt")
    ckpt["data"]["crop_pct"] = 1.0  # no crop: test_resnet's 0.95 crops 32 of 33 px, one pixel off-centre
    torch.save(ckpt, tmp_path / "uncropped.pt")
    members = load_ensemble([tmp_path / "uncropped.pt"], torch.device("cpu"))
    plain = predict_probs(members, symmetric, num_workers=0, show_progress=False)
    tta = predict_probs(members, symmetric, flip=True, num_workers=0, show_progress=False)
    torch.testing.assert_close(tta, plain, atol=1e-5, rtol=1e-4)
    assert (tta.argmax(1) == plain.argmax(1)).all()


def few_rows(csv, tmp_path, n=40):
    """The first n rows of a CSV, as a new CSV (keeps the tests quick)."""
    pd.read_csv(csv).head(n).to_csv(tmp_path / csv.name, index=False)
    return str(tmp_path / csv.name)


def test_a_checkpoint_moved_elsewhere_predicts_alone(trained_run, digits_dir, tmp_path):
    moved = tmp_path / "elsewhere" / "model.pt"
    moved.parent.mkdir()
    shutil.copy(trained_run / "fold0" / "best.pt", moved)
    subset = ["--test-csv", few_rows(digits_dir / "test.csv", tmp_path)]
    assert predict.main([str(moved)] + subset + FAST) == 0
    assert predict.main([str(trained_run), "--out", str(tmp_path / "from_run.csv")] + subset + FAST) == 0
    alone = pd.read_csv(moved.parent / "output.csv")  # no run folder around it: written next to it
    assert alone.equals(pd.read_csv(tmp_path / "from_run.csv"))


def test_val_scores_a_labelled_csv(trained_run, digits_dir, tmp_path, capsys):
    out = tmp_path / "val.csv"
    labelled = few_rows(digits_dir / "test_labels.csv", tmp_path)
    assert predict.main([str(trained_run), "--val", labelled, "--test-dir", str(digits_dir / "test"),
                         "--out", str(out)] + FAST) == 0
    scored = pd.read_csv(out)
    labels = pd.read_csv(labelled)
    assert list(scored["target"]) == list(labels["target"])
    assert f"acc {(scored['pred'] == scored['target']).mean():.4f}" in capsys.readouterr().out


def error_of(argv, capsys) -> str:
    assert predict.main(argv + FAST) == 2
    return capsys.readouterr().err


def test_kfold_lists_the_missing_folds(trained_run, tmp_path, capsys):
    run = tmp_path / "runs" / "digits" / "20260101-000000"
    (run / "fold0").mkdir(parents=True)
    recipe = json.loads((trained_run / "recipe.json").read_text())
    (run / "recipe.json").write_text(json.dumps({**recipe, "folds": 3}))
    shutil.copy(trained_run / "fold0" / "best.pt", run / "fold0" / "best.pt")
    err = error_of([str(run), "--kfold"], capsys)
    assert "fold1, fold2" in err and "fold0" not in err.split("lacks")[1].split("of")[0]


def test_kfold_refuses_a_fold_that_did_not_finish(trained_run, tmp_path, capsys):
    run = tmp_path / "runs" / "digits" / "20260101-000000"
    shutil.copytree(trained_run, run)
    last = torch.load(run / "fold0" / "last.pt", weights_only=True)
    last["progress"]["finished"] = False  # as if pre-empted: its best.pt is an undertrained model
    torch.save(last, run / "fold0" / "last.pt")
    err = error_of([str(run), "--kfold"], capsys)
    assert "fold0 did not finish training" in err and "--resume" in err


def test_mismatched_classes_are_refused(trained_run, tmp_path, capsys):
    classes = load_checkpoint(trained_run / "fold0" / "best.pt")["classes"]
    other = convnext_checkpoint(trained_run, tmp_path / "other.pt", classes=classes[::-1])
    err = error_of([str(trained_run), str(other)], capsys)
    assert "classes differ" in err and "error:" in err


def test_no_runs_and_bad_paths_are_clear_errors(tmp_path, capsys):
    assert "no trained runs under" in error_of(["--runs-dir", str(tmp_path / "empty")], capsys)
    assert "not found" in error_of([str(tmp_path / "nope")], capsys)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    assert "not a readable sketchbook checkpoint" in error_of([str(junk)], capsys)


def test_val_labels_from_another_class_list_are_refused(trained_run, digits_dir, tmp_path, capsys):
    labels = pd.read_csv(digits_dir / "test_labels.csv").head(20)
    labels["class_name"] = labels["class_name"].replace({"six": "seven"})
    labels.to_csv(tmp_path / "relabelled.csv", index=False)
    err = error_of([str(trained_run), "--val", str(tmp_path / "relabelled.csv"),
                    "--test-dir", str(digits_dir / "test")], capsys)
    assert "'seven' but the model's class 6 is 'six'" in err


@pytest.mark.parametrize("flip", ["none", "h", "hv"])
def test_predict_through_resident_crops_equals_the_workers_with_one_forward_per_batch(trained_run, digits_dir, flip):
    import dataclasses
    path = trained_run / "fold0" / "best.pt"
    images = [str(digits_dir / "test" / f) for f in pd.read_csv(digits_dir / "test.csv")["image_path"][:11]]
    member = load_ensemble([path], torch.device("cpu"))[0]
    member.recipe = dataclasses.replace(member.recipe, flip=flip)
    calls = []
    member.model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    got = {resident: predict_probs([member], images, batch_size=4, flip=True, scales=(0.75,), num_workers=0,
                                   show_progress=False, resident=resident) for resident in (True, False)}
    torch.testing.assert_close(got[True], got[False], atol=1e-5, rtol=0)
    views = {"none": 1, "h": 2, "hv": 4}[flip]
    assert calls == [4 * views, 4 * views, 3 * views] * 4  # 3 batches, 2 scales, twice: every view in one forward
    x = by_hand(path, images)  # the plain view, and the mean over the views by hand
    if flip == "none":
        torch.testing.assert_close((x + by_hand(path, images, size=24)) / 2, got[False], atol=1e-5, rtol=1e-4)
