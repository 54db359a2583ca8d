"""The suite runs what a GPU runs: every shipped recipe x every batch source it allows trains one short
epoch, predicts with --tta and explains with a CAM, on the CPU; each source resumes bitwise mid-epoch;
"auto" resolves for every recipe exactly as on a CUDA device."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import cam
import predict
from conftest import ROOT, digits_recipe
from engine import run_folder
from engine.checkpoint import load_checkpoint
from engine.data.batches import resident
from engine.data.batches.loader_source import LoaderBatches
from engine.data.batches.resident_source import ResidentBatches
from engine.data.batches.loader import CanvasCollate, EpochSampler, ImageDataset, make_loader
from engine.data.stores.image_cache import DecodeEachTime, cache_short_side
from engine.data.batches.factory import choose_path, device_augment
from engine.data.pixels.transforms import Normalize
from engine.recipe import load_recipe
from engine.system import preemption
from engine.train.orchestrator import train

RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.py"))
TINY_MODEL = {"convnext": "test_convnext", "efficientnet": "test_efficientnet", "eva02_frozen_mlp": "test_vit",
              "eva02_full": "test_vit", "eva02_last_block": "test_vit"}  # the rest: test_resnet
SOURCES = ("workers", "device", "resident", "store")
FORCE = {"workers": dict(augment_on="workers", cache="none"), "device": dict(augment_on="device", cache="none"),
         "resident": dict(augment_on="auto", cache="device"),
         "store": dict(feature_views=2, feature_dtype="fp32", augment_schedule={})}  # stored views: one preset
FAST = ["--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_digits(digits_dir, tmp_path_factory, monkeypatch_module) -> Path:
    """40 training and 6 test digits, and a private cache folder for feature stores."""
    out = tmp_path_factory.mktemp("tiny_digits")
    pd.read_csv(digits_dir / "train.csv").groupby("target").head(4).to_csv(out / "train.csv", index=False)
    pd.read_csv(digits_dir / "train.csv").groupby("target").head(3).to_csv(out / "train30.csv", index=False)
    pd.read_csv(digits_dir / "test.csv").head(6).to_csv(out / "test.csv", index=False)
    monkeypatch_module.setenv("SKETCHBOOK_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def shipped(name: str, digits_dir: Path, tiny: Path, out: Path, **changes):
    """A shipped recipe with its character kept (freeze, heads, flips, mixing, schedules) and its size shrunk."""
    keys = dict(model=TINY_MODEL.get(name, "test_resnet"), pretrained=False, num_classes=None,
                data_dir=str(digits_dir / "train"), train_csv=str(tiny / "train.csv"), test_dir=str(digits_dir / "test"),
                test_csv=str(tiny / "test.csv"), image_size=32, batch_size=8, epochs=1, folds=1, val_fraction=0.25,
                num_workers=0, output_dir=str(out), name=name, wandb="disabled", early_stopping=0,
                drop_path=0.0)
    return load_recipe(ROOT / "recipes" / f"{name}.py", {**keys, **changes})


def allowed(recipe) -> list[str]:
    """The sources a recipe can use: the device ones need a device preset, the store a frozen backbone."""
    out = ["workers"]
    if recipe.augment in ("none", "light"):
        out += ["device", "resident"]
    if recipe.freeze == "backbone" and recipe.cutmix_ratio == 0:
        out.append("store")
    return out


def matrix(digits_dir: Path, tiny: Path, out: Path) -> list[tuple[str, str]]:
    return [(name, source) for name in RECIPES
            for source in allowed(shipped(name, digits_dir, tiny, out))]


@pytest.mark.parametrize("name", RECIPES)
def test_auto_resolves_as_on_a_cuda_device(name, digits_dir, tiny_digits, tmp_path, monkeypatch):
    """What "auto" picks on CUDA (the device type faked; the images fit), and that the matrix covers it."""
    monkeypatch.setattr(resident, "free_bytes", lambda device: 80 * 2**30)
    recipe = shipped(name, digits_dir, tiny_digits, tmp_path, cache="auto", augment_on="auto")
    paths = list(pd.read_csv(tiny_digits / "train.csv")["image_path"].map(lambda p: str(digits_dir / "train" / p)))
    path, why = choose_path(recipe, torch.device("cuda"), paths)
    expected = ("store" if recipe.feature_views else "resident" if recipe.augment in ("none", "light") else "workers")
    assert path == expected, why
    assert path in allowed(recipe)
    cpu_path, _ = choose_path(recipe, torch.device("cpu"), paths)
    assert cpu_path == ("store" if recipe.feature_views else "workers")  # the CPU keeps today's measured choice
    monkeypatch.setattr(resident, "free_bytes", lambda device: 1000)  # too little memory: the canvas path instead
    if expected == "resident":
        path, why = choose_path(recipe, torch.device("cuda"), paths)
        assert path == "device" and "not resident" in why


@pytest.mark.slow
def test_every_recipe_trains_predicts_and_explains_from_every_source(digits_dir, tiny_digits, tmp_path, monkeypatch):
    monkeypatch.setattr("engine.evaluate.report_figures.make_report", lambda run_dir: [])  # tested elsewhere; slow to draw
    rows = matrix(digits_dir, tiny_digits, tmp_path)
    assert {s for _, s in rows} == set(SOURCES) and len(rows) >= 2 * len(RECIPES)
    for name, source in rows:
        recipe = shipped(name, digits_dir, tiny_digits, tmp_path / source, **FORCE[source],
                         train_csv=str(tiny_digits / "train30.csv"),  # 2 steps of 8 per row
                         **({"augment_on": "device"} if source == "store" else {}))  # what CUDA's auto adds
        run_dir = train(recipe, show_progress=False)
        log = (run_dir / run_folder.TRAIN_LOG).read_text()
        assert f"batches: {_path_name(source)}" in log, (name, source)
        metrics = pd.read_csv(run_folder.fold_dir(run_dir, 0) / run_folder.METRICS)
        assert len(metrics) == 1 and np.isfinite(metrics["train_loss"]).all(), (name, source)
        out = tmp_path / f"{name}-{source}.csv"
        assert predict.main([str(run_dir), "--tta", "--save-probs", "--out", str(out), *FAST]) == 0, (name, source)
        probs = pd.read_csv(out.with_name(out.stem + "_probs.csv")).iloc[:, 1:].to_numpy()
        assert probs.shape[0] == 6 and np.allclose(probs.sum(1), 1, atol=1e-4), (name, source)
        image = digits_dir / "test" / pd.read_csv(tiny_digits / "test.csv")["image_path"][0]
        cams = tmp_path / f"cam-{name}-{source}"
        assert cam.main([str(image), "--ckpt", str(run_dir), "--out", str(cams), "--no-progress"]) == 0
        assert len(list(cams.glob("*.png"))) == 1, (name, source)


def _path_name(source: str) -> str:
    from engine.data.batches.factory import PATH_NAMES
    return PATH_NAMES[source]


@pytest.mark.parametrize("source", SOURCES)
def test_a_run_stopped_mid_epoch_resumes_bitwise(source, digits_dir, tiny_digits, tmp_path, monkeypatch):
    keys = dict(train_csv=str(tiny_digits / "train.csv"), test_csv=str(tiny_digits / "test.csv"), batch_size=4,
                epochs=2, val_fraction=0.25, augment="light", random_erase=0.3, flip="hv", mixup_ratio=0.5,
                **FORCE[source])
    if source == "store":
        keys.update(freeze="backbone", augment="none", mixup_ratio=0.5, pretrained=False)
    else:  # staged augmentation: the resumed epoch must augment as the stopped one did
        keys.update(augment_schedule={1: "none"})
    whole = train(digits_recipe(digits_dir, tmp_path / "whole", **keys), show_progress=False)
    calls = {"n": 0}

    def stop_after_five() -> bool:
        calls["n"] += 1
        return calls["n"] == 12  # epoch 2, step 2 of 7

    monkeypatch.setattr(preemption, "requested", stop_after_five)
    recipe = digits_recipe(digits_dir, tmp_path / "stopped", **keys)
    with pytest.raises(preemption.Preempted):
        train(recipe, show_progress=False)
    monkeypatch.setattr(preemption, "requested", lambda: False)
    stopped = next((tmp_path / "stopped").glob("*/*"))
    assert load_checkpoint(run_folder.fold_dir(stopped, 0) / run_folder.LAST)["progress"]["step"] > 0
    train(recipe, resume=str(stopped), show_progress=False)
    a = load_checkpoint(run_folder.fold_dir(whole, 0) / run_folder.LAST)["model"]
    b = load_checkpoint(run_folder.fold_dir(stopped, 0) / run_folder.LAST)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), source
    rows = [pd.read_csv(run_folder.fold_dir(r, 0) / run_folder.METRICS) for r in (whole, stopped)]
    assert rows[0]["train_loss"].tolist() == rows[1]["train_loss"].tolist()


def test_resident_batches_equal_the_canvas_paths_bitwise(digits_dir, tiny_digits):
    """Images resident on the device give exactly the pixels the workers' canvas + device warp give."""
    recipe = digits_recipe(digits_dir, Path("unused"), augment="light", random_erase=0.5, flip="hv", batch_size=8)
    table = pd.read_csv(tiny_digits / "train.csv")
    paths = [str(digits_dir / "train" / p) for p in table["image_path"]]
    targets = torch.tensor(table["target"].to_numpy())
    fill, device = (250, 250, 250), torch.device("cpu")
    normalize, augment = Normalize((0.5,) * 3, (0.25,) * 3), device_augment(recipe, 0, fill)
    short = cache_short_side(recipe.image_size, 0.875)
    canvas = LoaderBatches(make_loader(ImageDataset(paths, targets, None, loader=DecodeEachTime(paths, short)), 8,
                                       EpochSampler(len(paths), 8, True, 5), 0, True, collate_fn=CanvasCollate(fill)),
                           device, normalize, augment)
    images = resident.training_images(recipe.image_size, 0.875, device, 0).get(paths, False)
    on_device = ResidentBatches.from_images(images, targets, EpochSampler(len(paths), 8, True, 5), 8, augment, fill,
                                            device, normalize)
    for source in (canvas, on_device):
        source.set_epoch(3, 1)
    pairs = list(zip(canvas, on_device))
    assert len(pairs) == len(canvas) == len(on_device) == 4
    for (x1, y1), (x2, y2) in pairs:
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(pairs[0][0][0], pairs[1][0][0])


