"""Issue 23, section 5: pseudo-labels are audited like training data (each test fails on the code before)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from engine.data.tables.pseudo_labels import add_pseudo_labels, read_pseudo_labels
from engine.errors import UserError

CLASSES = ["ant", "bee"]


@pytest.fixture
def folder(tmp_path):
    """train/ant/0.png, train/bee/0.png and test/0..3.png, with a training table of the two train images."""
    for name in ("train/ant/0.png", "train/bee/0.png", *(f"test/{i}.png" for i in range(4))):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / name)
    return tmp_path


def write_probs(path, rows):
    pd.DataFrame(rows, columns=["image_path", *CLASSES]).to_csv(path, index=False)
    return str(path)


def training_table(folder):
    return pd.DataFrame({"class_name": CLASSES, "image_path": ["ant/0.png", "bee/0.png"], "target": [0, 1],
                         "path": [str(folder / "train/ant/0.png"), str(folder / "train/bee/0.png")], "fold": [0, 1]})


def test_a_pseudo_row_on_a_training_image_never_joins(folder):
    probs = write_probs(folder / "p.csv", [("../train/bee/0.png", 1.0, 0.0), ("0.png", 0.0, 1.0)])
    said = []
    rows = read_pseudo_labels(probs, str(folder / "test"), CLASSES, 0.9, log=said.append)
    table = add_pseudo_labels(training_table(folder), rows, probs, 0.9, said.append)
    assert table["pseudo"].sum() == 1 and "train/bee" not in " ".join(table.loc[table["pseudo"], "path"])
    assert any("1 rows are images of the training table" in line for line in said)


def test_an_image_listed_twice_joins_once_and_empty_rows_are_counted(folder):
    probs = write_probs(folder / "p.csv", [("0.png", 1.0, 0.0), ("0.png", 0.0, 1.0), ("1.png", None, None),
                                           ("2.png", 0.05, 0.95)])
    said = []
    rows = read_pseudo_labels(probs, str(folder / "test"), CLASSES, 0.9, log=said.append)
    assert sorted(rows["image_path"]) == ["0.png", "2.png"]
    assert any("1 rows have empty probabilities" in line for line in said)
    assert any("duplicate_row" in line for line in said)


@pytest.mark.parametrize("value, said", [(1.5, "not a probability"), (-0.5, "not a probability"),
                                         ("high", "not a number")])
def test_a_value_that_is_not_a_probability_is_one_line(folder, value, said):
    probs = write_probs(folder / "p.csv", [("0.png", 0.2, 0.8), ("1.png", value, 0.5)])
    with pytest.raises(UserError, match=f"row 1: column 'ant' = .* {said}") as e:
        read_pseudo_labels(probs, str(folder / "test"), CLASSES, 0.9)
    assert "\n" not in str(e.value)


def test_a_truncated_pseudo_image_is_dropped_before_training(folder):
    data = (folder / "test/3.png").read_bytes()
    (folder / "test/3.png").write_bytes(data[: len(data) // 2])
    probs = write_probs(folder / "p.csv", [("0.png", 1.0, 0.0), ("3.png", 1.0, 0.0)])
    said = []
    rows = read_pseudo_labels(probs, str(folder / "test"), CLASSES, 0.9, log=said.append)
    assert rows["image_path"].tolist() == ["0.png"] and any("truncated" in line for line in said)
    with pytest.raises(UserError, match="truncated"):
        read_pseudo_labels(probs, str(folder / "test"), CLASSES, 0.9, bad_images="error")
