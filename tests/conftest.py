"""Shared fixtures: a small real data set in the competition layout and a run trained on it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["WANDB_MODE"] = "disabled"  # never the network in tests
os.environ.setdefault("WANDB_SILENT", "true")
# one thread here and in the processes tests start: on 2 shared cores a second one spin-waits (a step 0.1 s -> 2.3 s)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """The demo data set (1,797 real handwritten digits) in the competition layout, built once."""
    from engine.data.tables.demo_digits import build_demo_data
    return build_demo_data(tmp_path_factory.mktemp("digits") / "demo")


def digits_recipe(digits_dir: Path, out: Path, **changes):
    """A fast recipe on the digits: timm's tiny test_resnet at 32 px."""
    from engine.recipe import load_recipe
    base = dict(model="test_resnet", data_dir=str(digits_dir / "train"), train_csv=str(digits_dir / "train.csv"),
                test_dir=str(digits_dir / "test"), test_csv=str(digits_dir / "test.csv"), image_size=32,
                batch_size=64, epochs=2, lr=3e-3, num_workers=0, output_dir=str(out), name="digits")
    base.update(changes)
    return load_recipe(None, base)


@pytest.fixture(scope="session")
def trained_run(digits_dir, tmp_path_factory) -> Path:
    """A run folder with fold0/best.pt and last.pt, trained for 2 epochs on the digits."""
    from engine.train.orchestrator import train
    recipe = digits_recipe(digits_dir, tmp_path_factory.mktemp("runs"))
    return train(recipe, show_progress=False)


def stop_after(monkeypatch, n_updates: int) -> None:
    """Make the loop see a stop request at its n-th update, as if SIGTERM had arrived."""
    from engine.system import preemption
    calls = {"n": 0}

    def requested():
        calls["n"] += 1
        return calls["n"] >= n_updates
    monkeypatch.setattr(preemption, "requested", requested)
