"""GradCAM: the closed form, batches, targets, no side effects, automatic layers, and the cam.py command."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import nn

import cam
from engine.cam.figures import page_size
from engine.errors import UserError
from engine.cam.gradcam import compute_cams, find_target_layer, ink_mass, resolve_target


def conv_gap_linear(classes: int = 4, inplace: bool = False) -> nn.Module:
    """conv -> ReLU -> global average pool -> linear: GradCAM here is exactly the classic CAM."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 8, 3, padding=1), act=nn.ReLU(inplace=inplace),
                                     pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(8, classes)))


def classic_cam(model: nn.Module, x: torch.Tensor, cls: int) -> torch.Tensor:
    """Zhou et al.'s CAM: class weights times the last feature maps, ReLU, min-max normalised."""
    with torch.no_grad():
        feats = model.act(model.conv(x))
        cam = torch.einsum("c,bchw->bhw", model.fc.weight[cls], feats).relu()
    low, high = cam.amin((1, 2), keepdim=True), cam.amax((1, 2), keepdim=True)
    return (cam - low) / (high - low)


def hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_gradcam_equals_classic_cam_for_conv_gap_linear():
    model, x = conv_gap_linear(), torch.randn(3, 3, 12, 10)
    for cls in range(4):
        res = compute_cams(model, x, targets=cls, layer="act")
        torch.testing.assert_close(res.maps[:, 0], classic_cam(model, x, cls), atol=1e-5, rtol=1e-4)
        assert (res.targets == cls).all() and res.maps.shape == (3, 1, 12, 10)


def test_no_side_effects_frozen_train_mode_channels_last_inplace_under_no_grad():
    model, x = conv_gap_linear(inplace=True), torch.randn(2, 3, 12, 10)
    expected = classic_cam(model, x, 2)
    model = model.to(memory_format=torch.channels_last).train()
    model.fc.weight.requires_grad_(False)  # partly frozen: the rest must stay trainable
    flags = [p.requires_grad for p in model.parameters()]
    with torch.no_grad():
        res = compute_cams(model, x.to(memory_format=torch.channels_last), targets=2, layer="act")
        assert not torch.is_grad_enabled()  # the caller's grad mode is back
    torch.testing.assert_close(res.maps[:, 0], expected, atol=1e-5, rtol=1e-4)
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert hooks(model) == 0


def test_fp32_maps_under_outer_autocast_and_inference_mode():
    torch.manual_seed(0)
    model, x = timm.create_model("test_resnet", num_classes=4), torch.randn(2, 3, 64, 64)
    reference = compute_cams(model, x, top_k=2).maps
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(compute_cams(model, x, top_k=2).maps, reference)
    with torch.inference_mode():
        torch.testing.assert_close(compute_cams(model, x.clone(), top_k=2).maps, reference)


def test_hooks_removed_and_mode_restored_after_an_error_inside():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom after the hooked layer")
    model = conv_gap_linear()
    model.fc = Broken()
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        compute_cams(model, torch.randn(1, 3, 8, 8), targets=0, layer="act")
    assert hooks(model) == 0 and all(m.training for m in model.modules()) and torch.is_grad_enabled()
    with pytest.raises(UserError, match="out of range"):
        compute_cams(conv_gap_linear(), torch.randn(1, 3, 8, 8), targets=9, layer="act")


def test_many_calls_leave_no_hooks_behind():
    model, x = conv_gap_linear(), torch.randn(1, 3, 8, 8)
    for _ in range(200):
        compute_cams(model, x, layer="act")
    assert hooks(model) == 0


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_batch_maps_equal_per_image_maps_and_topk_from_one_pass(method):
    torch.manual_seed(0)
    model, x = timm.create_model("test_resnet", num_classes=6), torch.randn(2, 3, 64, 64)
    batch = compute_cams(model, x, method=method, top_k=2)
    assert batch.maps.shape == (2, 2, 64, 64) and batch.layer == "layer4" and batch.grid == (2, 2)
    for i in range(2):
        for k in range(2):
            one = compute_cams(model, x[i:i + 1], targets=int(batch.targets[i, k]), method=method)
            torch.testing.assert_close(one.maps[0, 0], batch.maps[i, k], atol=1e-5, rtol=1e-4)
    assert batch.maps.min() >= 0 and batch.maps.max() <= 1


def test_different_target_classes_give_different_maps():
    torch.manual_seed(1)
    model, x = timm.create_model("test_convnext", num_classes=5), torch.randn(1, 3, 96, 96)
    maps = compute_cams(model, x, targets=[[0, 1, 2]]).maps[0]
    assert not torch.allclose(maps[0], maps[1], atol=1e-3) and not torch.allclose(maps[1], maps[2], atol=1e-3)


