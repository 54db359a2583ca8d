"""Fine-tuning large pretrained backbones (issue 13): freeze, unfreeze_epoch, layer_decay, head_lr_scale,
grad_checkpointing, the mlp head, flip TTA and init_head, on timm test_* models and a tiny data set."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from engine.predict.inference import load_ensemble, predict_probs
from engine.models import model_from_recipe, set_head
from engine.recipe import load_recipe
from engine.system import preemption as preempt
from engine.train import freezing
from engine.train.orchestrator import train
from engine.train.optim import build_optimizer
from tests.conftest import ROOT, stop_after

# three ImageNet-1k WordNet ids and one class ImageNet does not have
CLASSES = ["n01440764", "n01443537", "not_in_imagenet", "n01484850"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """64 images of 4 classes (a bar per class, in the competition layout), 32 px: a few steps per epoch."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    rows = []
    for target, name in enumerate(CLASSES):
        (root / "train" / name).mkdir(parents=True)
        for i in range(16):
            img = np.full((32, 32, 3), 255, np.uint8)
            img[4 + 6 * target:8 + 6 * target, 4:28] = 0  # the class is where the bar is
            img = np.clip(img.astype(int) - rng.integers(0, 60, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / "train" / name / f"{i}.png")
            rows.append(f"{name},{name}/{i}.png,{target}")
    (root / "train.csv").write_text("class_name,image_path,target\n" + "\n".join(rows) + "\n")
    return root


def tiny_recipe(tiny_dir: Path, out: Path, **changes):
    base = dict(model="test_vit", data_dir=str(tiny_dir / "train"), train_csv=str(tiny_dir / "train.csv"),
                test_dir=str(tiny_dir / "train"), test_csv=str(tiny_dir / "train.csv"), image_size=32, batch_size=8,
                epochs=1, lr=3e-3, num_workers=0, output_dir=str(out), name="tiny", warmup_epochs=0.0)
    base.update(changes)
    return load_recipe(None, base)


def saved_model(path: Path, name: str, num_classes: int) -> Path:
    """A randomly initialised timm model saved as a 'pretrained' weights file (.pt or .safetensors)."""
    torch.manual_seed(1)
    state = timm.create_model(name, num_classes=num_classes).state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def last(run: Path) -> dict:
    return torch.load(run / "fold0" / "last.pt", weights_only=True)


# --- the head contract, groups and learning rates (no training loop) ---

@pytest.mark.parametrize("name", ["test_vit", "test_resnet", "test_convnext", "test_efficientnet"])
def test_mlp_head_is_get_classifier_on_pooled_pre_logits(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5)
    set_head(model, "mlp", 5, hidden=16, dropout=0.1)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        assert feats.ndim == 2 and isinstance(model.get_classifier(), torch.nn.Sequential)
        assert torch.allclose(model.get_classifier()(feats), model(x), atol=1e-6)


@pytest.mark.parametrize("name", ["test_vit", "test_convnext", "test_resnet"])
def test_freeze_n_trains_exactly_the_last_n_groups_and_the_head(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3)
    layer = freezing.layer_ids(model)
    top = layer["head.weight" if "head.weight" in layer else "head.fc.weight" if "head.fc.weight" in layer
                else "fc.weight"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    freezing.apply_freeze(model, freezing.trainable_names(model, 2))
    opt = build_optimizer(model, "SGD", 0.1, 0.0, 0.0)
    model(torch.randn(4, 3, 32, 32)).square().mean().backward()
    opt.step()
    expected = {n for n in layer if layer[n] >= top - 2}  # the top group (head) and the 2 below
    assert {n for n, p in model.named_parameters() if p.grad is not None} == expected
    assert {layer[n] for n in expected} == {top, top - 1, top - 2}
    for n, p in model.named_parameters():
        assert (n in expected) or torch.equal(p, before[n]), n
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if layer[n] == top - 2)


def test_layer_decay_and_head_lr_scale_give_each_group_the_formula_lr():
    model = timm.create_model("test_vit", num_classes=3)
    layer, head = freezing.layer_ids(model), freezing.head_names(model)
    opt = build_optimizer(model, "AdamW", 1e-3, 0.05, layer_decay=0.7, head_lr_scale=10.0)
    top = max(layer.values())
    name_of = {id(p): n for n, p in model.named_parameters()}
    seen = []
    for g in opt.param_groups:
        for p in g["params"]:
            n = name_of[id(p)]
            seen.append(n)
            expected = 1e-3 * 0.7 ** (top - layer[n]) * (10.0 if n in head else 1.0)
            assert g["lr"] == pytest.approx(expected, rel=1e-12), n
            no_decay = p.ndim <= 1 or n in ("pos_embed", "cls_token")
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), n
    assert sorted(seen) == sorted(n for n, _ in model.named_parameters())  # every parameter once