def test_resident_images_are_loaded_once_and_again_when_a_file_changes(digits_dir, tiny_digits, tmp_path):
    src = digits_dir / "train" / pd.read_csv(tiny_digits / "train.csv")["image_path"][0]
    path = tmp_path / "a.png"
    path.write_bytes(src.read_bytes())
    images = resident.ResidentImages(torch.device("cpu"), resident._loader(
        lambda ps: ImageDataset(ps, None, None), 0), "images")
    first = images.get([str(path)], False)[0]
    assert images.get([str(path)], False)[0] is first  # resident: not loaded again
    from PIL import Image
    Image.new("RGB", (9, 7), (1, 2, 3)).save(path)
    changed = images.get([str(path)], False)[0]
    assert changed.shape == (3, 7, 9) and int(changed[0, 0, 0]) == 1


def test_cache_device_refuses_in_one_line_when_the_images_do_not_fit(digits_dir, tiny_digits, tmp_path, monkeypatch):
    from engine.errors import UserError
    monkeypatch.setattr(resident, "free_bytes", lambda device: 1000)
    recipe = digits_recipe(digits_dir, tmp_path, train_csv=str(tiny_digits / "train.csv"), cache="device", epochs=1)
    with pytest.raises(UserError, match="cache='device': 40 images take .* more than 50% of its 0.0 GiB free"):
        train(recipe, show_progress=False)


