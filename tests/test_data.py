"""Data: tables from CSV or class folders, the audit of every kind of bad row, image modes, splits."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from engine.data.batches.loader import EpochSampler, ImageDataset, ShardSampler
from engine.errors import UserError
from engine.data.pixels.images import load_image
from engine.data.tables.audit import apply_audit_policy, audit_table, check_image_file
from engine.data.tables.folds import assign_folds
from engine.data.tables.read import read_train_table
from engine.data.pixels.transforms import build_train_transform


def sketch(path, value=0, size=(20, 16), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full(size[::-1], 255, np.uint8)
    arr[4:12, 5:9] = value
    Image.fromarray(arr).convert(mode).save(path)


@pytest.fixture
def messy(tmp_path):
    """A CSV with one row of each problem the audit must find, plus good rows."""
    root = tmp_path / "train"
    rows = []
    for cls, t in (("cat", 0), ("dog", 1)):
        for i in range(4):
            sketch(root / cls / f"{i}.png")
            rows.append((cls, f"{cls}/{i}.png", t))
    rows += [("cat", "cat/missing.png", 0),  # missing file
             ("cat", "cat/broken.png", 0),  # not an image
             ("dog", "dog/cut.png", 1),  # truncated PNG
             ("dog", "dog/0.png", 1),  # duplicate row
             ("cat", "cat/nan.png", None),  # NaN target
             ("dog", "dog/big.png", 7),  # out of range
             ("dog", "dog/swap.png", 0)]  # class_name says dog (1), target says 0
    (root / "cat" / "broken.png").write_bytes(b"this is not an image")
    sketch(root / "dog" / "cut.png")
    data = (root / "dog" / "cut.png").read_bytes()
    (root / "dog" / "cut.png").write_bytes(data[: len(data) // 2])
    for name in ("cat/nan.png", "dog/big.png", "dog/swap.png"):
        sketch(root / name)
    pd.DataFrame(rows, columns=["class_name", "image_path", "target"]).to_csv(tmp_path / "train.csv", index=False)
    return tmp_path


def test_audit_finds_each_problem_once(messy):
    audit = audit_table(read_train_table(str(messy / "train"), str(messy / "train.csv")))
    found = dict(zip(audit.problems["image_path"], audit.problems["problem"].str.split(" ").str[0]))
    assert found == {"cat/missing.png": "missing", "cat/broken.png": "unreadable", "dog/cut.png": "truncated",
                     "dog/0.png": "duplicate_row", "cat/nan.png": "nan_target",
                     "dog/big.png": "target_out_of_range", "dog/swap.png": "label_mismatch"}
    assert len(audit.table) == 8 and audit.classes == ["cat", "dog"]
    assert "7 rejected" in audit.summary()


def test_skip_warns_with_examples_and_error_stops_with_the_list(messy):
    audit = audit_table(read_train_table(str(messy / "train"), str(messy / "train.csv")))
    lines = []
    table = apply_audit_policy(audit, "skip", lines.append)
    assert len(table) == 8 and "skipping 7 rows" in lines[-1] and "cat/missing.png: missing" in lines[-1]
    with pytest.raises(UserError, match="7 rejected.*cat/missing.png: missing.*bad_images='skip'"):
        apply_audit_policy(audit, "error")


def test_csv_errors_are_clear(tmp_path):
    with pytest.raises(UserError, match="CSV .* not found"):
        read_train_table(str(tmp_path), str(tmp_path / "train.csv"))
    (tmp_path / "bad.csv").write_text("name,file\na,b\n")
    with pytest.raises(UserError, match="lacks column\\(s\\) image_path, target"):
        read_train_table(str(tmp_path), str(tmp_path / "bad.csv"))


def test_class_folders_without_csv(tmp_path):
    for cls in ("owl", "ant"):
        for i in range(2):
            sketch(tmp_path / cls / f"{i}.jpg")
    audit = audit_table(read_train_table(str(tmp_path), None))
    assert audit.classes == ["ant", "owl"] and len(audit.table) == 4 and audit.problems.empty


def _format_corpus(folder):
    """One file per format and mode a data set turns up with, colourful enough that garbage shows."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    rgb[:, :20] = [200, 30, 40]
    base = Image.fromarray(rgb)
    alpha = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    upright = Image.Exif()
    upright[0x0112] = 6  # EXIF orientation: rotate 90 degrees to view
    flipped = Image.Exif()
    flipped[0x0112] = 3
    files = {
        "palette.png": (base.quantize(8), {}),
        "palette_trns.png": (base.quantize(8), {"transparency": 2}),
        "one_bit.png": (base.convert("1"), {}),
        "grey.png": (base.convert("L"), {}),
        "grey_trns.png": (base.convert("L"), {"transparency": int(np.asarray(base.convert("L"))[0, 0])}),
        "grey_alpha.png": (Image.merge("LA", (base.convert("L"), Image.fromarray(alpha))), {}),
        "rgba.png": (Image.merge("RGBA", (*base.split(), Image.fromarray(alpha))), {}),
        "rgb_trns.png": (base, {"transparency": (200, 30, 40)}),
        "cmyk.jpg": (base.convert("CMYK"), {}),
        "grey16.png": (Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257), {}),
        "exif6.jpg": (base, {"exif": upright}),
        "exif3.png": (base, {"exif": flipped}),
        "exif6.webp": (base, {"exif": upright, "lossless": True}),
        "palette.gif": (base.quantize(8), {"transparency": 1}),
        "rgb.tiff": (base, {}),
        "palette.bmp": (base.quantize(8), {}),
        "rgba.webp": (Image.merge("RGBA", (*base.split(), Image.fromarray(alpha))), {"lossless": True}),
        "rgb.jpg": (base, {}),
    }
    for name, (image, options) in files.items():
        image.save(folder / name, **options)
    return sorted(files)


