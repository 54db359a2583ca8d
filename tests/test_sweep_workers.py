"""Sweeps across machines: two real `sweep.py` workers on one study (a private PostgreSQL server, or a
journal file), one killed with SIGKILL in the middle of a trial. The survivor fails the dead trial by
its heartbeat and re-runs it; run_cap holds across both; best_recipe.py names the true best. Slow-ish:
each test starts 2 worker processes and trains 4 tiny trials."""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from tests.conftest import ROOT

RUN_CAP = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep_recipe(digits_dir: Path, tmp: Path) -> Path:
    """A 3-trial random sweep of lr on 150 digits: each trial is three short epochs of test_resnet."""
    table = pd.read_csv(digits_dir / "train.csv").groupby("target").head(15)
    table.to_csv(tmp / "train150.csv", index=False)
    path = tmp / "tiny_sweep.py"
    path.write_text(f"""model = "test_resnet"
data_dir = {str(digits_dir / 'train')!r}
train_csv = {str(tmp / 'train150.csv')!r}
image_size, batch_size, epochs, num_workers, lr = 32, 30, 3, 0, 3e-3
output_dir = {str(tmp / 'runs')!r}
sweep = {{"method": "random", "metric": {{"name": "val_acc", "goal": "maximize"}}, "run_cap": {RUN_CAP},
         "parameters": {{"lr": {{"distribution": "log_uniform_values", "min": 1e-3, "max": 3e-2}}}}}}
""")
    return path


def start_worker(recipe: Path, storage: str, log: Path, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, "sweep.py", str(recipe), "--storage", storage, "--heartbeat", "1", "--count", "10",
           "--name", "shared", *(["--resume"] if resume else [])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


TRAINING = re.compile(r"trial (\d+): lr=[^\n]*\n(?:(?!trial \d+: )[^\n]*\n)*fold 0: [^\n]*\n(?:(?!trial \d+: |epoch +3/3)[^\n]*\n?)*\Z")


def wait_for(log: Path, pattern, proc: subprocess.Popen, timeout: float = 180) -> int:
    """Wait until the worker's log matches; the match's first group as int (or 0)."""
    end = time.time() + timeout
    while time.time() < end:
        found = re.search(pattern, log.read_text())
        if found:
            return int(found.group(1)) if found.groups() else 0
        assert proc.poll() is None, f"worker exited early:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in time:\n{log.read_text()[-3000:]}")


def kill_one_worker_mid_trial(digits_dir: Path, tmp: Path, storage: str) -> optuna.Study:
    """Worker A creates the sweep, B joins; once both train, A is killed -9 as a trial's first epoch starts."""
    recipe = sweep_recipe(digits_dir, tmp)
    a = start_worker(recipe, storage, tmp / "a.log", resume=False)
    b = None
    try:
        wait_for(tmp / "a.log", r"trial 0: ", a)
        b = start_worker(recipe, storage, tmp / "b.log", resume=True)
        wait_for(tmp / "b.log", r"trial \d+: lr", b, timeout=240)
        killed = wait_for(tmp / "a.log", TRAINING, a, timeout=240)  # both workers in a trial now
        a.send_signal(signal.SIGKILL)
        a.wait()
        assert b.wait(timeout=400) == 0, (tmp / "b.log").read_text()[-3000:]
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
    study = optuna.load_study(study_name="shared", storage=open_for_reading(storage))
    dead = study.trials[killed]
    assert dead.state == TrialState.FAIL
    reruns = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(reruns) == 1 and reruns[0].state == TrialState.COMPLETE and reruns[0].params == dead.params
    assert f"re-run of trial {killed}" in (tmp / "b.log").read_text()
    # run_cap across both workers: exactly RUN_CAP trials count (the dead one is replaced by its re-run)
    counted = [t for t in study.trials if t.number != killed and not t.user_attrs.get("skipped")]
    assert len(counted) == RUN_CAP and all(t.state == TrialState.COMPLETE for t in counted)
    # every trial number names at most one run folder, and each finished trial has its own
    folders = sorted(Path(p).name.split("-t")[-1] for p in glob.glob(str(tmp / "runs/tiny_sweep/*-sweep-shared-t*")))
    assert len(folders) == len(set(folders)) == RUN_CAP + 1  # + the dead trial's half-trained folder
    best = max(counted, key=lambda t: t.value)
    header = (tmp / "runs/sweeps/shared/best_recipe.py").read_text().splitlines()[0]
    assert header == f"# best trial {best.number} of sweep 'shared': val_acc = {best.value:.4f}", header
    rows = pd.read_csv(tmp / "runs/sweeps/shared/trials.csv")
    assert sorted(rows["trial"]) == sorted(t.number for t in study.trials if not t.user_attrs.get("skipped"))
    assert "stopped sending heartbeats" in rows.set_index("trial").loc[killed, "error"]
    return study


