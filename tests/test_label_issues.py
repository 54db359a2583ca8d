"""Label issues of a k-fold run (label_issues.csv, its gallery and summary line) and the clean-and-retrain
loop's first half: `python -m engine.explore --write-clean PATH --drop label_issues.csv [--relabel]`."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import digits_recipe
from engine import run_folder
from engine.evaluate import label_issues
from engine.evaluate.report_figures import make_report
from engine.explore.__main__ import main as explore_main
from engine.recipe import save_json


def fake_kfold_run(tmp_path, digits_dir, noise: float, n: int = 1000, classes: int = 10, seed: int = 0):
    """A run folder whose out-of-fold model is right about the true labels, with `noise` of the given labels
    flipped at random; returns (run folder, the flipped image paths)."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % classes
    logits = rng.normal(0, 1.0, (n, classes))
    logits[np.arange(n), truth] += 5.0  # about 99% right, as a good model on the digits
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    given = truth.copy()
    flipped = rng.choice(n, int(noise * n), replace=False)
    given[flipped] = (truth[flipped] + rng.integers(1, classes, len(flipped))) % classes
    run_dir = tmp_path / "runs" / "digits" / "20260101-000000"
    run_dir.mkdir(parents=True)
    save_json(digits_recipe(digits_dir, tmp_path, folds=5), run_dir / run_folder.RECIPE)
    paths = [f"c{t}/{i:05d}.png" for i, t in enumerate(given)]
    pd.DataFrame({"image_path": paths, "target": given, "class_name": [f"c{t}" for t in given],
                  "pred": probs.argmax(1), "pred_name": [f"c{p}" for p in probs.argmax(1)],
                  "confidence": probs.max(1), "top5": [" ".join(map(str, np.argsort(-p)[:5])) for p in probs],
                  "fold": np.arange(n) % 5}).to_csv(run_dir / run_folder.OOF, index=False)
    np.save(run_dir / run_folder.OOF_PROBS, probs.astype(np.float16))
    return run_dir, {paths[i] for i in flipped}


def test_report_finds_the_flipped_labels_with_high_precision_and_recall(tmp_path, digits_dir):
    run_dir, flipped = fake_kfold_run(tmp_path, digits_dir, noise=0.05)
    written = make_report(run_dir)
    assert run_dir / run_folder.LABEL_ISSUES in written and run_dir / "report_label_issues.png" in written
    issues = pd.read_csv(run_dir / run_folder.LABEL_ISSUES)
    found = set(issues["image_path"])
    # (on real digits, bench/label_noise.py measures it; this synthetic model's noise makes recall harder)
    assert len(found & flipped) / len(found) >= 0.9 and len(found & flipped) / len(flipped) >= 0.7
    assert issues["label_quality"].is_monotonic_increasing  # most suspect first
    assert list(issues.columns) == label_issues.COLUMNS and issues["method"].str.contains("cleanlab").all()
    row = issues.iloc[0]  # the suggestion is the class the out-of-fold model believes
    assert row["suggested_name"] == f"c{row['suggested']}" != row["class_name"]
    make_report(run_dir)  # its own earlier files are redrawn, not refused


@pytest.fixture(scope="module")
def kfold_run(digits_dir, tmp_path_factory):
    """A real 3-fold run on 150 digits (1 epoch), report included."""
    from engine.train.orchestrator import train
    out = tmp_path_factory.mktemp("li")
    pd.read_csv(digits_dir / "train.csv").groupby("target").head(15).to_csv(out / "train.csv", index=False)
    return train(digits_recipe(digits_dir, out, folds=3, epochs=1, batch_size=32, train_csv=str(out / "train.csv")),
                 show_progress=False)


def test_a_kfold_run_ends_with_label_issues_and_says_how_many(kfold_run):
    issues = pd.read_csv(kfold_run / run_folder.LABEL_ISSUES)
    oof = pd.read_csv(kfold_run / run_folder.OOF)
    assert set(issues["image_path"]) <= set(oof["image_path"])
    assert f"{len(issues)} rows look mislabelled" in (kfold_run / run_folder.TRAIN_LOG).read_text()
    assert (kfold_run / "report_label_issues.png").is_file() or issues.empty


def explore(digits_dir, *args) -> int:
    return explore_main([f"data_dir={digits_dir / 'train'}", f"train_csv={digits_dir / 'train.csv'}",
                         f"test_dir={digits_dir / 'test'}", f"test_csv={digits_dir / 'test.csv'}", *map(str, args)])