def test_head_lr_scale_alone_scales_only_the_head():
    model = timm.create_model("test_resnet", num_classes=3)
    opt = build_optimizer(model, "SGD", 1e-4, 0.05, head_lr_scale=10.0)
    head = {id(p) for p in model.get_classifier().parameters()}
    for g in opt.param_groups:
        for p in g["params"]:
            assert g["lr"] == pytest.approx(1e-3 if id(p) in head else 1e-4, rel=1e-12)


@pytest.mark.parametrize("name,freeze", [("test_vit", "none"), ("test_convnext", "none"), ("test_vit", 1)])
def test_gradients_with_and_without_checkpointing_agree(name, freeze):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3)
    freezing.apply_freeze(model, freezing.trainable_names(model, freeze))
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for on in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(on)
        model(x).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert set(grads[0]) == set(grads[1]) == {n for n, p in model.named_parameters() if p.requires_grad}
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-5), n


def test_init_head_imagenet_copies_exactly_the_matching_rows(tmp_path, capsys):
    source = saved_model(tmp_path / "in1k.safetensors", "test_resnet", 1000)
    recipe = load_recipe(None, dict(model="test_resnet", pretrained_path=str(source), init_head="imagenet"))
    model = model_from_recipe(recipe, CLASSES)
    from safetensors.torch import load_file
    old = load_file(str(source))
    rows = {w: i for i, w in enumerate(timm.data.ImageNetInfo().label_names())}
    for i, c in enumerate(CLASSES):
        if c in rows:
            assert torch.equal(model.fc.weight[i], old["fc.weight"][rows[c]])
            assert torch.equal(model.fc.bias[i], old["fc.bias"][rows[c]])
    assert not any(torch.equal(model.fc.weight[2], r) for r in old["fc.weight"])  # unmatched: random
    assert torch.equal(model.conv1[0].weight, old["conv1.0.weight"])  # the backbone came from the file
    out = capsys.readouterr().out
    assert "1 of 4 classes have no ImageNet-1k row" in out and "not_in_imagenet" in out


# --- whole runs on the tiny data ---

@pytest.fixture(scope="module")
def frozen_run(tiny_dir, tmp_path_factory):
    """test_resnet (batch-norm) with freeze="backbone", an mlp head and hv flips, from a known start."""
    out = tmp_path_factory.mktemp("frozen")
    start = saved_model(out / "start.pt", "test_resnet", 10)  # 10-class head: replaced by ours
    recipe = tiny_recipe(tiny_dir, out, model="test_resnet", pretrained_path=str(start), freeze="backbone",
                         head="mlp", head_hidden=16, flip="hv", epochs=1)
    return train(recipe, show_progress=False), torch.load(start, weights_only=True)


def test_frozen_backbone_and_batchnorm_buffers_stay_bitwise_while_head_trains(frozen_run):
    run, start = frozen_run
    ckpt = last(run)
    backbone = [k for k in start if not k.startswith("fc.")]
    assert any("running_mean" in k for k in backbone)
    for k in backbone:
        assert torch.equal(ckpt["model"][k], start[k]), k  # weights, BN running stats and counters
    assert len(ckpt["optimizer"]["state"]) == 4  # the mlp head's 4 tensors only: frozen parts carry no state
    fresh = model_from_recipe(load_recipe(None, ckpt["recipe"] | {"pretrained_path": None}), CLASSES, weights=False)
    assert ckpt["model"]["fc.3.weight"].shape == (4, 16)
    assert not torch.equal(ckpt["model"]["fc.0.weight"], fresh.fc[0].weight)  # the head trained


