"""Run folders and checkpoints written before the engine/ layout change still predict, explain and resume.

tests/fixtures/v1 was written by the flat-engine version: a 4-class digits set and a run of
test_efficientnet stopped after epoch 1 of 2 (fold0/best.pt, last.pt, metrics.csv, val_predictions.csv).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "v1"


@pytest.fixture
def old_run(tmp_path, monkeypatch) -> Path:
    """A copy of the fixture (the recipe's paths are relative to the repository root), cwd set to it."""
    shutil.copytree(FIXTURE, tmp_path / "tests" / "fixtures" / "v1")
    monkeypatch.chdir(tmp_path)
    return next(Path("tests/fixtures/v1/runs/fixture").iterdir())


def test_old_checkpoint_predicts_what_its_validation_recorded(old_run):
    from engine.predict.inference import load_ensemble, predict_probs
    members = load_ensemble([old_run / "fold0" / "best.pt"], torch.device("cpu"))
    recorded = pd.read_csv(old_run / "fold0" / "val_predictions.csv")
    paths = [str(Path(members[0].recipe.data_dir) / p) for p in recorded["image_path"]]
    probs = predict_probs(members, paths, batch_size=4, num_workers=0, show_progress=False)
    assert probs.argmax(1).tolist() == recorded["pred"].tolist()
    assert torch.allclose(probs.max(1).values, torch.tensor(recorded["confidence"].values, dtype=torch.float32),
                          atol=1e-4)


def test_old_checkpoint_through_predict_and_cam_commands(old_run):
    out = Path("preds.csv")
    done = subprocess.run([sys.executable, str(ROOT / "predict.py"), str(old_run / "fold0" / "best.pt"),
                           "--out", str(out), "--workers", "0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(out)
    assert list(table.columns) == ["ID", "image_path", "target"] and len(table) == 8
    assert set(table["target"]) <= {0, 1, 2, 3}
    image = sorted(Path("tests/fixtures/v1/data/test").glob("*.png"))[0]
    done = subprocess.run([sys.executable, str(ROOT / "cam.py"), str(image), "--ckpt", str(old_run / "fold0" / "best.pt"),
                           "--out", "cams"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (Path("cams") / "cams.csv").is_file() and list(Path("cams").glob("*.png"))


def test_old_run_resumes_and_finishes(old_run):
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", str(old_run), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed at epoch 2, step 0" in done.stdout
    metrics = pd.read_csv(old_run / "fold0" / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    last = torch.load(old_run / "fold0" / "last.pt", weights_only=True)
    assert last["progress"]["finished"] and last["epoch"] == 2