@pytest.mark.parametrize("name, size, layer", [
    ("test_resnet", None, "layer4"), ("test_convnext", None, "stages.3"), ("test_efficientnet", None, "bn2"),
    ("test_vit", None, "blocks.5.norm1"),
    ("test_resnet", 32, "layer3"),  # layer4 is 1x1 at 32 px: no spatial signal, so one stage earlier
])
def test_automatic_layer(name, size, layer):
    assert find_target_layer(timm.create_model(name, num_classes=3), size) == layer


def test_vit_grid_from_real_input_size_with_every_prefix_token_dropped():
    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=3, reg_tokens=4, dynamic_img_size=True)
    assert model.num_prefix_tokens == 5
    res = compute_cams(model, torch.randn(2, 3, 96, 128), top_k=2)
    assert res.grid == (6, 8) and res.maps.shape == (2, 2, 96, 128) and not res.flat.any()


def test_constant_map_is_flagged_not_divided_by_zero():
    model = timm.create_model("test_resnet", num_classes=3)
    res = compute_cams(model, torch.randn(2, 3, 32, 32), layer="layer4")  # 1x1 feature map
    assert res.flat.all() and torch.isfinite(res.maps).all() and (res.maps == 0).all()


def test_ink_mass_counts_the_map_on_dark_strokes():
    image = torch.full((3, 4, 4), 255, dtype=torch.uint8)
    image[:, 1] = 0  # one black stroke row on white paper
    on_stroke, on_paper = torch.zeros(4, 4), torch.zeros(4, 4)
    on_stroke[1], on_paper[3] = 1, 1
    assert ink_mass(on_stroke, image) == (1.0, 0.25) and ink_mass(on_paper, image)[0] == 0.0


def test_target_by_index_or_name_and_near_match_error():
    classes = ["cat", "dog", "hot air balloon"]
    assert resolve_target("1", classes) == 1 and resolve_target("Dog", classes) == 1
    assert resolve_target("hot air balloon", classes) == 2
    with pytest.raises(UserError, match="did you mean: hot air balloon"):
        resolve_target("hot air baloon", classes)
    with pytest.raises(UserError, match="out of range"):
        resolve_target("3", classes)


@pytest.fixture()
def sketch(tmp_path):
    """A 48x40 RGB sketch: the eval transform must resize and crop it to the checkpoint's 32 px."""
    arr = np.full((40, 48, 3), 255, np.uint8)
    arr[10:30, 20:24] = 0
    path = tmp_path / "sketch.png"
    Image.fromarray(arr).save(path)
    return path


def test_cli_writes_pages_maps_and_csv(trained_run, sketch, tmp_path):
    out = tmp_path / "cams"
    assert cam.main([str(sketch), "--ckpt", str(trained_run), "--out", str(out), "--top-k", "2", "--save-maps",
                     "--method", "gradcam++"]) == 0
    with Image.open(out / "sketch_cam.png") as page:
        assert page.size == page_size(2)
    maps = np.load(out / "sketch_cam.npy")
    assert maps.shape == (2, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    assert len(open(out / "cams.csv").readlines()) == 3


def test_cli_default_out_is_the_run_folder_and_one_row_per_image(trained_run, sketch):
    assert cam.main([str(sketch), "--ckpt", str(trained_run)]) == 0
    with Image.open(trained_run / "cams" / "sketch_cam.png") as page:
        assert page.size == page_size(1)


def test_cam_sees_the_validation_view_of_a_large_image(trained_run, sketch):
    """A 40 px image at crop_pct 0.95: validation pre-resizes (cache) before the eval crop; so must cam and predict."""
    import pandas as pd

    from engine.cam.command import model_inputs
    from engine.data.batches.loader import build_datasets
    from engine.data.pixels.images import load_image
    from engine.data.batches.loader import eval_dataset
    from engine.predict.inference import load_member
    from engine.data.pixels.transforms import build_eval_transform
    member = load_member(trained_run / "fold0" / "best.pt", torch.device("cpu"))
    table = pd.DataFrame({"path": [str(sketch)], "target": [0]})
    validation = build_datasets(member.recipe, table, table, member.crop_pct, 0)[1][0][0]
    raw = build_eval_transform(member.recipe.image_size, member.crop_pct)(load_image(str(sketch)))
    assert member.crop_pct > 0.875 and not torch.equal(raw, validation)  # else this test could not fail
    assert torch.equal(model_inputs(member, [sketch])[0][0], validation)
    assert torch.equal(eval_dataset([str(sketch)], member.recipe.image_size, member.crop_pct)[0][0], validation)


def test_cli_unknown_class_name_is_a_clear_error(trained_run, sketch, capsys):
    assert cam.main([str(sketch), "--ckpt", str(trained_run), "--target", "sevn"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown class 'sevn'") and "seven" in err


def test_cli_mistakes_grid(trained_run, tmp_path):
    out = tmp_path / "m"
    assert cam.main(["--mistakes", str(trained_run), "--count", "3", "--out", str(out)]) == 0
    with Image.open(out / "mistakes.png") as grid:
        assert grid.size[0] > grid.size[1] > 100
