"""A run stopped on N processes resumes on M (gloo on the CPU): the rest of the interrupted epoch is re-sharded so
every sample of it is trained on exactly once, that epoch's train loss / acc count every rank's steps, and a
SIGTERM to the launcher ends the job with 143 and one line. Slow: two launches per case (about 70 s a case on 2 cores)."""
from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.conftest import ROOT

BATCH = 32


def run_args(digits_dir: Path, out: Path) -> list[str]:
    return ["--no-progress", "--name", "world", "model=test_resnet", f"data_dir='{digits_dir}/train'",
            f"train_csv='{digits_dir}/train.csv'", "image_size=32", f"batch_size={BATCH}", "epochs=1",
            "num_workers=0", "warmup_epochs=0", f"output_dir='{out}'"]


def start(args: list[str], seen: Path, nproc: int, stop_at: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "SEEN_DIR": str(seen),
           "STOP_AT": str(stop_at)}
    script = ["tests/ddp_script.py", "record", *args]
    cmd = [sys.executable, *(["launch.py", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []), *script]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def recorded(seen: Path) -> tuple[collections.Counter, list[tuple[float, int, int]]]:
    """(how often each training sample of epoch 1 was trained on, every step's (loss x batch, correct, batch))."""
    items, steps = collections.Counter(), []
    for f in seen.glob("rank*.txt"):
        for line in f.read_text().splitlines():
            if line.startswith("loss "):
                loss, correct, n = line.split()[1:]
                steps.append((float(loss), int(correct), int(n)))
            else:
                items.update(int(i.split(":")[1]) for i in line.split() if i.startswith("0:"))
    return items, steps


def stop_then_resume(digits_dir: Path, tmp_path: Path, before: int, after: int) -> tuple[Path, str]:
    seen, out = tmp_path / "seen", tmp_path / "runs"
    seen.mkdir()
    first = start(run_args(digits_dir, out), seen, before, stop_at=6)
    assert first.returncode == 143, first.stdout[-2000:] + first.stderr[-3000:]
    assert "Traceback" not in first.stderr and "SignalException" not in first.stderr, first.stderr[-3000:]
    run = next(out.glob("*/*-world"))
    progress = torch.load(run / "fold0" / "last.pt", weights_only=True)["progress"]
    assert progress["step"] > 0, progress
    second = start(["--no-progress", "--resume", str(run)], seen, after)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert (f"world size changed: {before} -> {after} process(es)" in second.stdout) == (before != after), \
        second.stdout[-2000:]
    return run, (run / "train.log").read_text()


def check_epoch(run: Path, log: str, seen: Path, started_on: int) -> None:
    n_train = int(re.search(r"(\d+) train / \d+ val images", log).group(1))
    per_rank = -(-n_train // started_on)
    planned = per_rank // BATCH * BATCH * started_on  # what the uninterrupted epoch trains on
    items, steps = recorded(seen)
    assert set(items.values()) == {1}, collections.Counter(items.values())  # nobody twice
    assert len(items) == planned and max(items) < n_train  # nobody left out
    metrics = pd.read_csv(run / "fold0" / "metrics.csv")
    assert list(metrics["epoch"]) == [1]  # one row for the epoch
    seen_n = sum(n for _, _, n in steps)
    assert seen_n == planned
    assert metrics["train_loss"][0] == pytest.approx(sum(s for s, _, _ in steps) / seen_n, rel=1e-6)
    assert metrics["train_acc"][0] == pytest.approx(sum(c for _, c, _ in steps) / seen_n, rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (2, 2)])
def test_a_run_stopped_on_n_processes_resumes_on_m(digits_dir, tmp_path, before, after):
    run, log = stop_then_resume(digits_dir, tmp_path, before, after)
    check_epoch(run, log, tmp_path / "seen", before)
