"""Feature store (feature_views): a head trained from stored features is the head trained through the frozen
backbone; the store's key; one builder at a time; a killed build is never trusted; predict from a store."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

import predict
from conftest import ROOT, digits_recipe
from engine import run_folder
from engine.checkpoint import load_checkpoint
from engine.data.stores import feature_store as fs
from engine.data.stores.image_cache import image_loader
from engine.data.batches.loader import EpochSampler, ImageDataset, make_loader
from engine.data.batches.loader_source import LoaderBatches
from engine.data.pixels.transforms import Normalize, recipe_train_transform
from engine.errors import UserError
from engine.models import build_model, data_config
from engine.recipe import load_recipe
from engine.system.distributed import Dist
from engine.train.orchestrator import train
from engine.train.training_data import load_data
from engine.data.batches.store_source import store_keys
from engine.train.loop import train_one_epoch
from engine.train.state import build_train_state

FAST = ["--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, monkeypatch_module):
    folder = tmp_path_factory.mktemp("feature_cache")
    monkeypatch_module.setenv("SKETCHBOOK_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def small_digits(digits_dir, tmp_path_factory) -> Path:
    """60 training and 20 test digits of the demo set (fast to augment on two shared cores)."""
    out = tmp_path_factory.mktemp("small_digits")
    pd.read_csv(digits_dir / "train.csv").groupby("target").head(6).to_csv(out / "train.csv", index=False)
    pd.read_csv(digits_dir / "test.csv").head(20).to_csv(out / "test.csv", index=False)
    return out


def store_recipe(digits_dir, small_digits, out, **changes):
    keys = dict(train_csv=str(small_digits / "train.csv"), test_csv=str(small_digits / "test.csv"), freeze="backbone",
                feature_views=2, feature_dtype="fp32", batch_size=8, epochs=3, val_fraction=0.25, warmup_epochs=0.0,
                augment="none")
    return digits_recipe(digits_dir, out, **{**keys, **changes})


@pytest.fixture(scope="module")
def store_run(digits_dir, small_digits, cache_dir, tmp_path_factory):
    recipe = store_recipe(digits_dir, small_digits, tmp_path_factory.mktemp("runs"))
    return recipe, train(recipe, show_progress=False)


class EpochView(torch.utils.data.Dataset):
    """Pixels of training view (epoch mod K) of each image: what the store holds for that epoch."""

    def __init__(self, dataset, k):
        self.dataset, self.k = dataset, k

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        epoch, index = item
        return self.dataset[(epoch % self.k, index)]


def test_head_from_fp32_store_equals_head_trained_through_the_frozen_backbone(store_run):
    recipe, run_dir = store_run
    table, classes, _ = load_data(recipe, Dist())
    rows = table[table["fold"] != 0]
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model, len(classes))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = data_config(model)
    tf = recipe_train_transform(recipe, (255, 255, 255))  # the digits' white paper
    pixels = EpochView(ImageDataset(rows["path"], rows["target"], tf, recipe.seed,
                                    image_loader(recipe, rows["path"], cfg["crop_pct"])), recipe.feature_views)
    sampler = EpochSampler(len(rows), recipe.batch_size, True, recipe.seed)
    loader = make_loader(pixels, recipe.batch_size, sampler, 0, train=True)
    s = build_train_state(recipe, model, len(classes), len(loader), torch.device("cpu"))
    batches = LoaderBatches(loader, torch.device("cpu"), Normalize(cfg["mean"], cfg["std"]))
    for epoch in range(recipe.epochs):  # 3 epochs over 2 views: the third reads view 0 again
        batches.set_epoch(epoch)
        train_one_epoch(s, batches, epoch, show_progress=False)
    stored = load_checkpoint(run_folder.fold_dir(run_dir, 0) / run_folder.LAST)["model"]
    head = {id(p) for p in model.get_classifier().parameters()}
    for name, p in model.named_parameters():
        if id(p) in head:
            assert not torch.equal(p, initial[name]), f"{name} did not train"
            torch.testing.assert_close(stored[name], p.detach(), rtol=1e-4, atol=1e-5)
        else:
            assert torch.equal(stored[name], initial[name]), f"frozen {name} changed"


def test_predict_from_store_equals_predict_through_the_model(store_run, cache_dir, tmp_path, capsys):
    _, run_dir = store_run
    base = [str(run_dir), "--tta", "--save-probs", *FAST]
    assert predict.main(base + ["--out", str(tmp_path / "store.csv")]) == 0
    assert "feature store: building 2 view(s) x 20 images" in capsys.readouterr().out
    assert predict.main(base + ["--out", str(tmp_path / "again.csv")]) == 0
    assert "building" not in capsys.readouterr().out  # the second prediction reuses the store
    assert predict.main(base + ["--out", str(tmp_path / "pixels.csv"), "--no-store"]) == 0
    store, again, pixels = (pd.read_csv(tmp_path / f"{n}_probs.csv").iloc[:, 1:].to_numpy()
                            for n in ("store", "again", "pixels"))
    torch.testing.assert_close(torch.tensor(store), torch.tensor(pixels), rtol=1e-4, atol=1e-5)
    assert (store == again).all()


def test_key_changes_with_every_keyed_input_and_nothing_else(small_digits, digits_dir, tmp_path):
    images = []
    for i in range(3):
        images.append(tmp_path / f"img{i}.png")
        images[-1].write_bytes((digits_dir / "train" / pd.read_csv(digits_dir / "train.csv")["image_path"][i])
                               .read_bytes())
    weights = tmp_path / "w.pt"
    model = build_model("test_resnet", 10)
    torch.save(model.state_dict(), weights)
    rows = pd.DataFrame({"path": [str(p) for p in images], "target": [0, 1, 2]})

    def keys(crop_pct=0.875, rows=rows, fill=(255, 255, 255), **changes):
        recipe = store_recipe(digits_dir, small_digits, tmp_path, **{"pretrained_path": str(weights), **changes})
        return store_keys(recipe, model, crop_pct, 0, rows, rows, torch.device("cpu"), fill)

    base = keys()
    for same in [dict(lr=0.1), dict(epochs=9), dict(batch_size=3), dict(label_smoothing=0.1), dict(mixup_ratio=0.2),
                 dict(num_workers=2), dict(cache="disk"), dict(output_dir="elsewhere"), dict(weight_decay=0.0)]:
        assert keys(**same) == base, same
    train_only = [dict(seed=1), dict(augment="light"), dict(crop_scale=0.5), dict(random_erase=0.2),
                  dict(feature_views=3), dict(flip="hv"), dict(flip="none"), dict(fill=(0, 0, 0))]
    both = [dict(model="test_convnext"), dict(image_size=40), dict(crop_pct=0.9), dict(feature_dtype="fp16"),
            dict(rows=rows.iloc[:2])]
    for change in train_only + both:
        changed = keys(**change)
        assert changed[0] != base[0], change
        assert (changed[1] != base[1]) == (change in both), change
    renamed = tmp_path / "copy.pt"
    renamed.write_bytes(weights.read_bytes())
    assert keys(pretrained_path=str(renamed)) == base  # same weights in another file: same features
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}, weights)
    assert keys()[0] != base[0]  # other weights under the same name
    after_weights = keys()
    os.utime(images[1], ns=(1, 1))
    assert keys()[0] != after_weights[0]  # an image's mtime
    images[2].write_bytes(images[2].read_bytes() + b"\0")
    assert keys()[1] != after_weights[1]  # an image's size
    before, st = keys(), os.stat(images[0])
    edited = bytearray(images[0].read_bytes())
    edited[-13] ^= 0xFF  # edited in place: same size, and the modification time put back
    images[0].write_bytes(bytes(edited))
    os.utime(images[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(images[0]).st_size == st.st_size and keys()[0] != before[0] and keys()[1] != before[1]


SETUP = textwrap.dedent("""
    import torch
    from engine.data.stores import feature_store as fs
    class Tiny(torch.nn.Module):  # timm's interface, without importing timm (the subprocesses start faster)
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 10)
        def forward_features(self, x):
            return self.conv(x)
        def forward_head(self, x, pre_logits=False):
            return x.mean((2, 3)) if pre_logits else self.fc(x.mean((2, 3)))
        def get_classifier(self):
            return self.fc
    torch.manual_seed(0)
    images = torch.utils.data.TensorDataset(torch.rand(20, 3, 8, 8), torch.zeros(20))
    key = dict(views=["eval"], rows=20, image_size=8, dtype="fp32", model="tiny")
    builder = fs.Builder(Tiny().eval(), torch.nn.Identity(), lambda view: images, None, 8, 0)
