"""Distillation: a student's training targets mix its labels with a k-fold teacher's out-of-fold probabilities;
they reach the loss through every batch source, resume bitwise, and a teacher that does not fit is one line."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, digits_recipe
from engine import run_folder
from engine.data.batches.targets import SOFT, training_targets
from engine.errors import UserError
from engine.system import preemption
from engine.system.distributed import Dist
from engine.train import mix
from engine.train.orchestrator import train
from engine.train.training_data import load_data

SOURCES = {"workers": dict(augment_on="workers", cache="none"), "resident": dict(augment_on="auto", cache="device"),
           "store": dict(feature_views=2, feature_dtype="fp32", freeze="backbone", augment="none")}


@pytest.fixture(scope="module")
def data(digits_dir, tmp_path_factory):
    """45 digits and a 3-fold teacher run on them."""
    out = tmp_path_factory.mktemp("distill")
    pd.read_csv(digits_dir / "train.csv").groupby("target").head(6).to_csv(out / "train.csv", index=False)
    with pytest.MonkeyPatch.context() as patch:  # the report is tested elsewhere and slow to draw
        patch.setattr("engine.evaluate.report_figures.make_report", lambda run_dir: [])
        teacher = train(student(digits_dir, out, out, teacher=None), show_progress=False)
    return out, teacher


def student(digits_dir, data_dir, out, **changes):
    keys = dict(folds=3, epochs=1, batch_size=8, train_csv=str(data_dir / "train.csv"), teacher_weight=0.5,
                teacher_temperature=2.0, label_smoothing=0.1)
    return digits_recipe(digits_dir, out, **{**keys, **changes})


def test_targets_are_the_label_and_the_sharpened_out_of_fold_probabilities(digits_dir, data, tmp_path):
    out, teacher = data
    table, classes, _ = load_data(student(digits_dir, out, tmp_path, teacher=str(teacher)), Dist(), print, False)
    oof = pd.read_csv(teacher / run_folder.OOF).set_index("image_path")
    probs = np.load(teacher / run_folder.OOF_PROBS).astype(np.float64)[oof.index.get_indexer(table["image_path"])]
    sharp = probs ** 0.5 / (probs ** 0.5).sum(1, keepdims=True)
    hard = np.full_like(sharp, 0.01)
    hard[np.arange(len(table)), table["target"]] += 0.9
    np.testing.assert_allclose(training_targets(table).numpy(), 0.5 * hard + 0.5 * sharp, atol=1e-5)
    y = training_targets(table)[:4].clone()  # the mixer takes them as they are: smoothing is in them already
    assert torch.equal(mix.Mixer(10, smoothing=0.1)(torch.zeros(4, 3, 8, 8), y)[1], y)


@pytest.mark.parametrize("source", SOURCES)
def test_every_batch_source_feeds_the_soft_targets_to_the_loss(source, digits_dir, data, tmp_path, monkeypatch):
    out, teacher = data
    recipe = student(digits_dir, out, tmp_path, teacher=str(teacher), mixup_ratio=0.0, **SOURCES[source])
    table, _, _ = load_data(recipe, Dist(), print, False)
    expected = training_targets(table[table["fold"] != 0])
    seen, real = [], mix.Mixer.__call__

    def spy(self, x, y, *args, **kwargs):
        seen.append(y.detach().cpu())
        return real(self, x, y, *args, **kwargs)

    monkeypatch.setattr(mix.Mixer, "__call__", spy)
    train(recipe, fold=0, show_progress=False)
    batches = torch.cat(seen)
    assert batches.dtype == torch.float32 and batches.shape[1] == 10 and len(batches) >= len(expected) // 2
    assert all((row == expected).all(1).any() for row in batches), source  # every target is a row's soft target


def test_a_distilled_run_stopped_mid_epoch_resumes_bitwise(digits_dir, data, tmp_path, monkeypatch):
    out, teacher = data
    keys = dict(teacher=str(teacher), epochs=2, mixup_ratio=0.5)
    whole = train(student(digits_dir, out, tmp_path / "whole", **keys), fold=0, show_progress=False)
    calls = {"n": 0}

    def stop_at_six() -> bool:
        calls["n"] += 1
        return calls["n"] == 6  # epoch 2 (5 updates an epoch), mid-epoch

    monkeypatch.setattr(preemption, "requested", stop_at_six)
    recipe = student(digits_dir, out, tmp_path / "stopped", **keys)
    with pytest.raises(preemption.Preempted):
        train(recipe, fold=0, show_progress=False)
    monkeypatch.setattr(preemption, "requested", lambda: False)
    stopped = next((tmp_path / "stopped").glob("*/*"))
    train(recipe, fold=0, resume=str(stopped), show_progress=False)
    a, b = (torch.load(run_folder.fold_dir(r, 0) / run_folder.LAST, weights_only=True)["model"] for r in (whole, stopped))
    assert all(torch.equal(a[k], b[k]) for k in a)


def broken_teacher(teacher, tmp_path, how: str):
    """A copy of the teacher damaged one way."""
    copy = tmp_path / how
    shutil.copytree(teacher, copy)
    if how == "unfinished":
        (copy / run_folder.OOF).unlink()
    elif how == "no_probs":
        (copy / run_folder.OOF_PROBS).unlink()
    elif how == "classes":
        oof = pd.read_csv(copy / run_folder.OOF)
        oof.loc[oof["target"] == 3, "class_name"] = "cat"
        oof.to_csv(copy / run_folder.OOF, index=False)
    return copy


@pytest.mark.parametrize("how, changes, says", [
    ("unfinished", {}, "unfinished"), ("no_probs", {}, run_folder.OOF_PROBS), ("classes", {}, "other classes"),
    ("folds", {"seed": 7}, "other folds"), ("rows", {"train_csv": "fewer"}, "other rows"),
    ("not_a_run", {}, "not a run folder")])
def test_a_teacher_that_does_not_fit_is_one_line_and_nothing_is_written(how, changes, says, digits_dir, data,
                                                                        tmp_path):
    out, teacher = data
    run = tmp_path if how == "not_a_run" else teacher if how in ("folds", "rows") else broken_teacher(
        teacher, tmp_path, how)
    if changes.get("train_csv"):
        pd.read_csv(out / "train.csv").groupby("target").head(5).to_csv(tmp_path / "fewer.csv", index=False)
        changes = {"train_csv": str(tmp_path / "fewer.csv")}
    with pytest.raises(UserError, match=says) as e:
        train(student(digits_dir, out, tmp_path / "runs", teacher=str(run), **changes), show_progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "runs").exists()


def test_the_teacher_key_takes_one_run_or_several(digits_dir, data, tmp_path):
    out, teacher = data
    assert student(digits_dir, out, tmp_path, teacher=str(teacher)).teacher == (str(teacher),)
    both = student(digits_dir, out, tmp_path, teacher=[str(teacher), str(teacher)])
    table, _, _ = load_data(both, Dist(), print, False)
    one, _, _ = load_data(student(digits_dir, out, tmp_path, teacher=str(teacher)), Dist(), print, False)
    np.testing.assert_allclose(np.stack(table[SOFT]), np.stack(one[SOFT]), atol=1e-6)  # the mean of two equal ones
    with pytest.raises(UserError, match="teacher"):
        student(digits_dir, out, tmp_path, teacher=3)


def test_two_ranks_train_the_student_as_one_process_of_twice_the_batch(digits_dir, data, tmp_path):
    from tests.test_ddp import last_weights, torchrun
    out, teacher = data

    def args(where, batch_size):  # test_vit and SGD as tests/test_ddp.py: no batch-norm, no Adam noise
        return ["train.py", "--no-progress", "--fold", "0", "model=test_vit", f"data_dir='{digits_dir}/train'",
                f"train_csv='{out}/train.csv'", "image_size=32", f"batch_size={batch_size}", "epochs=1", "folds=3",
                "num_workers=0", "optimizer=SGD", "lr=0.05", f"teacher='{teacher}'", "teacher_temperature=2.0",
                f"output_dir='{where}'"]

    two = torchrun(args(tmp_path / "two", 4))
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("distillation:") == 1
    one = subprocess.run([sys.executable, *args(tmp_path / "one", 8)], cwd=ROOT, capture_output=True, text=True,
                         timeout=240)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = last_weights(tmp_path / "two"), last_weights(tmp_path / "one")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_teacher_test_trains_on_the_test_images_with_the_teachers_predictions(digits_dir, data, tmp_path):
    import predict
    out, teacher = data
    copy = shutil.copytree(teacher, tmp_path / "teacher")
    recipe = student(digits_dir, out, tmp_path, teacher=str(copy), teacher_test=True)
    with pytest.raises(UserError, match="--save-probs"):  # not predicted yet: one line says how
        load_data(recipe, Dist(), print, False)
    assert predict.main([str(copy), "--kfold", "--save-probs", "--workers", "0", "--no-progress"]) == 0
    table, classes, _ = load_data(recipe, Dist(), print, False)
    test = table[table["pseudo"]]
    assert len(test) == len(pd.read_csv(digits_dir / "test.csv")) and (test["fold"] == -1).all()
    probs = pd.read_csv(copy / "output_probs.csv").set_index("image_path").loc[test["image_path"], classes].to_numpy()
    sharp = probs ** 0.5 / (probs ** 0.5).sum(1, keepdims=True)
    np.testing.assert_allclose(training_targets(test).numpy(), sharp, atol=1e-4)
    assert (test["target"].to_numpy() == probs.argmax(1)).all()
    with pytest.raises(UserError, match="teacher_test"):
        student(digits_dir, out, tmp_path, teacher=None, teacher_test=True)
