"""Issue 32, item 1: every file a command writes goes through the one output guard (engine/system/outputs.py).

The first test enumerates every module that writes a file and fails when a new writer appears unlisted; the
others point each writer whose target a user can steer at every protected kind of file (a recipe, an image, a
checkpoint, a run file, a folder, the user's own file of another extension) and check nothing changed."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, digits_recipe
from engine import run_folder
from engine.errors import run_command

WRITE = re.compile(r"\b(write_text|write_csv|write_atomic|save_atomic|save_json|savefig|to_csv|np\.save|torch\.save)\(")
# module -> how its writes are kept off what the user owns: "guard" (a command whose OutputGuard checks every
# target before its writers run) or why the engine alone owns the path it writes
WRITERS = {
    "engine/runs/command.py": "guard",  # runs --html
    "engine/train/lr_find.py": "guard",  # runs/<recipe>/lr_find.png
    "engine/sweep/command.py": "guard",  # runs/sweeps/<name>/ results
    "engine/predict/command.py": "guard",  # --out and the files beside it
    "engine/cam/command.py": "guard",  # --out folder, cams.csv
    "engine/explore/analysis.py": "guard",  # --out folder, --write-clean
    "engine/evaluate/report_figures.py": "guard",  # report files next to the predictions
    "engine/system/outputs.py": "the guard's own ledger",
    "engine/system/atomic.py": "the atomic writer every other module calls",
    "engine/checkpoint.py": "best.pt / last.pt inside the run's fold folder",
    "engine/recipe/files.py": "recipe.json of a new run folder",
    "engine/run_folder.py": "recipe.json of a run folder it has just created",
    "engine/evaluate/oof.py": "oof.csv / oof_metrics.json inside the run folder",
    "engine/evaluate/label_issues.py": "label_issues.csv inside the run folder",
    "engine/evaluate/predictions.py": "val_predictions.csv / val_probs.npy inside the fold folder",
    "engine/evaluate/ensemble.py": "ensemble files next to predict's output, checked by predict's guard first",
    "engine/evaluate/ensemble_plot.py": "ensemble_per_class.png, checked by predict's guard first",
    "engine/train/split_record.py": "split.csv inside the run folder",
    "engine/data/tables/near_duplicates.py": "a hash cache in the engine's cache folder",
    "engine/data/tables/demo_digits.py": "the demo data set, built once into its own new folder",
    "engine/explore/facts.py": "a facts cache in the engine's cache folder",
    "engine/explore/findings.py": "--write-clean's file, checked by analysis.py's guard",
    "engine/explore/report_page.py": "explore's page, checked by analysis.py's guard",
    "engine/explore/plots.py": "explore's plots, checked by analysis.py's guard",
    "engine/explore/augment_preview.py": "augment.png, checked by explore's guard",
    "engine/cam/figures.py": "cam pages, checked by cam's guard",
    "engine/sweep/results.py": "sweep results, checked by sweep's guard",
    "engine/runs/html_page.py": "the runs page, checked by --html's guard",
    "engine/data/stores/image_store.py": "the image cache in the engine's cache folder",
    "engine/data/stores/feature_store.py": "feature stores in the engine's cache folder",
    "engine/train/run_log.py": "train.log / the W&B id inside the run folder",
}


def test_every_module_that_writes_a_file_is_listed_and_the_guarded_ones_use_the_guard():
    found = set()
    for path in [*ROOT.glob("engine/**/*.py"), *ROOT.glob("*.py")]:
        if WRITE.search(path.read_text()):
            found.add(path.relative_to(ROOT).as_posix())
    unlisted = sorted(found - set(WRITERS))
    assert not unlisted, f"new writers: route their targets through engine/system/outputs.py and list them: {unlisted}"
    stale = sorted(m for m, how in WRITERS.items() if how != "guard" and m not in found)
    assert not stale, f"listed modules that no longer write: drop them from WRITERS: {stale}"
    for module, how in WRITERS.items():
        if how == "guard":
            assert "Guard" in (ROOT / module).read_text() or "guard" in (ROOT / module).read_text(), module


KINDS = {"recipe": b"lr = 1e-3\n", "image": None, "checkpoint": None, "run file": None, "own file": b"notes\n",
         "folder": None}


@pytest.fixture(scope="module")
def run_copy(trained_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("writers") / "runs" / "digits" / trained_run.name
    shutil.copytree(trained_run, out)
    return out


def place(kind: str, path: Path, run: Path, digits_dir: Path) -> Path:
    """Put a protected `kind` of thing at `path` (or return the real one for a run file / checkpoint)."""
    if kind == "run file":
        return run / run_folder.RECIPE if path is None else _copy(run / run_folder.RECIPE, path)
    if kind == "checkpoint":
        return run / "fold0" / run_folder.LAST if path is None else _copy(run / "fold0" / run_folder.LAST, path)
    path = path or Path(str(run.parent.parent.parent / "mine") + {"recipe": ".py", "image": ".png",
                                                                     "own file": ".txt", "folder": ""}[kind])
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "folder":
        path.mkdir(exist_ok=True)
    elif kind == "image":
        shutil.copy(digits_dir / "test" / "00000.png", path)
    else:
        path.write_bytes(KINDS[kind])
    return path


def _copy(source: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, path)
    return path


def state(path: Path) -> object:
    return path.read_bytes() if path.is_file() else sorted(p.name for p in path.iterdir()) if path.is_dir() else None


def html(target: Path, run: Path, digits_dir: Path, tmp_path: Path) -> int:
    from engine.runs.__main__ import main
    return main([str(run.parent.parent), "--html", str(target)])


def predict_out(target: Path, run: Path, digits_dir: Path, tmp_path: Path) -> int:
    import predict
    csv = tmp_path / "test.csv"
    pd.read_csv(digits_dir / "test.csv").head(4).to_csv(csv, index=False)
    return predict.main([str(run), "--test-csv", str(csv), "--test-dir", str(digits_dir / "test"), "--out",
                         str(target), "--no-progress", "--workers", "0"])


def lr_plot(target: Path, run: Path, digits_dir: Path, tmp_path: Path) -> int:
    from engine.train.lr_find import find_lr
    recipe = digits_recipe(digits_dir, target.parent.parent, name=target.parent.name)
    return run_command(lambda: find_lr(recipe, 8, show_progress=False))


# writer -> (how to run it at a target, the fixed path it writes, relative to tmp_path; None: the user names it)
STEERED = {"runs --html": (html, None), "predict --out": (predict_out, None),
           "--find-lr lr_find.png": (lr_plot, "runs/lrtest/lr_find.png")}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("writer", STEERED)
def test_no_writer_replaces_what_the_user_owns(writer, kind, run_copy, digits_dir, tmp_path, capsys):
    call, fixed = STEERED[writer]
    target = place(kind, tmp_path / fixed if fixed else None, run_copy, digits_dir)
    before = state(target)
    capsys.readouterr()
    assert call(target, run_copy, digits_dir, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "e.g." in err, err  # why, and which new path to use
    assert state(target) == before
