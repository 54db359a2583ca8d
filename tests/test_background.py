"""Paper colour: measured from the borders, used by augmentation and the CAM ink measure, kept in checkpoints;
and the warning for a last feature map too small to hold any layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cam.gradcam import ink_mass
from engine.data.pixels.background import BLACK, WHITE, measure_background, resolve_background
from engine.data.pixels.transforms import build_train_transform
from engine.errors import UserError
from engine.recipe import load_recipe


def stroke_image(paper: int, ink: int, size: int = 40, seed: int = 0) -> np.ndarray:
    """A size x size grey drawing: a few random strokes of level `ink` in the middle of `paper`."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size), paper, dtype=np.uint8)
    for _ in range(3):
        r, c = rng.integers(size // 4, 3 * size // 4 - 4, size=2)
        if rng.random() < 0.5:
            image[r:r + 2, c:c + size // 3] = ink
        else:
            image[r:r + size // 3, c:c + 2] = ink
    return image


def write_set(folder: Path, paper: int, ink: int, n: int = 12) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(stroke_image(paper, ink, seed=i)).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("paper, ink, name, light", [(255, 20, "white", False), (0, 230, "black", True),
                                                     (128, 10, "grey", False)])
def test_background_is_measured_from_the_borders(tmp_path, paper, ink, name, light):
    found = measure_background(write_set(tmp_path / name, paper, ink))
    assert found.rgb == (paper,) * 3 and found.strokes_light is light
    assert found.describe().startswith(f"background: {name} ({paper}, {paper}, {paper}), strokes "
                                       f"{'light' if light else 'dark'}")


def test_recipe_background_overrides_the_measurement_and_is_checked(tmp_path):
    paths = write_set(tmp_path / "dark", 0, 230)
    assert resolve_background("white", paths).rgb == WHITE
    assert resolve_background((10, 20, 30), paths).rgb == (10, 20, 30)
    assert load_recipe(None, {"background": [0, 0, 0]}).background == (0, 0, 0)  # as recipe.json gives it back
    for bad in ("blak", (0, 0), (0, 0, 256), (0.0, 0, 0)):
        with pytest.raises(UserError, match="'background' must be \"auto\", \"white\", \"black\" or an RGB triple"):
            load_recipe(None, {"background": bad})


def _border(image: torch.Tensor) -> torch.Tensor:
    ring = torch.ones(image.shape[1:], dtype=torch.bool)
    ring[2:-2, 2:-2] = False
    return image[:, ring]


def test_augmentation_fills_light_on_dark_images_with_their_black_paper(tmp_path):
    image = torch.from_numpy(stroke_image(0, 255)).expand(3, -1, -1).contiguous()  # strokes stay off the border
    paper = resolve_background("auto", write_set(tmp_path / "dark", 0, 255)).rgb
    brightest = {}
    for fill in (paper, WHITE):
        transform = build_train_transform(32, "light", random_erase=0.5, crop_scale=1.0, fill=fill)
        torch.manual_seed(0)
        brightest[fill] = max(int(_border(transform(image)).max()) for _ in range(30))
    assert paper == BLACK and brightest[BLACK] < 40  # no white corners, nothing stroke-like at the edges
    assert brightest[WHITE] > 200  # the old white fill paints exactly those


def test_ink_share_of_an_inverted_image_is_the_share_of_the_original():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, size=(3, 24, 24), dtype=np.uint8))
    cam = torch.from_numpy(rng.random((24, 24)).astype(np.float32))
    original = ink_mass(cam, image, WHITE)
    assert 0.1 < original[1] < 0.9
    assert ink_mass(cam, 255 - image, BLACK) == original
    assert ink_mass(cam, 255 - image, WHITE) != original  # ink as "dark pixels" would measure the paper


def test_small_map_warning_fires_for_resnet18_at_32_px_not_224():
    import timm

    from engine.models import small_map_warning
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    warning = small_map_warning(model, 32, "resnet18")
    assert warning and "1x1" in warning and "image_size >= 96" in warning and "small inputs" in warning
    assert small_map_warning(model, 224, "resnet18") is None
    assert model.training  # the probe leaves the model as it found it


def test_checkpoint_keeps_the_measured_background_for_cam(tmp_path):
    import pandas as pd

    from engine.predict.inference import load_member
    from engine.train.orchestrator import train
    rows = []
    for cls in ("a", "b"):
        for path in write_set(tmp_path / "data" / cls, 0, 230 if cls == "a" else 150, n=8):
            rows.append((cls, f"{cls}/{Path(path).name}", int(cls == "b")))
    pd.DataFrame(rows, columns=["class_name", "image_path", "target"]).to_csv(tmp_path / "train.csv", index=False)
    recipe = load_recipe(None, dict(model="test_resnet", data_dir=str(tmp_path / "data"),
                                    train_csv=str(tmp_path / "train.csv"), image_size=16, batch_size=4, epochs=1,
                                    num_workers=0, val_fraction=0.25, output_dir=str(tmp_path / "runs")))
    run = train(recipe, show_progress=False)
    member = load_member(run / "fold0" / "best.pt", torch.device("cpu"))
    assert member.background == BLACK
    old = torch.load(run / "fold0" / "best.pt", weights_only=True)
    del old["data"]["background"]  # a checkpoint from before the background was saved
    torch.save(old, tmp_path / "old.pt")
    assert load_member(tmp_path / "old.pt", torch.device("cpu")).background == WHITE