def test_dry_run_says_which_batch_path_and_why(digits_dir, tiny_digits, tmp_path, capsys):
    import train as train_cli
    args = [f"train_csv={tiny_digits / 'train.csv'}", f"data_dir={digits_dir / 'train'}", "model=test_resnet",
            f"output_dir={tmp_path}"]
    assert train_cli.main([str(ROOT / "recipes" / "demo.py"), *args, "--dry-run"]) == 0
    assert "batches on cpu: augmented in the loader workers (augment_on='auto' on the CPU" in capsys.readouterr().out
    assert train_cli.main([str(ROOT / "recipes" / "demo.py"), *args, "cache='device'", "--dry-run"]) == 0
    assert "batches on cpu: images resident on the device, augmented there (cache='device')" in capsys.readouterr().out


def test_store_serves_every_view_the_recipes_flip_needs(digits_dir, tiny_digits, tmp_path, capsys):
    """flip="hv" + --tta from a store averages the eval crop and its 3 flips, as predicting through the model does."""
    recipe = digits_recipe(digits_dir, tmp_path, train_csv=str(tiny_digits / "train.csv"),
                           test_csv=str(tiny_digits / "test.csv"), freeze="backbone", feature_views=1,
                           feature_dtype="fp32", flip="hv", augment="none", epochs=1, batch_size=8)
    run_dir = train(recipe, show_progress=False)
    capsys.readouterr()
    outs = {}
    for what, extra in (("store", []), ("pixels", ["--no-store"])):
        out = tmp_path / f"{what}.csv"
        assert predict.main([str(run_dir), "--tta", "--save-probs", "--out", str(out), *FAST, *extra]) == 0
        outs[what] = pd.read_csv(tmp_path / f"{what}_probs.csv").iloc[:, 1:].to_numpy()
    assert "building 4 view(s) x 6 images" in capsys.readouterr().out
    np.testing.assert_allclose(outs["store"], outs["pixels"], rtol=1e-4, atol=1e-5)
    assert json.loads((run_dir / run_folder.RECIPE).read_text())["flip"] == "hv"


