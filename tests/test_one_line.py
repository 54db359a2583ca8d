"""Issue 23, section 6: one line instead of a traceback or a late surprise (each fails on the code before)."""
from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest

from conftest import ROOT, digits_recipe
from engine.errors import UserError


def test_a_cam_page_on_a_full_disk_is_one_line_and_leaves_no_empty_png(tmp_path, monkeypatch):
    import matplotlib.figure
    from engine.cam import figures
    from engine.system.atomic import DiskFull

    def full(self, f, **kwargs):
        f.write(b"\x89PNG")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    fig = figures.plt.figure()
    with pytest.raises(DiskFull, match="disk full writing"):
        figures._save(fig, tmp_path / "a_cam.png")
    assert not list(tmp_path.iterdir())


def test_a_run_name_too_long_for_a_folder_is_refused():
    from engine import run_folder
    with pytest.raises(UserError, match="--name is 300 characters"):
        run_folder.check_run_name("a" * 300)


def test_a_journal_in_a_read_only_folder_is_one_line(tmp_path, monkeypatch):
    import os
    from engine.sweep.storage import open_storage
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a non-root user sees chmod 555
    with pytest.raises(UserError, match="read-only"):
        open_storage(f"journal:{tmp_path / 'sweep.log'}", 60)


def test_a_storage_error_never_prints_the_password():
    from engine.sweep.storage import open_storage
    with pytest.raises(UserError) as e:
        open_storage("postgresql://me:s3cret-pw@127.0.0.1:1/db", 60)
    assert "s3cret-pw" not in str(e.value) and "me:***@127.0.0.1" in str(e.value)


def test_count_zero_is_refused_before_anything_runs(tmp_path):
    from engine.recipe import load_recipe
    from engine.sweep.command import run_sweep
    sweep = {"method": "random", "metric": {"name": "val_loss", "goal": "minimize"},
             "parameters": {"lr": {"values": [0.1, 0.01]}}}
    recipe = load_recipe(None, dict(name="fake", output_dir=str(tmp_path), sweep=sweep))
    with pytest.raises(UserError, match="--count .* at least 1, got 0"):
        run_sweep(recipe, count=0)


def test_val_fraction_zero_with_folds_is_refused():
    from engine.recipe import load_recipe
    with pytest.raises(UserError, match="val_fraction=0 .* needs folds=1"):
        load_recipe(None, dict(folds=5, val_fraction=0.0))


def test_dry_run_refuses_what_the_real_run_refuses(digits_dir, tmp_path):
    from engine.train.orchestrator import train
    with pytest.raises(UserError, match="cannot take image_size=50"):
        train(digits_recipe(digits_dir, tmp_path, model="test_vit", image_size=50), dry_run=True, show_progress=False)
    with pytest.raises(UserError, match="--name"):
        train(digits_recipe(digits_dir, tmp_path), name="../up", dry_run=True, show_progress=False)


def test_a_failed_start_leaves_no_run_folder(digits_dir, tmp_path):
    import pandas as pd
    from engine.train.orchestrator import train
    csv = tmp_path / "train.csv"
    pd.read_csv(digits_dir / "train.csv").groupby("target").head(4).to_csv(csv, index=False)
    for bad in (dict(model="test_vit", image_size=50), dict(pretrained_path=str(csv))):
        with pytest.raises(UserError):
            train(digits_recipe(digits_dir, tmp_path / "runs", train_csv=str(csv), epochs=1, **bad), show_progress=False)
    assert not list((tmp_path / "runs").glob("*/*"))


def test_a_failed_background_write_stops_the_run_at_its_next_step(tmp_path, monkeypatch):
    from engine import checkpoint
    from engine.system import preemption

    def failing(obj, path):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpoint, "save_atomic", failing)
    preemption.install()
    try:
        writer = checkpoint.CheckpointWriter()
        writer.submit([({"x": 1}, tmp_path / "last.pt")])
        writer._thread.join()  # the write is over; the training thread has not asked yet
        assert preemption.requested()  # the loop stops at its next update (it reads this flag every step)...
        with pytest.raises(OSError, match="Input/output"):
            writer.join()  # ...and its last.pt write raises the error there, an epoch early
    finally:
        preemption.uninstall()


def test_a_closed_pipe_ends_a_command_without_a_traceback():
    """`python -m engine.runs | head`: the reader closed the pipe; exit 141 (as a shell would), no traceback."""
    import subprocess
    import sys
    code = ("from engine.errors import run_command, exit_process\n"
            "exit_process(run_command(lambda: [print('x' * 100) for _ in range(100000)]))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in proc.stderr.read().decode()


def test_a_header_only_test_csv_is_refused_instead_of_an_empty_output(tmp_path):
    from engine.data.tables.read import read_test_table
    csv = tmp_path / "test.csv"
    csv.write_text("image_path\n")
    with pytest.raises(UserError, match="has no rows"):
        read_test_table(str(tmp_path), str(csv))


def test_a_journal_where_no_file_can_be_made_is_one_line(monkeypatch):
    from engine.sweep import storage
    monkeypatch.setattr(storage, "check_journal_path", lambda url, path: None)  # /proc passes access() as root
    with pytest.raises(UserError, match="cannot create the journal there"):
        storage.open_storage("journal:/proc/sweep.log", 60)


def test_predict_batch_size_zero_names_only_what_is_wrong(capsys):
    import predict
    assert predict.main(["--batch-size", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --batch-size must be at least 1, got 0"