def issues_file(path, rows: pd.DataFrame):
    pd.DataFrame({"image_path": rows["image_path"], "fold": 0, "target": rows["target"],
                  "class_name": rows["class_name"], "suggested": (rows["target"] + 1) % 10,
                  "suggested_name": "x", "label_quality": 0.01, "method": "test"}).to_csv(path, index=False)
    return path


def test_drop_writes_the_table_without_the_flagged_rows_and_relabel_swaps_their_label(digits_dir, tmp_path):
    train = pd.read_csv(digits_dir / "train.csv")
    flagged = train.iloc[[3, 50, 400]]
    issues = issues_file(tmp_path / "label_issues.csv", flagged)
    assert explore(digits_dir, "--write-clean", tmp_path / "clean.csv", "--drop", issues) == 0
    clean = pd.read_csv(tmp_path / "clean.csv")
    assert len(clean) == len(train) - 3 and not clean["image_path"].isin(flagged["image_path"]).any()
    assert explore(digits_dir, "--write-clean", tmp_path / "relabelled.csv", "--drop", issues, "--relabel") == 0
    relabelled = pd.read_csv(tmp_path / "relabelled.csv").set_index("image_path")
    assert len(relabelled) == len(train)
    assert (relabelled.loc[flagged["image_path"], "target"].to_numpy() == (flagged["target"].to_numpy() + 1) % 10).all()
    assert explore(digits_dir, "--write-clean", tmp_path / "clean.csv", "--drop", issues) == 0  # its own output


def test_a_retrain_on_the_cleaned_table_is_shown_beside_its_original(digits_dir, tmp_path):
    from engine.runs.table import cleaned_from
    (tmp_path / run_folder.OOF_METRICS).write_text('{"accuracy": 0.9123, "n": 1527}')  # the original run's folder
    issues = issues_file(tmp_path / "label_issues.csv", pd.read_csv(digits_dir / "train.csv").iloc[[3, 50]])
    assert explore(digits_dir, "--write-clean", tmp_path / "clean.csv", "--drop", issues) == 0
    line = label_issues.before_cleaning_line(str(tmp_path / "clean.csv"), 0.95)
    assert "0.9500" in line and "before cleaning" in line and "0.9123" in line
    assert "cleaned from" in cleaned_from(digits_recipe(digits_dir, tmp_path, train_csv=str(tmp_path / "clean.csv")))
    assert label_issues.before_cleaning_line(str(digits_dir / "train.csv"), 0.95) is None  # the user's own table


def test_bad_drop_inputs_are_one_line_and_write_nothing(digits_dir, tmp_path, capsys):
    train = pd.read_csv(digits_dir / "train.csv")
    other_run = train.head(3).assign(image_path=["elsewhere/1.png", "elsewhere/2.png", "elsewhere/3.png"])
    relabelled = train.head(3).assign(target=(train["target"].head(3) + 1) % 10)
    cases = [digits_dir / "train.csv",  # not a label_issues.csv
             tmp_path / "missing.csv",
             issues_file(tmp_path / "other.csv", other_run),  # from another run's data
             issues_file(tmp_path / "changed.csv", relabelled)]  # the labels changed since
    for bad in cases:
        assert explore(digits_dir, "--write-clean", tmp_path / "out.csv", "--drop", bad) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--drop" in err
        assert not (tmp_path / "out.csv").exists()
    good = issues_file(tmp_path / "good.csv", train.head(2))
    assert explore(digits_dir, "--write-clean", digits_dir / "train.csv", "--drop", good) == 2  # the input itself
    assert explore(digits_dir, "--drop", good) == 2  # where would it go?
    assert explore(digits_dir, "--write-clean", tmp_path / "out.csv", "--relabel") == 2  # relabel which rows?
    assert "--relabel needs --drop" in capsys.readouterr().err
    assert len(pd.read_csv(digits_dir / "train.csv")) == len(train)


def test_a_weak_model_s_suspects_come_with_a_caution():
    from engine.evaluate.label_issues import summary_line
    weak, strong = summary_line(662, 1528, oof_accuracy=0.42), summary_line(12, 1528, oof_accuracy=0.96)
    assert "caution: the out-of-fold accuracy is only 0.42" in weak and weak.startswith("662 rows look mislabelled")
    assert "caution" not in strong and "\n" not in strong
