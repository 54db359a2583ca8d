"""sync_bn=True under `torchrun --nproc_per_node=2` on CPU (gloo), where PyTorch's SyncBatchNorm refuses to
run: batch-norm statistics and gradients come from both ranks' samples, so two ranks of batch B step
exactly like one process of batch 2B; unsynced batch-norm does not (each rank normalises its own half)."""
import json

import pandas as pd
import pytest
import torch

from tests.conftest import ROOT
from tests.test_ddp import torchrun, train_args


@pytest.mark.slow
def test_synced_batch_norm_on_two_ranks_equals_one_process_on_the_whole_batch(tmp_path):
    run = torchrun([str(ROOT / "tests" / "sync_bn_script.py"), str(tmp_path / "diff.json")], timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    diff = json.loads((tmp_path / "diff.json").read_text())
    assert "AllReduceBatchNorm2d" in diff["synced"]["types"]
    assert diff["synced"]["grad"] < 1e-3 and diff["synced"]["running"] < 1e-5, diff["synced"]
    assert diff["plain"]["grad"] > 1e-2 and diff["plain"]["running"] > 1e-3, diff["plain"]  # the test can fail


@pytest.mark.slow
def test_train_py_with_sync_bn_runs_under_torchrun_on_cpu(digits_dir, tmp_path):
    pd.read_csv(digits_dir / "train.csv").head(320).to_csv(tmp_path / "train.csv", index=False)
    args = train_args(digits_dir, tmp_path / "runs", 16)
    args = [a if not a.startswith("train_csv=") else f"train_csv='{tmp_path / 'train.csv'}'" for a in args]
    run = torchrun([*args, "model=test_resnet", "sync_bn=True"])
    assert run.returncode == 0, run.stderr[-3000:]  # was: "SyncBatchNorm layers only work with GPU modules"
    ckpt = torch.load(next((tmp_path / "runs").glob("*/*/fold0/best.pt")), weights_only=True)
    import timm  # the synced model's checkpoint loads into the plain model (predict.py, cam.py)
    timm.create_model("test_resnet", num_classes=10).load_state_dict(ckpt["model"])