""")

BUILD_SCRIPT = textwrap.dedent("""
    import sys, time, os
    from pathlib import Path
    sys.path.insert(0, {root!r})
    exec({setup!r})
    from engine.system.distributed import Dist
    real_compute = fs._compute
    def slow_compute(*args, **kwargs):
        time.sleep(1.0)  # long enough for the other process to arrive while this one builds
        real_compute(*args, **kwargs)
        if {die!r}:
            os.kill(os.getpid(), 9)  # killed after writing the features, before the store is finished
    fs._compute = slow_compute
    while not Path({go!r}).exists():
        time.sleep(0.05)
    store = fs.ensure(key, builder, Dist(), show_progress=False, log=lambda s: None, root=Path({root_dir!r}))
    torch.save(store.view("eval"), {out!r} + f"-{{os.getpid()}}.pt")
    print("built" if store.built else "reused")
""")


def start_builders(tmp_path, n, die=False):
    go = tmp_path / "go"
    script = BUILD_SCRIPT.format(root=str(ROOT), setup=SETUP, die=die, go=str(go), out=str(tmp_path / "features"),
                                 root_dir=str(tmp_path / "cache" / "features"))
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    go.touch()
    return [(p.communicate(timeout=240)[0].strip(), p.returncode) for p in procs]


def test_two_processes_asking_for_the_same_store_build_it_once(tmp_path):
    results = start_builders(tmp_path, 2)
    assert sorted(out for out, _ in results) == ["built", "reused"], results
    a, b = (torch.load(p) for p in sorted(tmp_path.glob("features-*.pt")))
    assert torch.equal(a, b) and a.abs().sum() > 0


def test_a_killed_build_leaves_no_trusted_store(tmp_path):
    (out, code), = start_builders(tmp_path, 1, die=True)
    assert code == -9 and out == ""
    root = tmp_path / "cache" / "features"
    assert list(root.glob("*.building")) and not [p for p in root.iterdir() if p.is_dir() and "." not in p.name]
    names = {}
    exec(SETUP, names)  # the same store, asked for in this process
    store = fs.ensure(names["key"], names["builder"], Dist(), show_progress=False, root=root, log=lambda s: None)
    assert store.built and not list(root.glob("*.building"))  # built again, from scratch
    with open(store.folder / fs.DATA, "r+b") as f:
        f.truncate(100)  # damaged on disk: not trusted either
    assert fs.ensure(names["key"], names["builder"], Dist(), show_progress=False, root=root, log=lambda s: None).built


@pytest.mark.parametrize("change, named", [
    (dict(freeze="none"), "freeze"), (dict(freeze=2), "freeze"), (dict(unfreeze_epoch=3), "unfreeze_epoch"),
    (dict(drop_path=0.1), "drop_path"), (dict(sync_bn=True), "sync_bn"), (dict(cutmix_ratio=0.5), "cutmix_ratio")])
def test_anything_that_changes_a_frozen_feature_refuses_the_store(change, named):
    with pytest.raises(UserError, match=named) as e:
        load_recipe(None, {"freeze": "backbone", "feature_views": 2, **change})
    assert "\n" not in str(e.value)


def test_dry_run_says_store_size_existence_and_mixup(store_run, capsys):
    recipe, _ = store_run
    train(recipe.replace(mixup_ratio=0.5), dry_run=True)
    out = capsys.readouterr().out
    assert "feature store, training views: 2 view(s) x 45 images" in out and "(exists, reused)" in out
    assert "mixes the stored features" in out


def test_sigterm_mid_build_stops_within_a_batch_and_keeps_nothing(tmp_path):
    import os
    import signal
    from engine.system import preemption
    names = {}
    exec(SETUP, names)
    fetched = []
    images = names["builder"].images("eval")

    class Signalling(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            fetched.append(i)
            if len(fetched) == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # as a cloud pre-emption does, mid-build
            return images[i]
    names["builder"].images = lambda view: Signalling()
    names["key"]["views"] = ["eval", "eval_hflip"]  # the old build went on through every view first
    root = tmp_path / "features"
    preemption.install()
    try:
        with pytest.raises(preemption.Preempted, match="SIGTERM while building the feature store") as e:
            fs.ensure(names["key"], names["builder"], Dist(), show_progress=False, root=root, log=lambda s: None)
    finally:
        preemption.uninstall()
    assert e.value.exit_code == 128 + signal.SIGTERM
    assert len(fetched) == 8  # one batch of 8, not 2 views x 20 images
    assert not [p for p in root.iterdir() if p.is_dir()]  # no store, no half-built folder