def open_for_reading(storage: str):
    from engine.sweep.storage import open_storage
    return open_storage(storage, 60)


@pytest.mark.slow
def test_journal_file_workers_survive_a_killed_worker(digits_dir, tmp_path):
    kill_one_worker_mid_trial(digits_dir, tmp_path, f"journal:{tmp_path / 'sweep.log'}")


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
    return Path(found[-1]).parent if found[-1] else None


@pytest.fixture
def postgres_url():
    """A private PostgreSQL cluster in a temp folder on a free port, removed afterwards."""
    bin_dir = postgres_bin()
    try:
        import psycopg  # noqa: F401
    except ImportError:
        bin_dir = None
    if bin_dir is None:
        pytest.skip("PostgreSQL test skipped: no PostgreSQL server or psycopg here (apt-get install postgresql; "
                    "pip install -r requirements.txt; .ci/run does both)")
    folder = Path(tempfile.mkdtemp(prefix="sketchbook-pg-"))
    user = {}
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the postgres account
        import pwd
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            pytest.skip("PostgreSQL test skipped: running as root and there is no 'postgres' account to run the server")
        os.chown(folder, account.pw_uid, account.pw_gid)
        user = {"user": account.pw_uid, "group": account.pw_gid}
    port, data = free_port(), folder / "data"

    def pg(*args: str) -> None:
        subprocess.run([str(bin_dir / args[0]), *args[1:]], check=True, capture_output=True, timeout=120,
                       cwd=folder, **user)
    try:
        pg("initdb", "-D", str(data), "-A", "trust", "-U", "sketch", "--no-sync")
        pg("pg_ctl", "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60", "start", "-o",
           f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off")
        yield f"postgresql://sketch@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_postgresql_workers_survive_a_killed_worker(digits_dir, tmp_path, postgres_url):
    kill_one_worker_mid_trial(digits_dir, tmp_path, postgres_url)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_silent_workers_trial_is_failed_re_run_once_and_run_cap_holds(tmp_path, monkeypatch, kind):
    """In-process and fast: a trial left RUNNING by a worker that stopped sending heartbeats."""
    import engine.sweep.command as sweep_mod
    from engine.sweep.command import run_sweep
    from engine.sweep.storage import open_storage
    from test_sweep import LR, base_recipe, fake_trainer
    calls: list = []
    monkeypatch.setattr(sweep_mod, "run_in_process", fake_trainer(calls))
    storage = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'study.log'}"
    recipe = base_recipe(tmp_path, {"method": "random", "metric": {"name": "val_acc", "goal": "maximize"},
                                    "run_cap": 3, "parameters": {"lr": LR}})
    run_sweep(recipe, count=1, storage=storage, heartbeat_s=1, log=lambda *a: None)  # trial 0
    study = optuna.load_study(study_name="fake", storage=open_storage(storage, 1))
    with warnings.catch_warnings():  # "heartbeat is meant for optimize": here we play the dead worker by hand
        warnings.simplefilter("ignore")
        dead = study.ask()  # trial 1: its worker beat once, then died
    lr = dead.suggest_float("lr", LR["min"], LR["max"], log=True)
    study._storage.record_heartbeat(dead._trial_id)
    time.sleep(4.5)  # > 3 heartbeats (SQLite's clock has 1 s steps)
    rows = pd.read_csv(run_sweep(recipe, count=10, storage=storage, resume=True, heartbeat_s=1,
                                 log=lambda *a: None) / "trials.csv")
    assert rows["trial"].tolist() == [0, 1, 2, 3] and len(calls) == 3  # run_cap 3: trials 0, 2 and 3 trained
    assert rows["state"].tolist() == ["complete", "fail", "complete", "complete"]
    assert "re-run as trial 2" in rows.loc[1, "error"] and rows.loc[2, "lr"] == lr  # the same values again
