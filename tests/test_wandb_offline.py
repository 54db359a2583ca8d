"""W&B for real (no fake): with WANDB_MODE=offline the real library writes a local run. A run with
wandb="offline" is one W&B run (its folds log as fold<K>/...), whose record file holds every epoch
metric; stopped by SIGTERM and resumed, it continues the same W&B run id. Never the network: offline
mode, W&B's folders inside the test's temp folder. Slow-ish: two short trainings (~30 s on idle cores)."""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from wandb.proto import wandb_internal_pb2

from tests.conftest import ROOT

BLOCK = 32 * 1024  # W&B's transaction log: LevelDB's log format behind a 7-byte ":W&B" header


def read_records(path: Path) -> list:
    """Every record of a .wandb file, as wandb_internal_pb2.Record."""
    raw = path.read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if kind == 0:
            break
        pending += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or LAST of FIRST/MIDDLE/LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def history(records: list) -> list[dict]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): item.value_json for item in r.history.item})
    return rows


def wandb_core_processes() -> set[int]:
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"wandb-core" in (proc / "cmdline").read_bytes():
                found.add(int(proc.name))
        except OSError:
            pass
    return found


@pytest.mark.slow
def test_offline_wandb_run_holds_the_epoch_metrics_and_resume_continues_its_id(digits_dir, tmp_path):
    pd.read_csv(digits_dir / "train.csv").groupby("target").head(30).to_csv(tmp_path / "train.csv", index=False)
    out = tmp_path / "runs"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1", **{k: str(tmp_path / "wandb-home") for k in
                                      ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR")}}
    env.pop("WANDB_API_KEY", None)
    before = wandb_core_processes()
    args = ["--no-progress", "model=test_resnet", f"data_dir='{digits_dir}/train'", f"train_csv='{tmp_path}/train.csv'",
            "image_size=32", "batch_size=16", "epochs=2", "num_workers=0", "wandb='offline'", f"output_dir='{out}'"]
    first = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    while not list(out.glob("*/*/fold0/metrics.csv")) and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    first.send_signal(signal.SIGTERM)  # in epoch 2: last.pt written, W&B run finished, exit 143
    text = first.communicate(timeout=120)[0]
    assert first.returncode == 128 + signal.SIGTERM, text[-3000:]
    run = next(out.glob("*/*"))
    second = subprocess.run([sys.executable, "train.py", "--no-progress", "--resume", str(run)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]

    run_id = (run / "wandb_id").read_text().strip()
    sessions = sorted((run / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2 and all(s.name.endswith(f"-{run_id}") for s in sessions), sessions  # one run, 2 sessions
    metric_names = [c for c in pd.read_csv(run / "fold0" / "metrics.csv").columns]
    epochs = []
    for session in sessions:
        records = read_records(session / f"run-{run_id}.wandb")
        assert {r.run.run_id for r in records if r.WhichOneof("record_type") == "run"} == {run_id}
        rows = history(records)
        assert rows, f"no history in {session}"
        for row in rows:
            assert {f"fold0/{name}" for name in metric_names} <= set(row), sorted(row)
        epochs.append([int(float(row["fold0/epoch"])) for row in rows])
    assert epochs == [[1], [2]]  # the resumed session continues at epoch 2, not from the start
    deadline = time.time() + 20
    while wandb_core_processes() - before and time.time() < deadline:
        time.sleep(0.5)
    assert not wandb_core_processes() - before  # W&B's service process ended with the run