def _as_pil_shows(path):
    """PIL's convert("RGB") after exif_transpose; alpha composited on white; 16-bit by its high byte."""
    from PIL import ImageOps
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode == "I;16":
            return np.repeat((np.asarray(im) >> 8).astype(np.uint8)[..., None], 3, axis=2)
        if "A" in im.getbands() or "transparency" in im.info:
            paper = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(paper, im.convert("RGBA")).convert("RGB"))
        return np.asarray(im.convert("RGB"))


def test_every_format_decodes_as_it_looks(tmp_path):
    for name in _format_corpus(tmp_path):
        path = str(tmp_path / name)
        first, second = load_image(path), load_image(path)
        assert first.dtype == torch.uint8 and torch.equal(first, second), name
        assert np.array_equal(first.permute(1, 2, 0).numpy(), _as_pil_shows(path)), name


def test_transparent_background_becomes_white_paper(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)  # black, fully transparent...
    arr[2:4, 2:4] = [0, 0, 0, 255]  # ...except one opaque black stroke
    Image.fromarray(arr).save(tmp_path / "t.png")
    img = load_image(str(tmp_path / "t.png"))
    assert img[:, 0, 0].tolist() == [255, 255, 255] and img[:, 2, 2].tolist() == [0, 0, 0]


def test_unreadable_image_is_a_clear_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"junk")
    with pytest.raises(UserError, match="could not be decoded.*bad_images='skip'"):
        load_image(str(tmp_path / "x.png"))


def test_holdout_split_is_stratified_seeded_and_complete():
    targets = np.repeat(np.arange(5), 20)
    fold = assign_folds(targets, 1, 0.2, seed=3)
    assert (fold == 0).sum() == 20 and all((targets[fold == 0] == c).sum() == 4 for c in range(5))
    assert (assign_folds(targets, 1, 0.2, seed=3) == fold).all()
    assert not (assign_folds(targets, 1, 0.2, seed=4) == fold).all()


def test_augmentation_is_a_function_of_seed_epoch_and_index(tmp_path):
    paths = []
    for i in range(4):
        sketch(tmp_path / f"{i}.png", size=(40, 40))
        paths.append(str(tmp_path / f"{i}.png"))
    ds = ImageDataset(paths, [0, 1, 0, 1], build_train_transform(24, "light"), seed=1)
    a, b = ds[(0, 2)][0], ds[(0, 2)][0]
    assert torch.equal(a, b) and a.shape == (3, 24, 24)
    assert any(not torch.equal(ds[(1, i)][0], ds[(0, i)][0]) for i in range(4))  # new epoch, new views
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    ds[(0, 1)]
    assert torch.equal(torch.rand(1), before)  # the caller's RNG is untouched


def test_samplers_shard_without_loss_and_skip_for_resume():
    train = [EpochSampler(10, 2, True, seed=0, rank=r, world=2) for r in range(2)]
    for s in train:
        s.set_epoch(3)
    seen = [i for s in train for _, i in s]
    assert sorted(seen) == list(range(10))
    full = [i for _, i in train[0]]
    train[0].set_epoch(3, skip_batches=1)
    assert [i for _, i in train[0]] == full[2:]  # resume after one batch of 2
    assert all(epoch == 3 for epoch, _ in train[0])
    val = [list(ShardSampler(7, r, 3)) for r in range(3)]
    assert sorted(sum(val, [])) == list(range(7))  # no padding, nothing twice


def test_padding_after_the_end_marker_is_not_truncation(tmp_path):
    sketch(tmp_path / "x.png")
    Image.open(tmp_path / "x.png").convert("RGB").save(tmp_path / "x.jpg")
    for name in ("x.png", "x.jpg"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / ("padded_" + name)).write_bytes(data + b"\0" * 64)  # some writers pad files
        (tmp_path / ("cut_" + name)).write_bytes(data[: len(data) * 2 // 3])
        assert check_image_file(str(tmp_path / ("padded_" + name))) is None
        assert check_image_file(str(tmp_path / ("cut_" + name))) == "truncated"


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((10, 12), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    img = load_image(str(tmp_path / "a.gif"))
    assert img.shape == (3, 10, 12) and img.max() < 10


def test_one_based_targets_keep_every_class(tmp_path):
    rows = []
    for t, cls in ((1, "ant"), (2, "bee")):
        for i in range(3):
            sketch(tmp_path / cls / f"{i}.png")
            rows.append((cls, f"{cls}/{i}.png", t))
    pd.DataFrame(rows, columns=["class_name", "image_path", "target"]).to_csv(tmp_path / "t.csv", index=False)
    audit = audit_table(read_train_table(str(tmp_path), str(tmp_path / "t.csv")))
    assert audit.problems.empty and audit.classes == ["0", "ant", "bee"]
