"""Small drawings: small_input_stem keeps a larger last feature map, travels in the checkpoint into predict and cam,
and the small-map warning names it; the mirror check tells mirror-sensitive classes from mirror-safe ones."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image, ImageDraw

from conftest import digits_recipe
from engine.errors import UserError
from engine.models import small_input_stem, small_map_warning


@pytest.mark.parametrize("name, before, after", [("test_resnet", (1, 1), (4, 4)), ("test_convnext", (1, 1), (4, 4)),
                                                 ("test_efficientnet", (1, 1), (2, 2))])
def test_small_input_stem_keeps_a_larger_last_feature_map_with_the_same_weights(name, before, after):
    model = timm.create_model(name, num_classes=3).eval()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert model.forward_features(torch.zeros(1, 3, 32, 32)).shape[2:] == before
    small_input_stem(model, name)
    assert model.forward_features(torch.zeros(1, 3, 32, 32)).shape[2:] == after
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes  # pretrained weights still fit
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 3)  # 28 px too (convnext's patchify conv pads)


def test_a_model_without_a_known_stem_is_a_clear_error():
    with pytest.raises(UserError, match="small_input_stem=False"):
        small_input_stem(timm.create_model("test_vit", num_classes=3), "test_vit")


def test_small_map_warning_names_the_key_and_is_gone_with_it():
    model = timm.create_model("resnet18", num_classes=10).eval()
    assert "small_input_stem=True" in small_map_warning(model, 32, "resnet18")
    small_input_stem(model, "resnet18")
    assert small_map_warning(model, 32, "resnet18") is None  # 4x4 at the last stage


def test_the_shipped_doodles_recipe_is_quiet_at_its_2x2_map():
    """The warning fires at 1x1 only: a 2x2 last map (resnet10t at 48 px) was the measured best trade."""
    from engine.models import last_feature_map
    from engine.recipe import load_recipe
    recipe = load_recipe(str(Path(__file__).resolve().parent.parent / "recipes" / "doodles.py"))
    model = timm.create_model(recipe.model, num_classes=10)
    assert last_feature_map(model, recipe.image_size) == (2, 2)
    assert small_map_warning(model, recipe.image_size, recipe.model) is None
    assert small_map_warning(model, 32, recipe.model) is not None  # 1x1 at 32 px


def test_feature_store_refuses_the_small_stem():
    from engine.recipe import load_recipe
    with pytest.raises(UserError, match="small_input_stem"):
        load_recipe(None, {"freeze": "backbone", "feature_views": 2, "small_input_stem": True})


@pytest.fixture(scope="module")
def small_stem_run(digits_dir, tmp_path_factory) -> Path:
    """One epoch of test_resnet with the small-input stem on 300 digits at 16 px."""
    from engine.train.orchestrator import train
    tmp = tmp_path_factory.mktemp("small_stem")
    table = pd.read_csv(digits_dir / "train.csv").sample(300, random_state=0)
    table.to_csv(tmp / "train.csv", index=False)
    recipe = digits_recipe(digits_dir, tmp / "runs", train_csv=str(tmp / "train.csv"), image_size=16, epochs=1,
                           small_input_stem=True, fold_groups="none")
    return train(recipe, show_progress=False)


def test_small_input_stem_round_trips_through_the_checkpoint_into_predict_and_cam(small_stem_run, digits_dir,
                                                                                   tmp_path):
    import cam
    from engine.cam.command import model_inputs
    from engine.cam.gradcam import compute_cams
    from engine.predict.inference import load_member, predict_probs
    best = small_stem_run / "fold0" / "best.pt"
    ckpt = torch.load(best, weights_only=True)
    assert ckpt["recipe"]["small_input_stem"] is True
    member = load_member(best, torch.device("cpu"))
    standard = timm.create_model("test_resnet", num_classes=len(ckpt["classes"]))
    standard.load_state_dict(ckpt["model"])  # the same weights fit the standard stem: only the layout tells
    standard.eval()
    assert member.model.forward_features(torch.zeros(1, 3, 16, 16)).shape[2:] == (2, 2)
    assert standard.forward_features(torch.zeros(1, 3, 16, 16)).shape[2:] == (1, 1)

    images = [str(digits_dir / "test" / p) for p in pd.read_csv(digits_dir / "test.csv")["image_path"][:4]]
    probs = predict_probs([member], images, num_workers=0, show_progress=False)
    x = model_inputs(member, [Path(p) for p in images])[1]
    with torch.no_grad():
        assert torch.allclose(probs, member.model(x).softmax(1), atol=1e-5)
        assert not torch.allclose(probs, standard(x).softmax(1), atol=1e-3)

    out = tmp_path / "cams"
    assert cam.main([images[0], "--ckpt", str(best), "--out", str(out), "--save-maps", "--top-k", "1"]) == 0
    saved = torch.from_numpy(np.load(out / f"{Path(images[0]).stem}_cam.npy"))
    assert saved.shape[-2:] == (16, 16)
    expected = compute_cams(member.model, x[:1], top_k=1)
    assert torch.allclose(saved.reshape(expected.maps.shape), expected.maps, atol=1e-4)
    assert not torch.allclose(saved.reshape(expected.maps.shape), compute_cams(standard, x[:1], top_k=1).maps, atol=1e-2)


def shapes(root: Path, mirrored_pairs: bool) -> tuple[list[str], list[int]]:
    """Three classes of strokes with jitter: with mirrored_pairs, class 1 is class 0 mirrored left-right (like b / d);
    without, every class is drawn left-right symmetric, so a mirror keeps it."""
    rng = np.random.default_rng(0)
    paths, targets = [], []
    for k in range(120):
        t = k % 3
        image = Image.new("L", (24, 24), 255)
        draw = ImageDraw.Draw(image)
        dx, dy = (int(v) for v in rng.integers(-2, 3, 2))
        if mirrored_pairs and t < 2:  # a vertical bar with a bowl on its right (0) or left (1)
            bar = 7 if t == 0 else 16
            draw.line([(bar + dx, 3 + dy), (bar + dx, 20 + dy)], fill=0, width=2)
            draw.ellipse([(7 + dx if t == 0 else 6 + dx), 11 + dy, (17 + dx if t == 0 else 16 + dx), 20 + dy],
                         outline=0, width=2)
        elif t == 0:
            draw.ellipse([5 + dx, 5 + dy, 18 + dx, 18 + dy], outline=0, width=2)
        elif t == 1:
            draw.line([(4 + dx, 12 + dy), (19 + dx, 12 + dy)], fill=0, width=2)
        else:
            draw.line([(11 + dx, 3 + dy), (11 + dx, 20 + dy)], fill=0, width=2)
        path = root / f"{k}.png"
        image.save(path)
        paths.append(str(path))
        targets.append(t)
    return paths, targets


def test_mirror_check_says_none_for_mirrored_pairs_and_hv_for_symmetric_classes(tmp_path):
    from engine.explore.flip_check import check_flips
    (tmp_path / "pairs").mkdir()
    (tmp_path / "symmetric").mkdir()
    pairs = check_flips(*shapes(tmp_path / "pairs", True))
    assert pairs.h < 0.9 * pairs.plain and pairs.suggested == "none"
    symmetric = check_flips(*shapes(tmp_path / "symmetric", False))
    assert symmetric.suggested == "hv" and "suggested flip='hv'" in symmetric.describe()


def test_mirror_check_declines_too_few_images_per_class(tmp_path):
    from engine.explore.flip_check import check_flips
    paths, targets = shapes(tmp_path, False)
    assert check_flips(paths[:9], targets[:9]) is None  # 3 per class
