"""What a hostile but realistic user broke (issue 18): each test fails on the code before its fix."""
from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, digits_recipe
from engine import run_folder
from engine.errors import UserError, run_command
from engine.train.orchestrator import train


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def small_csv(digits_dir, tmp_path_factory) -> Path:
    """12 digits of each class: enough for a 1-epoch run in a second or two."""
    table = pd.read_csv(digits_dir / "train.csv")
    path = tmp_path_factory.mktemp("small") / "train.csv"
    table.groupby("target").head(12).to_csv(path, index=False)
    return path


def quick(digits_dir: Path, small_csv: Path, out: Path, **changes):
    """1 epoch at 16 px; 3 folds of which tests train one or two, so no run spends seconds on the final report."""
    values = dict(train_csv=str(small_csv), epochs=1, image_size=16, batch_size=32, folds=3)
    return digits_recipe(digits_dir, out, **{**values, **changes})


@pytest.fixture(scope="module")
def run_a(digits_dir, small_csv, tmp_path_factory) -> Path:
    """A run whose fold 0 finished (tests that damage a run copy it first)."""
    return train(quick(digits_dir, small_csv, tmp_path_factory.mktemp("runs")), fold=0, name="a", show_progress=False)


@pytest.fixture
def test_set(digits_dir, tmp_path) -> tuple[Path, Path]:
    """(test.csv of 6 images, the folder they are in), private to the test."""
    folder = tmp_path / "test"
    shutil.copytree(digits_dir / "test", folder)
    csv = tmp_path / "test.csv"
    pd.read_csv(digits_dir / "test.csv").head(6).to_csv(csv, index=False)
    return csv, folder


def copy_run(run: Path, out: Path) -> Path:
    target = out / run.parent.name / run.name
    shutil.copytree(run, target)
    return target


def predict(args: list[str]) -> int:
    import predict as cli
    return cli.main([*args, "--no-progress"] + ([] if "--workers" in args else ["--workers", "0"]))


# 1. never write over an input

def test_write_clean_refuses_to_replace_the_training_csv(digits_dir, small_csv, tmp_path, capsys):
    from engine.explore.analysis import explore
    own = tmp_path / "train.csv"
    pd.read_csv(small_csv).assign(notes="mine").to_csv(own, index=False)
    before = own.read_bytes()
    recipe = quick(digits_dir, small_csv, tmp_path / "runs", train_csv=str(own), test_csv=None)
    assert run_command(lambda: explore(recipe, tmp_path / "eda", write_clean=str(tmp_path / "." / "train.csv"),
                                       workers=1, progress=False)) == 2
    assert "--write-clean" in one_line(capsys)
    assert own.read_bytes() == before


def test_predict_out_refuses_to_replace_the_test_csv(run_a, test_set, capsys):
    csv, folder = test_set
    before = csv.read_bytes()
    assert predict([str(run_a), "--test-csv", str(csv), "--test-dir", str(folder), "--out", str(csv)]) == 2
    assert "--out" in one_line(capsys)
    assert csv.read_bytes() == before


# 2. one trainer per run and fold

def test_a_second_trainer_of_the_same_fold_is_refused_and_another_fold_is_not(digits_dir, small_csv, tmp_path):
    recipe = quick(digits_dir, small_csv, tmp_path)
    seen = []

    def meanwhile(row: dict) -> None:  # a second `train.py --name same` while fold 0 trains
        with pytest.raises(UserError, match=f"fold 0 is being trained by pid {os.getpid()} on "):
            train(recipe, fold=0, name="same", show_progress=False)
        train(recipe, fold=1, name="same", show_progress=False)  # --fold 1 on another machine: fine
        seen.append(row["epoch"])

    run = train(recipe, fold=0, name="same", show_progress=False, on_epoch=meanwhile)
    assert seen == [1]
    assert pd.read_csv(run_folder.fold_dir(run, 0) / run_folder.METRICS)["epoch"].tolist() == [1]
    assert [p.parent.name for p in run_folder.fold_files(run, run_folder.BEST)] == ["fold0", "fold1"]  # one run, two folds


# 3. --resume checks that last.pt belongs to the run

def edit_last(run: Path, change) -> None:
    path = run_folder.fold_dir(run, 0) / run_folder.LAST
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    ckpt["progress"]["finished"] = False
    torch.save(ckpt, path)


def test_resume_refuses_a_last_pt_of_another_recipe(run_a, tmp_path, capsys):
    run = copy_run(run_a, tmp_path)
    edit_last(run, lambda c: c["recipe"].update(lr=0.1))
    assert run_command(lambda: train(None, resume=str(run), show_progress=False)) == 2
    assert "lr 0.1 there vs 0.003 here" in one_line(capsys)


def test_resume_with_weights_of_another_architecture_is_one_line(run_a, tmp_path, capsys):
    from engine.models import build_model
    run = copy_run(run_a, tmp_path)
    edit_last(run, lambda c: c.update(model=build_model("test_efficientnet", 10).state_dict()))
    assert run_command(lambda: train(None, resume=str(run), show_progress=False)) == 2
    assert "does not fit test_resnet" in one_line(capsys)


