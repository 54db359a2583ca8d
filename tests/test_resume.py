"""Survive: a run stopped mid-epoch and resumed equals one never stopped; SIGTERM; non-finite losses."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from engine import checkpoint
from engine.system import preemption as preempt
from engine.train.orchestrator import train
from tests.conftest import ROOT, digits_recipe, stop_after

# mixing, accumulation, EMA, drop-path and a partial accumulation window: everything that carries state
HARD = dict(model="test_vit", epochs=2, batch_size=32, accumulate_grad_batches=2, mixup_ratio=0.3,
            cutmix_ratio=0.3, ema_decay=0.9, drop_path=0.1, label_smoothing=0.1, warmup_epochs=0.5)


def weights(run_dir, name="last.pt"):
    return torch.load(run_dir / "fold0" / name, weights_only=True)




def test_stopped_and_resumed_run_equals_uninterrupted(digits_dir, tmp_path, monkeypatch):
    full = train(digits_recipe(digits_dir, tmp_path / "a", **HARD), show_progress=False)
    stop_after(monkeypatch, 27)  # epoch 2 (19 updates per epoch), mid-epoch
    with pytest.raises(preempt.Preempted):
        train(digits_recipe(digits_dir, tmp_path / "b", **HARD), show_progress=False)
    monkeypatch.undo()
    stopped_dir = next((tmp_path / "b").glob("*/*"))
    progress = weights(stopped_dir)["progress"]
    assert progress["epoch"] == 1 and 0 < progress["step"] and not progress["finished"]
    train(None, resume=str(stopped_dir), show_progress=False)
    a, b = weights(full), weights(stopped_dir)
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name  # bitwise
    for name in a["ema"]:
        assert torch.equal(a["ema"][name], b["ema"][name]), name
    assert a["metrics"]["train_loss"] == b["metrics"]["train_loss"]
    assert a["metrics"]["val_loss"] == b["metrics"]["val_loss"]


def test_resuming_a_finished_run_trains_nothing(trained_run, capsys):
    before = weights(trained_run)["model"]
    train(None, resume=str(trained_run / "fold0" / "last.pt"), show_progress=False)
    assert "already trained" in capsys.readouterr().out
    after = weights(trained_run)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_non_finite_losses_are_skipped_counted_then_stop(digits_dir, tmp_path, monkeypatch):
    import engine.train.state
    real = engine.train.state.build_loss

    def nan_in_epoch_2(*args):
        loss = real(*args)
        calls = {"n": 0}

        def forward(logits, targets):
            calls["n"] += 1
            value = loss(logits, targets)
            return value * float("nan") if calls["n"] > 19 else value  # epoch 1 has 19 steps
        return forward
    monkeypatch.setattr(engine.train.state, "build_loss", nan_in_epoch_2)
    recipe = digits_recipe(digits_dir, tmp_path, epochs=3, max_bad_steps=4)
    with pytest.raises(preempt.Diverged, match="5 consecutive non-finite updates at epoch 2, step 5"):
        train(recipe, show_progress=False)
    last = weights(next(tmp_path.glob("*/*")))
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values()
                                      if v.is_floating_point())  # the last good checkpoint is kept


def test_sigterm_to_the_process_group_checkpoints_and_says_how_to_resume(digits_dir, tmp_path):
    out = tmp_path / "runs"
    args = [sys.executable, "train.py", "--no-progress", "model=test_resnet", f"data_dir='{digits_dir}/train'",
            f"train_csv='{digits_dir}/train.csv'", "image_size=32", "batch_size=4", "epochs=50",
            "num_workers=1", f"output_dir='{out}'"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 60
    while not list(out.glob("*/*/train.log")) or "fold 0:" not in next(out.glob("*/*/train.log")).read_text():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    time.sleep(2)  # mid-epoch: an epoch has ~300 steps
    os.killpg(proc.pid, signal.SIGTERM)  # like torchrun and SLURM: the whole group, data workers too
    stdout, _ = proc.communicate(timeout=60)
    run_dir = next(out.glob("*/*"))
    assert proc.returncode == 128 + signal.SIGTERM
    assert f"resume with: python train.py --resume {run_dir}" in stdout
    progress = checkpoint.load_checkpoint(run_dir / "fold0" / "last.pt")["progress"]
    assert progress["step"] > 0 and not progress["finished"]


def test_an_exception_out_of_training_leaves_no_data_worker_behind(digits_dir, tmp_path):
    # workers ignore SIGTERM (see above), so the engine must end them itself, or exit would hang
    code = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
from engine.train.orchestrator import train
from tests.conftest import digits_recipe
from pathlib import Path
def prune(row): raise RuntimeError("pruned")
try:
    train(digits_recipe(Path({str(digits_dir)!r}), Path({str(tmp_path)!r}), num_workers=1, epochs=3), on_epoch=prune,
          show_progress=False)
except RuntimeError as e:
    print("caught", e)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "caught pruned" in out.stdout, out.stderr[-2000:]
