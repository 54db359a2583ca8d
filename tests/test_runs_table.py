"""`python -m engine.runs`: every run folder listed with the right status, sorted, diffed and drawn as a page."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine import run_folder
from engine.errors import UserError
from engine.recipe import save_json
from engine.runs.command import recipe_diff
from engine.runs.table import collect, sort_rows
from engine.system import lock
from engine.system import preemption as preempt
from engine.train.orchestrator import train
from tests.conftest import ROOT, digits_recipe
from tests.test_resume import stop_after

FIXTURE_RUN = ROOT / "tests" / "fixtures" / "v1" / "runs" / "fixture" / "20261129-175224-v1"


@pytest.fixture(scope="module")
def runs_dir(trained_run, digits_dir, tmp_path_factory) -> Path:
    """Run folders in every state under one folder: finished (1 and 2 folds), stopped (new and old layout),
    failed, damaged; built once (only the stopped run trains, 2 updates)."""
    out = tmp_path_factory.mktemp("table") / "runs"
    shutil.copytree(trained_run, out / "digits" / "20260101-000000-finished")
    with pytest.MonkeyPatch.context() as monkeypatch, pytest.raises(preempt.Preempted):
        stop_after(monkeypatch, 2)
        train(digits_recipe(digits_dir, out, lr=1e-2, mixup_ratio=0.2), name="stopped", show_progress=False)
    cv2 = out / "digits" / "20260101-000001-cv2"  # two finished folds and their out-of-fold score
    for k in (0, 1):
        shutil.copytree(run_folder.fold_dir(trained_run, 0), run_folder.fold_dir(cv2, k))
    save_json(run_folder.read_recipe(trained_run).replace(folds=2), cv2 / run_folder.RECIPE)
    (cv2 / run_folder.OOF_METRICS).write_text('{"n": 600, "accuracy": 0.625}')
    failed = out / "digits" / "20260101-000002-failed"
    failed.mkdir()
    # what a start that crashed leaves
    save_json(run_folder.read_recipe(trained_run).replace(epochs=5), failed / run_folder.RECIPE)
    damaged = out / "digits" / "20260101-000003-damaged"
    damaged.mkdir()
    (damaged / run_folder.RECIPE).write_text("{ half written")
    shutil.copytree(FIXTURE_RUN, out / "fixture" / FIXTURE_RUN.name)
    return out


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {r["run"].split("-", 2)[-1]: r for r in rows}


def test_every_state_is_listed_with_its_status(runs_dir):
    stopped = next(runs_dir.glob("digits/*-stopped"))
    _, rows = collect(runs_dir)
    rows = by_name(rows)
    assert {k: r["status"] for k, r in rows.items()} == {"finished": "finished", "cv2": "finished", "stopped": "stopped",
                                                        "failed": "failed", "damaged": "damaged", "v1": "stopped"}
    assert rows["finished"]["folds"] == "1/1" and rows["finished"]["oof_acc"] is None  # one fold: no out-of-fold
    assert rows["finished"]["val_acc"] > 0.3 and rows["finished"]["wall"] > 0 and rows["finished"]["detail"] == ""
    assert rows["cv2"]["folds"] == "2/2" and rows["cv2"]["oof_acc"] == 0.625
    assert rows["cv2"]["wall"] == pytest.approx(2 * rows["finished"]["wall"])
    assert rows["stopped"]["folds"] == "0/1" and rows["stopped"]["oof_acc"] is None
    assert rows["stopped"]["detail"] == f"python train.py --resume {stopped}"  # stopped inside its first epoch
    assert rows["v1"]["detail"].endswith(f"epoch 1/2: python train.py --resume {runs_dir / 'fixture' / FIXTURE_RUN.name}")
    assert rows["v1"]["model"] == "test_efficientnet" and rows["v1"]["val_acc"] == pytest.approx(0.375)
    assert "no checkpoint was written" in rows["failed"]["detail"] and rows["failed"]["val_acc"] is None
    assert rows["stopped"]["differs"].startswith("lr=0.01, mixup_ratio=0.2 (vs digits/")
    assert rows["failed"]["differs"] == "epochs=5 (vs digits/20260101-000000-finished)"
    assert rows["cv2"]["differs"] == "folds=2 (vs digits/20260101-000000-finished)"


def test_a_fold_being_trained_shows_its_lock_holder(runs_dir):
    stopped = next(runs_dir.glob("digits/*-stopped"))
    with lock.exclusive(run_folder.fold_dir(stopped, 0) / run_folder.LOCK, "test"):
        row = by_name(collect(runs_dir)[1])["stopped"]
    assert row["status"] == "training" and row["detail"] == f"fold 0: pid {os.getpid()} on {socket.gethostname()}"
    assert by_name(collect(runs_dir)[1])["stopped"]["status"] == "stopped"  # released: stopped again


def test_sort_puts_the_best_score_first_and_empty_cells_last(runs_dir):
    order = [r["run"].split("-", 2)[-1] for r in sort_rows(collect(runs_dir)[1], "val_acc")]
    _, rows = collect(runs_dir)
    scores = {k: r["val_acc"] for k, r in by_name(rows).items()}
    assert set(order[-3:]) == {"failed", "damaged", "stopped"}  # no validation score yet
    assert [scores[k] for k in order[:3]] == sorted([scores[k] for k in order[:3]], reverse=True)
    assert [r["run"].split("-", 2)[-1] for r in sort_rows(rows, "run")][:3] == ["finished", "cv2", "failed"]
    with pytest.raises(UserError, match="--sort speed: not a column; pick one of run, model"):
        sort_rows(rows, "speed")


def test_diff_names_exactly_the_changed_keys(runs_dir):
    finished, stopped = runs_dir / "digits" / "20260101-000000-finished", next(runs_dir.glob("digits/*-stopped"))
    text = recipe_diff(finished, stopped)
    result_part = text.split("speed and logging only")[0]
    assert [line.split(":")[0].strip() for line in result_part.splitlines()[1:]] == ["lr", "mixup_ratio"]
    assert "lr: 0.003 -> 0.01" in text and "output_dir" in text.split("speed and logging only")[1]
    assert recipe_diff(finished, finished).splitlines()[1] == "  the same recipe"


def test_command_prints_the_table_and_writes_a_page_holding_every_row(runs_dir, tmp_path):
    page = tmp_path / "runs.html"
    done = subprocess.run([sys.executable, "-m", "engine.runs", str(runs_dir), "--sort", "val_acc", "--html", str(page)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table = done.stdout.splitlines()
    assert table[0].split()[:5] == ["run", "model", "size", "folds", "status"]
    assert table[1].startswith("digits/20260101-000000-finished") or table[1].startswith("fixture/")
    text = page.read_text()
    for name in ("digits/20260101-000000-finished", "digits/20260101-000002-failed", "fixture/20261129-175224-v1"):
        assert f"<td class=\"run\">{name}</td>" in text
    assert text.count("<tr>") == 1 + 6 and "<svg" in text and "validation accuracy" in text
    assert 'class="stopped">stopped<' in text and "python train.py --resume" in text


@pytest.fixture(scope="module")
def odd_runs(trained_run, tmp_path_factory) -> Path:
    """A good run beside three a user damaged: metrics.csv edited by hand, recipe.json deleted, last.pt truncated."""
    out = tmp_path_factory.mktemp("odd") / "runs"
    for name in ("good", "edited", "norecipe", "truncated"):
        shutil.copytree(trained_run, out / "digits" / f"20260101-00000{len(name) % 10}-{name}")
    edited = next(out.glob("digits/*-edited")) / "fold0" / run_folder.METRICS
    edited.write_text(edited.read_text().replace("\n1,", "\nn/a,", 1).replace(",0.", ",oops,", 3))
    (next(out.glob("digits/*-norecipe")) / run_folder.RECIPE).unlink()
    last = next(out.glob("digits/*-truncated")) / "fold0" / run_folder.LAST
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    return out


def test_one_bad_folder_is_one_damaged_row_and_never_stops_the_table(odd_runs):
    rows = by_name(collect(odd_runs)[1])
    assert set(rows) == {"good", "edited", "norecipe", "truncated"}
    assert rows["good"]["status"] == "finished" and rows["edited"]["status"] == "finished"
    assert rows["norecipe"]["status"] == "damaged" and "recipe.json is missing" in rows["norecipe"]["detail"]
    truncated = next(odd_runs.glob("digits/*-truncated"))
    assert rows["truncated"]["status"] == "damaged"
    assert "last.pt is damaged" in rows["truncated"]["detail"] and f"--resume {truncated}" in rows["truncated"]["detail"]


def test_resuming_a_truncated_last_pt_names_the_way_on(odd_runs, capsys):
    from engine.errors import run_command
    truncated = next(odd_runs.glob("digits/*-truncated"))
    assert run_command(lambda: train(None, resume=str(truncated), show_progress=False)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "move" in err and "from its start" in err


PROTECTED = {"recipe": "recipes/mine.py", "image": "data/00000.png", "csv": "data/train.csv",
             "own page": "notes.html", "checkpoint": "fold0/last.pt", "run file": "recipe.json"}


@pytest.mark.parametrize("kind", [*PROTECTED, "folder"])
def test_html_never_replaces_a_file_it_did_not_write(odd_runs, tmp_path, kind, capsys):
    from engine.runs.__main__ import main
    good = next(odd_runs.glob("digits/*-good"))
    if kind == "folder":
        target = tmp_path
    elif kind in ("checkpoint", "run file"):
        target = good / PROTECTED[kind]
    else:
        target = tmp_path / PROTECTED[kind]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"\x89PNG mine" if kind == "image" else b"mine\n")
    before = target.read_bytes() if target.is_file() else None
    assert main([str(odd_runs), "--html", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--html" in err and "e.g." in err
    assert (target.read_bytes() if target.is_file() else None) == before


def test_html_replaces_its_own_page_and_writes_it_before_the_table(odd_runs, tmp_path):
    page = tmp_path / "runs.html"
    command = [sys.executable, "-m", "engine.runs", str(odd_runs), "--html", str(page)]
    assert subprocess.run(command, cwd=ROOT, capture_output=True, timeout=120).returncode == 0
    page.write_text(page.read_text().replace("<h1>", "<h1>EARLIER-PAGE "))  # a page of an earlier version: still its own
    piped = subprocess.run(" ".join(command) + " | head -1", shell=True, cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert piped.stdout.startswith("run ") and "EARLIER-PAGE" not in page.read_text() and "truncated" in page.read_text()
