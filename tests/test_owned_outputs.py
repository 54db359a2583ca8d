"""Issue 23, section 1: a command writes a user-named path only when it is new or this kind of command wrote
it before; never over an input, a run-folder file, a recipe, an image or a folder (each fails on the old code)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import digits_recipe
from engine.errors import UserError, run_command


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def small_run(digits_dir, tmp_path_factory) -> Path:
    """Fold 0 of a 1-epoch run at 16 px on 8 digits a class."""
    from engine.train.orchestrator import train
    csv = tmp_path_factory.mktemp("small") / "train.csv"
    pd.read_csv(digits_dir / "train.csv").groupby("target").head(8).to_csv(csv, index=False)
    recipe = digits_recipe(digits_dir, tmp_path_factory.mktemp("runs"), train_csv=str(csv), epochs=1, image_size=16,
                           batch_size=32, folds=3)
    return train(recipe, fold=0, show_progress=False)


@pytest.fixture
def owned(small_run, digits_dir, tmp_path) -> dict[str, Path]:
    """Files a user owns, each a target some command was once pointed at: a copy of the run, a recipe, an image."""
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    recipe = tmp_path / "recipes" / "mine.py"
    recipe.parent.mkdir()
    recipe.write_text("lr = 1e-3\n")
    image = tmp_path / "data" / "00000.png"
    image.parent.mkdir()
    shutil.copy(digits_dir / "test" / "00000.png", image)
    return {"recipe": recipe, "last.pt": run / "fold0" / "last.pt", "metrics": run / "fold0" / "metrics.csv",
            "recipe.json": run / "recipe.json", "image": image, "folder": tmp_path / "data", "run": run}


def snapshot(owned: dict[str, Path]) -> dict[str, bytes]:
    return {k: p.read_bytes() for k, p in owned.items() if p.is_file()}


def predict(args: list[str]) -> int:
    import predict as cli
    return cli.main([*args, "--no-progress", "--workers", "0"])


@pytest.mark.parametrize("target", ["recipe", "last.pt", "metrics", "recipe.json", "image", "folder"])
def test_predict_out_never_replaces_what_the_user_owns(owned, digits_dir, tmp_path, capsys, target):
    before = snapshot(owned)
    csv = tmp_path / "test.csv"
    pd.read_csv(digits_dir / "test.csv").head(4).to_csv(csv, index=False)
    args = [str(owned["run"]), "--test-csv", str(csv), "--test-dir", str(digits_dir / "test")]
    assert predict(args + ["--out", str(owned[target]), "--save-probs"]) == 2
    said = one_line(capsys)
    assert "--out" in said and "e.g." in said  # why, and what to use instead
    assert snapshot(owned) == before


def test_predict_replaces_its_own_output_and_nothing_else(owned, digits_dir, tmp_path, capsys):
    csv = tmp_path / "test.csv"
    pd.read_csv(digits_dir / "test.csv").head(4).to_csv(csv, index=False)
    args = [str(owned["run"]), "--test-csv", str(csv), "--test-dir", str(digits_dir / "test"), "--save-probs"]
    out = tmp_path / "preds" / "sub.csv"
    assert predict(args + ["--out", str(out)]) == 0
    assert predict(args + ["--out", str(out)]) == 0  # a second run replaces the first one's files
    mine = tmp_path / "preds" / "notes.csv"
    mine.write_text("image_path,comment\n00000.png,looks like a 7\n")
    capsys.readouterr()
    assert predict(args + ["--out", str(mine)]) == 2
    assert "did not write" in one_line(capsys) and mine.read_text().startswith("image_path,comment")


@pytest.mark.parametrize("target", ["recipe", "last.pt", "image", "folder"])
def test_write_clean_never_replaces_what_the_user_owns(owned, digits_dir, tmp_path, capsys, target):
    from engine.explore.analysis import explore
    before = snapshot(owned)
    recipe = digits_recipe(digits_dir, tmp_path / "runs", train_csv=str(owned["run"] / "fold0" / "val_predictions.csv"))
    assert run_command(lambda: explore(recipe, tmp_path / "eda", write_clean=str(owned[target]), workers=1,
                                       progress=False)) == 2
    assert "--write-clean" in one_line(capsys)
    assert snapshot(owned) == before


def test_cam_out_that_is_a_file_is_one_line(owned, capsys):
    import cam
    before = snapshot(owned)
    assert cam.main([str(owned["image"]), "--ckpt", str(owned["run"]), "--out", str(owned["recipe"]),
                     "--no-progress"]) == 2
    assert "--out" in one_line(capsys)
    assert snapshot(owned) == before


def test_a_sweep_journal_is_never_a_users_file(owned, capsys):
    from engine.sweep.storage import open_storage
    before = snapshot(owned)
    for target in ("recipe", "metrics", "folder"):
        with pytest.raises(UserError, match="journal"):
            open_storage(f"journal:{owned[target]}", 60)
    assert snapshot(owned) == before


def test_the_ledger_knows_what_the_command_wrote_and_forgets_an_edited_file(tmp_path):
    from engine.system.outputs import OutputGuard
    guard = OutputGuard("predict.py --out", example="predictions.csv")
    out = guard.check(tmp_path / "a.csv")
    out.write_text("x\n1\n")
    guard.wrote(out)
    assert guard.check(out) == out  # its own earlier output: replaced
    with pytest.raises(UserError, match="did not write"):  # another command's output is not its own
        OutputGuard("cam.py --out").check(out)
    out.write_text("x\n1\n2\n")  # the user edited it: theirs now
    with pytest.raises(UserError, match=r"did not write.*e\.g\. .*predictions\.csv"):
        guard.check(out)


def test_a_test_csv_with_its_own_ids_keeps_them(owned, digits_dir, tmp_path):
    csv = tmp_path / "test.csv"
    pd.read_csv(digits_dir / "test.csv").head(3).assign(ID=[17, 4, 99]).to_csv(csv, index=False)
    out = tmp_path / "sub.csv"
    assert predict([str(owned["run"]), "--test-csv", str(csv), "--test-dir", str(digits_dir / "test"),
                    "--out", str(out)]) == 0
    assert pd.read_csv(out)["ID"].tolist() == [17, 4, 99]


def test_explore_and_sweep_outputs_stay_where_they_belong(owned, digits_dir, tmp_path, capsys):
    from engine.explore.analysis import explore
    from engine.recipe import load_recipe
    from engine.sweep.command import run_sweep
    before = snapshot(owned)
    recipe = digits_recipe(digits_dir, tmp_path / "runs")
    assert run_command(lambda: explore(recipe, owned["recipe"], workers=1, progress=False)) == 2  # --out a file
    assert "explore --out" in one_line(capsys)
    sweep = {"method": "random", "metric": {"name": "val_loss", "goal": "minimize"},
             "parameters": {"lr": {"values": [0.1, 0.01]}}}
    with pytest.raises(UserError, match="--name"):
        run_sweep(load_recipe(None, dict(name="x", output_dir=str(tmp_path), sweep=sweep)), count=1,
                  name="../../recipes")
    assert snapshot(owned) == before
