"""Two machines, as torchrun sees them: `--nnodes=2 --node_rank=0/1` over loopback (one gloo process per
node) train the digits into one run folder. Each node's local rank 0 builds its own memory cache; only
global rank 0 writes; SIGTERM to one node stops both with last.pt written, and --resume on both nodes
finishes the run. Slow: two launches of two torchrun nodes (about 40 s on 2 idle cores)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from engine.data.stores.image_cache import MEMORY_PREFIX, memory_cache_root, namespace_tag
from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nodes(args: list[str], out: Path, tag: str) -> list[subprocess.Popen]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
    nodes = []
    for rank in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}",
               "--master_addr=127.0.0.1", f"--master_port={port}", "--nproc_per_node=1", "train.py", *args]
        nodes.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(out / f"{tag}{rank}.log", "w"),
                                      stderr=subprocess.STDOUT))
    return nodes


@contextlib.contextmanager
def reaped(nodes: list[subprocess.Popen]):
    """The nodes, killed on the way out if still running (a failed assertion must not leave them training)."""
    try:
        yield nodes
    finally:
        for n in nodes:
            if n.poll() is None:
                n.kill()


def stores() -> set[str]:
    return {p.name for p in memory_cache_root().glob(f"{MEMORY_PREFIX}{namespace_tag()}-*")}


@pytest.mark.slow
def test_two_nodes_train_one_run_and_sigterm_to_one_stops_both(digits_dir, tmp_path):
    out = tmp_path / "runs"
    args = ["--no-progress", "--name", "two_nodes", "model=test_resnet", f"data_dir='{digits_dir}/train'",
            f"train_csv='{digits_dir}/train.csv'", "image_size=32", "batch_size=32", "epochs=2", "num_workers=0",
            "cache='memory'", f"output_dir='{out}'"]
    before = stores()
    nodes = start_nodes(args, tmp_path, "first")
    seen: set[str] = set()
    with reaped(nodes):
        metrics = None
        deadline = time.time() + 180
        while time.time() < deadline:
            seen |= stores() - before
            found = list(out.glob("*/*/fold0/metrics.csv"))
            if found and len(pd.read_csv(found[0])) >= 1:  # epoch 1 done: stop the second in its middle
                metrics = found[0]
                break
            assert all(n.poll() is None for n in nodes), (tmp_path / "first0.log").read_text()[-3000:]
            time.sleep(0.2)
        assert metrics is not None, (tmp_path / "first0.log").read_text()[-3000:]
        time.sleep(0.5)
        nodes[1].send_signal(signal.SIGTERM)  # the second machine is pre-empted
        codes = [n.wait(timeout=120) for n in nodes]
    log0 = (tmp_path / "first0.log").read_text()
    assert all(c != 0 for c in codes), codes  # both nodes stopped, neither trained on alone
    assert "last.pt written" in log0 and "resume with: python train.py --resume" in log0, log0[-3000:]
    assert len(seen) == 2, seen  # one memory store per node (the nodes' launchers differ), built by local rank 0
    assert not (stores() - before)  # and both removed when their node stopped

    run_dirs = list(out.glob("*/*-two_nodes"))
    assert len(run_dirs) == 1  # one run folder for both nodes
    run = run_dirs[0]
    last = torch.load(run / "fold0" / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and last["progress"]["step"] > 0, (last["epoch"], last["progress"])
    assert list(pd.read_csv(run / "fold0" / "metrics.csv")["epoch"]) == [1]  # only rank 0 writes rows

    with reaped(start_nodes([*args[:1], "--resume", str(run)], tmp_path, "resume")) as nodes:
        codes = [n.wait(timeout=180) for n in nodes]
    log0 = (tmp_path / "resume0.log").read_text()
    assert codes == [0, 0], log0[-3000:] + (tmp_path / "resume1.log").read_text()[-2000:]
    assert list(out.glob("*/*")) == [run]
    assert list(pd.read_csv(run / "fold0" / "metrics.csv")["epoch"]) == [1, 2]
    assert log0.count("epoch   2/2") == 1 and "epoch   2/2" not in (tmp_path / "resume1.log").read_text()
    assert torch.load(run / "fold0" / "last.pt", weights_only=True)["epoch"] == 2
    assert (run / "fold0" / "best.pt").is_file() and (run / "recipe.json").is_file()