def test_mlp_head_round_trips_into_predict_with_hv_tta_and_cam(frozen_run, tiny_dir):
    from engine.cam.gradcam import compute_cams
    from engine.data.pixels.images import load_image
    from engine.data.pixels.transforms import build_eval_transform
    run, _ = frozen_run
    members = load_ensemble([run / "fold0" / "best.pt"], torch.device("cpu"))
    m = members[0]
    assert isinstance(m.model.get_classifier(), torch.nn.Sequential)
    images = [str(tiny_dir / "train" / c / "0.png") for c in CLASSES]
    got = predict_probs(members, images, batch_size=3, flip=True, num_workers=0, show_progress=False)
    tf = build_eval_transform(32, m.crop_pct)
    x = m.normalize(torch.stack([tf(load_image(p)) for p in images]))
    with torch.no_grad():  # the four views of "hv": as is, h, v, both
        views = [m.model(v).softmax(1) for v in (x, x.flip(3), x.flip(2), x.flip((2, 3)))]
    assert torch.allclose(got, sum(views) / 4, atol=1e-5)
    assert not torch.allclose(got, (views[0] + views[1]) / 2, atol=1e-5)
    assert compute_cams(m.model, x[:2]).maps.shape[0] == 2


@pytest.fixture(scope="module")
def unfreeze_recipe(tiny_dir, tmp_path_factory):
    """test_vit from a 1000-class 'pretrained' file: ImageNet head rows, freeze=1, everything from epoch 2."""
    out = tmp_path_factory.mktemp("unfreeze")
    start = saved_model(out / "in1k.pt", "test_vit", 1000)
    return dict(pretrained_path=str(start), init_head="imagenet", freeze=1, unfreeze_epoch=2, epochs=2,
                layer_decay=0.8, head_lr_scale=5.0, warmup_epochs=0.5), start




def test_unfreezing_trains_the_backbone_and_a_stopped_run_resumes_bitwise(tiny_dir, tmp_path, unfreeze_recipe,
                                                                           monkeypatch, capsys):
    changes, start = unfreeze_recipe
    full = train(tiny_recipe(tiny_dir, tmp_path / "a", **changes), show_progress=False)
    printed = capsys.readouterr().out
    assert "head scores val acc" in printed and "epoch 2: everything trains now" in printed
    a = last(full)
    start = torch.load(start, weights_only=True)
    assert not torch.equal(a["model"]["patch_embed.proj.weight"], start["patch_embed.proj.weight"])  # unfrozen
    updates = a["scheduler"]["last_epoch"] // 2
    stop_after(monkeypatch, updates + 2)  # epoch 2, after unfreezing, mid-epoch
    with pytest.raises(preempt.Preempted):
        train(tiny_recipe(tiny_dir, tmp_path / "b", **changes), show_progress=False)
    monkeypatch.undo()
    stopped = next((tmp_path / "b").glob("*/*"))
    progress = last(stopped)["progress"]
    assert progress["epoch"] == 1 and progress["step"] > 0 and progress["unfrozen"]
    train(None, resume=str(stopped), show_progress=False)
    b = last(stopped)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k  # bitwise
    assert a["metrics"]["train_loss"] == b["metrics"]["train_loss"]


def test_unfreezing_under_torchrun_equals_one_process_of_twice_the_batch(tiny_dir, tmp_path):
    start = saved_model(tmp_path / "start.pt", "test_vit", 4)

    def args(out, batch):  # SGD without weight decay: DDP's averaged gradients equal the big batch's
        return ["train.py", "--no-progress", "model=test_vit", f"data_dir='{tiny_dir}/train'",
                f"train_csv='{tiny_dir}/train.csv'", "image_size=32", f"batch_size={batch}", "epochs=2",
                "num_workers=0", "optimizer=SGD", "lr=0.05", "weight_decay=0.0", "freeze=backbone",
                "unfreeze_epoch=2", "warmup_epochs=0.0", f"pretrained_path='{start}'", f"output_dir='{out}'"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          *args(tmp_path / "two", 4)], cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "everything trains now" in two.stdout
    one = subprocess.run([sys.executable, *args(tmp_path / "one", 8)], cwd=ROOT, capture_output=True, text=True,
                         timeout=240, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = (torch.load(next((tmp_path / w).glob("*/*/fold0/last.pt")), weights_only=True)["model"]
            for w in ("two", "one"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k  # the joined parameters' gradients were all-reduced too
    initial = torch.load(start, weights_only=True)
    assert not torch.allclose(a["blocks.0.attn.qkv.weight"], initial["blocks.0.attn.qkv.weight"], atol=1e-4)