# 4. stale temporary files of killed writers

def test_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    from engine.system.atomic import write_text
    writer = ("import sys, time; sys.path.insert(0, sys.argv[2]); from engine.system.atomic import write_atomic\n"
              "def slow(f):\n    f.write(b'x' * 100000); f.flush(); print('writing', flush=True); time.sleep(60)\n"
              "write_atomic(sys.argv[1], slow, binary=True)")
    proc = subprocess.Popen([sys.executable, "-c", writer, str(tmp_path / "last.pt"), str(ROOT)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(tmp_path.glob(".last.pt.*.tmp"))) == 1  # what kill -9 leaves
    live = tmp_path / f".best.pt.otherhost.{os.getpid()}.abcd1234.tmp"  # another machine's live writer
    live.write_bytes(b"x")
    write_text(tmp_path / "metrics.csv", "epoch\n1\n")
    assert not list(tmp_path.glob(".last.pt.*.tmp")) and live.exists()


# 4 + 5. disk full mid-checkpoint: one line, old checkpoint intact; the resume writes no duplicate metrics rows

def test_disk_full_is_one_line_and_resume_leaves_one_metrics_row_per_epoch(digits_dir, small_csv, tmp_path,
                                                                            monkeypatch, capsys):
    recipe = quick(digits_dir, small_csv, tmp_path, epochs=2)
    real_save = torch.save

    class AlmostFull:  # the disk fills up 64 kB into the file, as the kernel would say it
        def __init__(self, f):
            self.f, self.room = f, 65536

        def write(self, data):
            self.room -= len(data)
            if self.room < 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

    def full_disk(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj and obj["epoch"] == 2:  # last.pt of epoch 2
            return real_save(obj, AlmostFull(f), *args, **kwargs)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    assert run_command(lambda: train(recipe, fold=0, name="full", show_progress=False)) == 75
    err = one_line(capsys)
    run = run_folder.trial_run_dir(recipe, "full")
    assert "disk full" in err and "MB needed" in err and f"python train.py --resume {run}" in err
    last = run_folder.fold_dir(run, 0) / run_folder.LAST
    assert torch.load(last, weights_only=True)["epoch"] == 1 and not list(last.parent.glob(".*.tmp"))
    assert pd.read_csv(last.parent / run_folder.METRICS)["epoch"].tolist() == [1, 2]  # epoch 2 will be redone
    monkeypatch.setattr(torch, "save", real_save)
    train(None, fold=0, resume=str(run), show_progress=False)
    assert pd.read_csv(last.parent / run_folder.METRICS)["epoch"].tolist() == [1, 2]


# 6. targets that are not 0..K-1

def test_targets_with_gaps_are_refused_unless_num_classes_says_so():
    from engine.data.tables.audit import audit_table
    table = pd.DataFrame({"class_name": None, "image_path": [f"{i}.png" for i in range(9)],
                          "target": [5, 7, 9] * 3, "path": "x"})
    with pytest.raises(UserError, match=r"7 of 0\.\.9 have no rows"):
        audit_table(table, check_files=False)
    assert len(audit_table(table, num_classes=10, check_files=False).classes) == 10


# 7. failed starts

def test_a_failed_start_is_not_the_newest_run(run_a, digits_dir, small_csv, tmp_path):
    trained = copy_run(run_a, tmp_path)
    with pytest.raises(UserError, match="cannot take image_size=16"):
        train(quick(digits_dir, small_csv, tmp_path, model="test_convnext"), show_progress=False)
    assert len(list(tmp_path.glob("*/*/recipe.json"))) == 1  # the failed start left no folder (issue 23)
    assert run_folder.newest_run(tmp_path) == trained


def test_image_size_below_what_works_is_a_recipe_error():
    from engine.recipe import load_recipe
    with pytest.raises(UserError, match=r"image_size' must be in \[2, inf\)"):
        load_recipe(None, {"image_size": 1})


# 8. unreadable images at prediction time and in cam.py

def test_predict_names_an_unreadable_image_and_can_skip_it(run_a, test_set, tmp_path, capsys):
    csv, folder = test_set
    broken = pd.read_csv(csv)["image_path"][2]
    (folder / broken).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    args = [str(run_a), "--test-csv", str(csv), "--test-dir", str(folder), "--out", str(tmp_path / "out.csv")]
    assert predict(args) == 2
    err = one_line(capsys)
    assert broken in err and "--bad-images skip" in err and "bad_images=" not in err
    assert predict(args + ["--bad-images", "skip"]) == 0
    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == 6 and out["image_path"].tolist() == pd.read_csv(csv)["image_path"].tolist()
    assert pd.read_csv(tmp_path / "out_unreadable.csv")["image_path"].tolist() == [broken]


def test_cam_skips_an_unreadable_file_in_a_folder(run_a, digits_dir, tmp_path, capsys):
    from engine.cam.command import run_cam
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(next((digits_dir / "test").glob("*.png")), images / "good.png")
    (images / "bad.png").write_bytes(b"not an image")
    run_cam([str(images)], ckpt=str(run_a), out=str(tmp_path / "cams"), no_progress=True)
    assert (tmp_path / "cams" / "good_cam.png").is_file() and not (tmp_path / "cams" / "bad_cam.png").exists()
    assert "skipping" in capsys.readouterr().err


# 9. smaller ones

def test_damaged_recipe_json_is_one_line_for_resume_and_predict(run_a, tmp_path, capsys):
    import train as train_cli
    run = copy_run(run_a, tmp_path)
    (run / run_folder.RECIPE).write_text('{"model": "test_resnet", ')
    assert train_cli.main(["--resume", str(run), "--no-progress"]) == 2
    assert "damaged" in one_line(capsys)
    assert predict([str(run)]) == 2
    assert "damaged" in one_line(capsys)


def test_predict_negative_workers_is_one_line(run_a, test_set, capsys):
    csv, folder = test_set
    assert predict([str(run_a), "--test-csv", str(csv), "--test-dir", str(folder), "--workers", "-1",
                    "--out", str(csv.with_name("out.csv"))]) == 2
    assert "--workers" in one_line(capsys)


@pytest.mark.parametrize("name", ["../../x", "a b/c", ".hidden"])
def test_run_names_that_escape_or_nest_are_refused(name, digits_dir, small_csv, tmp_path):
    with pytest.raises(UserError, match="--name"):
        train(quick(digits_dir, small_csv, tmp_path / "runs"), name=name, show_progress=False)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_one_single_image_class_keeps_the_others_stratified():
    from engine.data.tables.folds import assign_folds
    targets = np.array([0] + [t for t in range(1, 10) for _ in range(20)])
    fold = assign_folds(targets, folds=1, val_fraction=0.2, seed=42)
    val_per_class = np.bincount(targets[fold == 0], minlength=10)
    assert val_per_class[0] == 0 and set(val_per_class[1:]) <= {4, 5}  # 37 validation rows: 4 of each, one 5


def test_a_jpeg_damaged_in_the_middle_fails_the_audit(tmp_path):
    from PIL import Image
    from engine.data.tables.audit import check_image_file
    pixels = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    (tmp_path / "good.jpg").write_bytes(data)
    data[len(data) // 2:len(data) // 2 + 200] = bytes(200)  # ends with a valid end marker all the same
    (tmp_path / "bad.jpg").write_bytes(data)
    assert check_image_file(str(tmp_path / "good.jpg")) is None
    assert check_image_file(str(tmp_path / "bad.jpg")).startswith("corrupt (Corrupt JPEG data")


def test_val_errors_print_plain_numbers(run_a, digits_dir, tmp_path, capsys):
    labels = pd.read_csv(digits_dir / "test_labels.csv").head(4)
    labels.loc[1, "target"] = 10
    labels.to_csv(tmp_path / "labels.csv", index=False)
    assert predict([str(run_a), "--val", str(tmp_path / "labels.csv"), "--test-dir", str(digits_dir / "test")]) == 2
    err = one_line(capsys)
    assert "has target 10;" in err and "np." not in err


def test_a_sweep_space_where_no_point_can_mix_is_refused_before_any_trial():
    from engine.recipe import load_recipe
    from engine.sweep.config import parse_sweep
    config = {"method": "random", "parameters": {"mixup_ratio": {"values": [0.6, 0.8]},
                                                 "cutmix_ratio": {"min": 0.5, "max": 0.9}}}
    with pytest.raises(UserError, match="mixup_ratio \\+ cutmix_ratio > 1"):
        parse_sweep(config, load_recipe(None, {}))
    config["parameters"]["cutmix_ratio"]["min"] = 0.3
    parse_sweep(config, load_recipe(None, {}))  # 0.6 + 0.3 is allowed: some points work


def test_explore_summary_counts_and_the_samples_subset(digits_dir, tmp_path):
    from engine.explore.analysis import explore
    table = pd.read_csv(digits_dir / "train.csv").groupby("target").head(3).reset_index(drop=True)
    table.loc[[0, 4], "target"] = 9  # two labels that disagree with their class_name: rejected by the audit
    table.to_csv(tmp_path / "train.csv", index=False)
    recipe = digits_recipe(digits_dir, tmp_path / "runs", train_csv=str(tmp_path / "train.csv"), test_csv=None)
    lines = []
    result = explore(recipe, tmp_path / "eda", workers=1, progress=False, log=lines.append)
    counts = next(line for line in lines if "images decoded / from cache" in line).split(": ")[1]
    decoded, cached = map(int, counts.split(" / "))
    assert (decoded, cached) == (30, 0)
    html = result.report.read_text()
    assert "8 of 10 classes shown; not shown: " in html