@pytest.mark.parametrize("source", ["workers", "device", "resident"])
def test_staged_augmentation_changes_the_transform_at_its_epoch_also_on_resume(source, digits_dir, tiny_digits,
                                                                              tmp_path):
    from engine.data.batches.factory import build_fold_batches
    from engine.system.distributed import Dist
    recipe = digits_recipe(digits_dir, tmp_path, augment="none", augment_schedule={2: "light"}, epochs=4,
                           batch_size=8, num_workers=1 if source == "workers" else 0, **FORCE[source])
    table = pd.read_csv(tiny_digits / "train.csv")
    table["path"] = [str(digits_dir / "train" / p) for p in table["image_path"]]
    cfg = {"mean": (0.5,) * 3, "std": (0.25,) * 3, "crop_pct": 0.875, "background": (255, 255, 255)}

    def light(batches) -> bool:
        if batches.train.augment is not None:
            return batches.train.augment.affine
        return "RandomAffine" in repr(batches.train.loader.dataset.transform)

    def fresh():
        return build_fold_batches(recipe, None, cfg, table.iloc[:32], table.iloc[32:], 0, Dist(), False)

    batches = fresh()
    seen = []
    for epoch in range(4):
        batches.train.set_epoch(epoch)
        seen.append(light(batches))
    assert seen == [False, False, True, True]
    batches.stop()
    resumed = fresh()  # a resume mid-epoch 3 builds its sources anew
    resumed.train.set_epoch(2, 1)
    assert light(resumed)
    if source == "workers":  # persistent workers hold a copy of the transform: they are started anew
        resumed.train.set_epoch(1)
        next(iter(resumed.train))
        assert resumed.train.loader._iterator is not None
        resumed.train.set_epoch(2)
        assert resumed.train.loader._iterator is None
        resumed.stop()
