"""Exploring a small sketch data set with one planted problem of each kind: every problem is found,
nothing else is flagged, a missing class_name is repaired (a NaN target dropped, as training does), the cleaned CSV trains, the report embeds every
plot, and a second scan decodes nothing."""
from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from conftest import digits_recipe

CLASSES = ["cat", "dog", "fish"]


def sketch(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Random dark strokes on white paper."""
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 9))):
        points = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(3)]
        draw.line(points, fill=int(rng.integers(0, 80)), width=int(rng.integers(2, 4)))
    return image


def resized_copy(src: Path, dst: Path, factor: float = 0.75) -> None:
    """A near duplicate: smaller, re-encoded as JPEG."""
    with Image.open(src) as im:
        im.convert("RGB").resize((int(im.width * factor), int(im.height * factor)), Image.BILINEAR).save(
            dst, quality=80)


def planted_data(root: Path) -> tuple[Path, set]:
    """A 3-class data set with every kind of problem planted once; returns (root, expected findings)."""
    rng = np.random.default_rng(0)
    rows = []
    for t, name in enumerate(CLASSES):
        (root / "train" / name).mkdir(parents=True)
        for k in range(12):
            rel = f"{name}/{name[0]}{k}.png"
            sketch(rng, int(rng.integers(96, 161)), int(rng.integers(96, 161))).save(root / "train" / rel)
            rows.append([name, rel, t])
    (root / "test").mkdir()
    test_rows = []
    for k in range(6):
        sketch(rng, 120, 120).save(root / "test" / f"t{k}.png")
        test_rows.append(f"t{k}.png")
    train = root / "train"
    table = pd.DataFrame(rows, columns=["class_name", "image_path", "target"]).astype({"target": object})
    table.loc[table["image_path"] == "cat/c5.png", "target"] = None  # NaN target, known class: dropped, as training does
    table.loc[table["image_path"] == "dog/d5.png", "class_name"] = None  # no class_name, known target: repaired
    table.loc[table["image_path"] == "fish/f9.png", ["class_name", "target"]] = None  # neither: dropped
    table.loc[table["image_path"] == "fish/f6.png", "target"] = 7  # out of range
    table.loc[table["image_path"] == "cat/c7.png", "target"] = 1  # says dog
    shutil.copy(train / "dog/d1.png", train / "dog/dup.png")  # exact copy, same class
    resized_copy(train / "cat/c0.png", train / "cat/near.jpg")  # near copy, same class
    resized_copy(train / "cat/c3.png", train / "fish/noise.jpg")  # near copy, other class: label noise
    resized_copy(train / "fish/f2.png", root / "test" / "leak.jpg")  # train image in the test set
    Image.new("L", (80, 80), 255).save(train / "cat/blank.png")
    tiny = Image.new("L", (12, 12), 255)
    ImageDraw.Draw(tiny).line([(1, 1), (10, 9)], fill=0, width=2)
    tiny.save(train / "dog/tiny.png")
    sketch(rng, 240, 48).save(train / "fish/wide.png")
    sketch(rng, 80, 80).convert("RGB").save(train / "dog/trunc.jpg", quality=90)
    data = (train / "dog/trunc.jpg").read_bytes()
    (train / "dog/trunc.jpg").write_bytes(data[: len(data) // 2])
    (train / "fish/garbage.png").write_bytes(os.urandom(300))
    extra = [["dog", "dog/dup.png", 1], ["cat", "cat/near.jpg", 0], ["fish", "fish/noise.jpg", 2],
             ["cat", "cat/blank.png", 0], ["dog", "dog/tiny.png", 1], ["fish", "fish/wide.png", 2],
             ["dog", "dog/trunc.jpg", 1], ["fish", "fish/garbage.png", 2], ["cat", "cat/ghost.png", 0],
             ["fish", "fish/f8.png", 2]]  # the last one: a duplicate row
    table = pd.concat([table, pd.DataFrame(extra, columns=table.columns)], ignore_index=True)
    table.to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_path": test_rows + ["leak.jpg", "gone.png"]}).to_csv(root / "test.csv", index=False)
    expected = {("nan_target", "cat/c5.png", "dropped"), ("missing_class_name", "dog/d5.png", "repaired"),
                ("nan_target", "fish/f9.png", "dropped"), ("target_out_of_range", "fish/f6.png", "dropped"),
                ("label_mismatch", "cat/c7.png", "dropped"), ("duplicate_row", "fish/f8.png", "dropped"),
                ("missing", "cat/ghost.png", "dropped"), ("truncated", "dog/trunc.jpg", "dropped"),
                ("unreadable", "fish/garbage.png", "dropped"), ("missing", "gone.png", "kept"),
                ("duplicate_within_class", "dog/dup.png", "dropped (a copy)"),
                ("duplicate_within_class", "cat/near.jpg", "kept"),
                ("duplicate_across_classes", "fish/noise.jpg", "kept (check the labels)"),
                ("leakage_train_test", "leak.jpg", "kept (validation overstates test accuracy)"),
                ("blank", "cat/blank.png", "dropped"), ("extreme_size", "dog/tiny.png", "kept"),
                ("extreme_aspect", "fish/wide.png", "kept")}
    return root, expected


def recipe_for(root: Path, out: Path, **changes):
    keys = dict(data_dir=str(root / "train"), train_csv=str(root / "train.csv"), test_dir=str(root / "test"),
                test_csv=str(root / "test.csv"), name="planted")
    return digits_recipe(root, out, **{**keys, **changes})


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    from engine.explore.analysis import explore
    root, expected = planted_data(tmp_path_factory.mktemp("planted"))
    out = tmp_path_factory.mktemp("explore")
    clean = out / "clean_train.csv"
    result = explore(recipe_for(root, out / "runs"), out / "report", write_clean=clean, workers=1,
                     progress=False, log=lambda *a: None)
    return root, expected, result, clean


def test_every_planted_problem_is_found_and_nothing_else(explored):
    _, expected, result, _ = explored
    found = {(r.kind, r.image_path, r.action) for r in result.findings.findings.itertuples()}
    assert found == expected
    assert result.findings.repaired == 1


def test_a_nan_target_gets_the_training_audits_answer(explored):
    from engine.data.tables.audit import audit_table
    from engine.data.tables.read import read_train_table
    root, _, result, _ = explored
    training = audit_table(read_train_table(str(root / "train"), str(root / "train.csv")))
    dropped = set(training.problems.loc[training.problems["problem"] == "nan_target", "image_path"])
    findings = result.findings.findings
    assert set(findings.loc[findings["kind"] == "nan_target", "image_path"]) == dropped == {"cat/c5.png", "fish/f9.png"}
    assert "cat/c5.png" not in set(result.findings.clean["image_path"])


def test_near_duplicates_are_told_from_exact_copies(explored):
    findings = explored[2].findings.findings.set_index("image_path")
    assert findings.at["dog/dup.png", "detail"] == "identical files"
    assert findings.at["dog/dup.png", "other_image_path"] == "dog/d1.png"
    for copy, original in [("cat/near.jpg", "cat/c0.png"), ("fish/noise.jpg", "cat/c3.png"), ("leak.jpg", "fish/f2.png")]:
        assert findings.at[copy, "other_image_path"] == original
        assert findings.at[copy, "detail"].startswith("near duplicate")


def test_clean_csv_is_repaired_and_trains(explored, tmp_path):
    from engine.train.orchestrator import train
    from engine.data.tables.audit import audit_table
    from engine.data.tables.read import read_train_table
    root, _, _, clean = explored
    table = pd.read_csv(clean)
    assert list(table.columns) == ["class_name", "image_path", "target"]
    by_path = table.set_index("image_path")
    assert by_path.loc["dog/d5.png", "class_name"] == "dog"
    gone = {"cat/c5.png", "fish/f9.png", "fish/f6.png", "cat/c7.png", "cat/ghost.png", "dog/trunc.jpg", "fish/garbage.png",
            "dog/dup.png", "cat/blank.png"}
    assert not gone & set(table["image_path"]) and not table["image_path"].duplicated().any()
    assert len(table) == 36 - 4 + 4  # c5, f9, f6, c7 dropped; near, noise, tiny and wide added
    assert audit_table(read_train_table(str(root / "train"), str(clean))).problems.empty
    run = train(recipe_for(root, tmp_path, train_csv=str(clean), epochs=1, batch_size=8), show_progress=False)
    assert (run / "fold0" / "best.pt").is_file()
    assert pd.read_csv(run / "fold0" / "metrics.csv")["val_loss"].notna().all()


def test_report_embeds_every_plot_and_csvs_sit_beside_it(explored):
    result = explored[2]
    page = result.report.read_text()
    pngs = sorted(result.out_dir.glob("*.png"))
    assert {p.name for p in pngs} >= {"class_counts.png", "sizes.png", "files.png", "colour_ink.png", "samples.png"}
    assert len(result.plots) == len(pngs)
    for png in pngs:
        assert base64.b64encode(png.read_bytes()).decode() in page
    assert "leakage_train_test" in page and "src=\"http" not in page
    assert "mirror check (recipe key flip)" in page and "suggested flip=" in page
    assert len(pd.read_csv(result.out_dir / "findings.csv")) == len(explored[1])


def test_second_scan_decodes_nothing_until_a_file_changes(explored, monkeypatch, tmp_path):
    from engine.explore import facts as image_facts
    root, _, first, _ = explored
    calls = []
    real = image_facts.decode_for_facts
    monkeypatch.setattr(image_facts, "decode_for_facts", lambda p: calls.append(p) or real(p))
    paths = list(image_facts.pd.read_csv(first.out_dir / "image_facts.csv")["path"])
    facts, decoded = image_facts.scan_images(paths, first.out_dir / "image_facts.csv", workers=1, progress=False)
    assert decoded == 0 and calls == [] and len(facts) == len(paths)
    changed = root / "train" / "cat" / "c1.png"
    os.utime(changed, ns=(1_000_000_000, 1_000_000_000))
    again, decoded = image_facts.scan_images(paths, first.out_dir / "image_facts.csv", workers=1, progress=False)
    assert decoded == 1 and calls == [str(changed)]
    assert again.loc[str(changed), "phash"] == facts.loc[str(changed), "phash"]


def test_cli_augment_preview_and_bad_class(explored, tmp_path, capsys):
    from engine.explore.__main__ import main
    root = explored[0]
    args = [f"data_dir={root / 'train'}", f"train_csv={root / 'train.csv'}", f"test_dir={root / 'test'}",
            f"test_csv={root / 'test.csv'}", "image_size=64", "mixup_ratio=0.5", "cutmix_ratio=0.5",
            "--out", str(tmp_path)]
    assert main(args + ["--augment"]) == 0
    with Image.open(tmp_path / "augment.png") as im:
        assert im.height > im.width / 3  # three rows: as decoded, mixup, cutmix (no batch goes unmixed here)
    assert main(args + ["--no-progress", "--classes", "unicorn"]) == 2
    assert "no class named 'unicorn'" in capsys.readouterr().err
