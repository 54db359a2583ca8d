"""Issue 23, section 3: a run never continues on other data without saying so; what the audit and the
background measure is said, not silently averaged (each test fails on the code before its fix)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import digits_recipe
from engine import run_folder
from engine.errors import UserError


def quick(digits_dir: Path, csv: Path, out: Path, **changes):
    return digits_recipe(digits_dir, out, **{**dict(train_csv=str(csv), epochs=1, image_size=16, batch_size=32,
                                                      folds=3), **changes})


@pytest.mark.parametrize("edit", ["drop rows", "relabel"])
def test_resume_and_another_fold_refuse_changed_data(digits_dir, tmp_path, edit):
    from engine.train.orchestrator import train
    csv = tmp_path / "train.csv"
    table = pd.read_csv(digits_dir / "train.csv").groupby("target").head(8)
    table.to_csv(csv, index=False)
    recipe = quick(digits_dir, csv, tmp_path / "runs")
    run = train(recipe, fold=0, name="cv", show_progress=False)
    recorded = pd.read_csv(run / run_folder.SPLIT)
    assert len(recorded) == len(table) and set(recorded["fold"]) == {0, 1, 2}
    if edit == "drop rows":
        table = table.iloc[5:]
    else:
        table = table.assign(target=table["target"].where(table.index != table.index[3], (table["target"] + 1) % 10))
        table["class_name"] = table["target"].map(dict(zip(table["target"], table["class_name"])))
    table.to_csv(csv, index=False)
    with pytest.raises(UserError, match="no longer hold the same rows"):
        train(recipe, fold=1, name="cv", show_progress=False)  # --fold 1, as on another machine
    with pytest.raises(UserError, match="no longer hold the same rows"):
        train(None, resume=str(run), show_progress=False)
    assert not run_folder.fold_dir(run, 1).exists() or not (run_folder.fold_dir(run, 1) / run_folder.LAST).exists()


@pytest.mark.parametrize("edit", ["swap folds", "delete rows"])
def test_a_split_csv_edited_since_last_pt_is_named_on_resume(digits_dir, tmp_path, edit):
    from engine.train.orchestrator import train
    csv = tmp_path / "train.csv"
    pd.read_csv(digits_dir / "train.csv").groupby("target").head(8).to_csv(csv, index=False)
    run = train(quick(digits_dir, csv, tmp_path / "runs"), fold=0, name="cv", show_progress=False)
    split = pd.read_csv(run / run_folder.SPLIT)
    if edit == "swap folds":
        split["fold"] = split["fold"].map({0: 1, 1: 0, 2: 2})
    else:
        split = split.iloc[4:]
    split.to_csv(run / run_folder.SPLIT, index=False)
    with pytest.raises(UserError, match=r"split\.csv changed since .*fold0/last\.pt was trained on it") as e:
        train(None, resume=str(run), show_progress=False)
    assert "train.csv" not in str(e.value)  # the file that changed is named, not the one that did not


def test_the_recorded_split_wins_over_a_new_assignment(tmp_path):
    from engine.train.split_record import keep_split
    from engine.system.distributed import Dist
    table = pd.DataFrame({"image_path": [f"{i}.png" for i in range(6)], "target": [0, 1] * 3, "fold": [0, 1, 2] * 2})
    d = Dist()
    assert keep_split(tmp_path, table, "train.csv", d)["fold"].tolist() == [0, 1, 2] * 2
    moved = table.assign(fold=[2, 2, 1, 1, 0, 0]).iloc[::-1]  # another machine split (and ordered) otherwise
    kept = keep_split(tmp_path, moved, "train.csv", d)
    assert dict(zip(kept["image_path"], kept["fold"])) == dict(zip(table["image_path"], table["fold"]))


def test_mixed_paper_colours_are_said_with_the_fill(tmp_path):
    from PIL import Image
    from engine.data.pixels.background import measure_background
    paths = []
    for i in range(12):
        paper, ink = (255, 0) if i % 2 else (0, 255)  # half white paper, half black
        arr = np.full((40, 40), paper, np.uint8)
        arr[15:25, 10:30] = ink
        Image.fromarray(arr).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    said = measure_background(paths).describe()
    assert "warning: the paper colour is mixed (black 6, white 6 of 12 images)" in said or \
        "warning: the paper colour is mixed (white 6, black 6 of 12 images)" in said
    assert "use grey (128, 128, 128)" in said  # what the fill will be
    assert "mixed" not in measure_background(paths[1::2]).describe()  # one paper colour: nothing to say


def test_a_class_whose_every_row_is_rejected_is_warned(tmp_path):
    from PIL import Image
    from engine.data.tables.audit import apply_audit_policy, audit_table
    from engine.data.tables.read import read_train_table
    rows = []
    for cls, t in (("ant", 0), ("bee", 1), ("cow", 2)):
        (tmp_path / cls).mkdir()
        for i in range(3):
            if cls != "bee":  # every bee image is missing
                Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / cls / f"{i}.png")
            rows.append((cls, f"{cls}/{i}.png", t))
    pd.DataFrame(rows, columns=["class_name", "image_path", "target"]).to_csv(tmp_path / "t.csv", index=False)
    said = []
    table = apply_audit_policy(audit_table(read_train_table(str(tmp_path), str(tmp_path / "t.csv"))), "skip", said.append)
    assert len(table) == 6 and any(line.startswith("warning: every row of class(es) bee was rejected") for line in said)


def test_a_blank_image_path_is_an_audit_finding_or_one_line(tmp_path):
    from engine.data.tables.audit import audit_table
    from engine.data.tables.read import read_test_table, read_train_table
    (tmp_path / "a").mkdir()
    from PIL import Image
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "a" / "0.png")
    (tmp_path / "t.csv").write_text("class_name,image_path,target\na,a/0.png,0\na,,0\n")
    audit = audit_table(read_train_table(str(tmp_path), str(tmp_path / "t.csv")))
    assert audit.problems["problem"].tolist() == ["empty_image_path"] and len(audit.table) == 1
    with pytest.raises(UserError, match="row 1 has an empty image_path"):
        read_test_table(str(tmp_path), str(tmp_path / "t.csv"))
