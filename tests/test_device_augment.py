"""augment_on="device": the batched warp equals the worker path's transforms in what it draws and
what it does with a draw; fill, seeding, resume and the demo's accuracy."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import ks_2samp
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from engine.data.pixels.device_augment import Canvas, DeviceAugment, Draws, pad_to_canvas
from engine.data.batches.loader import CanvasCollate
from engine.errors import UserError
from engine.recipe import load_recipe
from engine.train.orchestrator import train
from tests.conftest import digits_recipe
from tests.test_resume import stop_after, weights

N = 4000  # draws per distribution
SIZE = 224


def no_change(n: int = 1) -> torch.Tensor:
    return torch.tensor([[0.0, 0, 0, 1, 0]], dtype=torch.float64).repeat(n, 1)


def smooth_image(h: int, w: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([xx * 255, yy * 255, (torch.sin(xx * 6) * torch.cos(yy * 5) * 0.5 + 0.5) * 255]).round().byte()


def worker_params(transform, shape: tuple, n: int = N, seed: int = 0) -> list[dict]:
    """What the worker path's torchvision transform draws for an image of `shape`, n times."""
    torch.manual_seed(seed)
    probe = torch.empty(shape, dtype=torch.uint8)
    return [transform.make_params([probe]) for _ in range(n)]


def device_draws(extent: tuple[int, int], augment: str = "light", random_erase: float = 0.0, crop_scale: float = 0.35,
                 steps: int = N // 200) -> Draws:
    """The device path's draws for `steps` batches of 200 images of one extent."""
    aug = DeviceAugment(SIZE, crop_scale, augment, random_erase, seed=3)
    extents = torch.tensor([extent] * 200)
    parts = [aug.draw(extents, epoch=0, step=s) for s in range(steps)]
    return Draws(*(torch.cat([getattr(p, f) for p in parts]) for f in ("crop", "flip", "affine", "erase")))


def test_an_identity_draw_returns_the_canvas_unchanged():
    image = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    canvas = Canvas(image, torch.tensor([[64, 64]] * 2), torch.tensor([False, False]))
    draws = Draws(torch.tensor([[0.0, 0, 64, 64]] * 2), torch.tensor([False, False]), no_change(2), torch.zeros(2, 4))
    out = DeviceAugment(64, augment="none").apply(canvas, draws)
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float32
    assert torch.equal(out.round().byte(), image) and (out - image.float()).abs().max() < 0.01


def test_canvas_keeps_every_pixel_and_the_true_extent_and_pads_with_the_fill():
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in ((40, 70), (75, 30))]
    canvas, targets = CanvasCollate(fill=(10, 20, 30))([(im, torch.tensor(i)) for i, im in enumerate(images)])
    assert canvas.images.shape == (2, 3, 64, 96) and canvas.extents.tolist() == [[40, 70], [75, 30]]
    assert canvas.transposed.tolist() == [False, True]  # the portrait image lies on its side: a smaller canvas
    assert torch.equal(canvas.images[0, :, :40, :70], images[0])
    assert torch.equal(canvas.images[1, :, :30, :75], images[1].transpose(1, 2))
    assert canvas.images[0, :, 40:].flatten(1).unique(dim=1).tolist() == [[10], [20], [30]]
    assert targets.tolist() == [0, 1]


def test_a_portrait_image_warps_as_if_it_lay_upright():
    image = smooth_image(90, 50)
    draws = Draws(torch.tensor([[10.0, 5, 60, 40]]), torch.tensor([True]),
                  torch.tensor([[6.0, 2, -1, 1.0, 3]]).double(), torch.zeros(1, 4))
    aug = DeviceAugment(48)
    laid = aug.apply(pad_to_canvas([image]), draws)
    upright = aug.apply(Canvas(image[None], torch.tensor([[90, 50]]), torch.tensor([False])), draws)
    assert pad_to_canvas([image]).transposed.item() and (laid - upright).abs().max() < 1e-3


@pytest.mark.parametrize("shape", [(256, 341), (256, 256), (400, 256)])
def test_crop_area_and_aspect_ratio_follow_the_worker_paths_random_resized_crop(shape):
    workers = worker_params(v2.RandomResizedCrop(SIZE, scale=(0.35, 1.0)), (3, *shape))
    w_area = np.array([p["height"] * p["width"] for p in workers]) / (shape[0] * shape[1])
    w_ratio = np.array([p["width"] / p["height"] for p in workers])
    w_top = np.array([p["top"] / max(1, shape[0] - p["height"]) for p in workers])
    top, left, h, w = device_draws(shape).crop.numpy().T
    assert ks_2samp(w_area, h * w / (shape[0] * shape[1])).pvalue > 1e-3
    assert ks_2samp(w_ratio, w / h).pvalue > 1e-3
    assert ks_2samp(w_top, top / np.maximum(1, shape[0] - h)).pvalue > 1e-3
    assert (top >= 0).all() and (top + h <= shape[0]).all() and (left >= 0).all() and (left + w <= shape[1]).all()
    assert (h * w >= 0.35 * shape[0] * shape[1] * 0.98).all()  # never below crop_scale (up to rounding)


def test_a_different_crop_scale_is_detected():  # the statistical test above can fail
    workers = worker_params(v2.RandomResizedCrop(SIZE, scale=(0.35, 1.0)), (3, 256, 256))
    w_area = np.array([p["height"] * p["width"] for p in workers]) / 256**2
    _, _, h, w = device_draws((256, 256), crop_scale=0.5).crop.numpy().T
    assert ks_2samp(w_area, h * w / 256**2).pvalue < 1e-6


def test_flip_share_affine_and_erasing_ranges_follow_the_worker_path():
    d = device_draws((256, 300), random_erase=0.5)
    assert abs(d.flip.double().mean().item() - 0.5) < 4 * math.sqrt(0.25 / N)  # RandomHorizontalFlip(p=0.5)
    workers = worker_params(v2.RandomAffine(degrees=10, translate=(0.06, 0.06), scale=(0.9, 1.1), shear=5),
                            (3, SIZE, SIZE))
    columns = {"angle": [p["angle"] for p in workers], "tx": [p["translate"][0] for p in workers],
               "ty": [p["translate"][1] for p in workers], "scale": [p["scale"] for p in workers],
               "shear": [p["shear"][0] for p in workers]}
    bounds = {"angle": 10, "tx": round(0.06 * SIZE), "ty": round(0.06 * SIZE), "scale": (0.9, 1.1), "shear": 5}
    for k, (name, values) in enumerate(columns.items()):
        ours = d.affine[:, k].numpy()
        assert ks_2samp(values, ours).pvalue > 1e-3, name
        low, high = bounds[name] if isinstance(bounds[name], tuple) else (-bounds[name], bounds[name])
        assert low <= ours.min() and ours.max() <= high, name
    erasing = worker_params(v2.RandomErasing(p=1.0, scale=(0.02, 0.15), value=255), (3, SIZE, SIZE))
    on = d.erase[:, 2] > 0
    assert abs(on.double().mean().item() - 0.5) < 4 * math.sqrt(0.25 / N)
    assert ks_2samp([p["h"] * p["w"] for p in erasing], (d.erase[on, 2] * d.erase[on, 3]).numpy()).pvalue > 1e-3
    assert ks_2samp([p["h"] / p["w"] for p in erasing], (d.erase[on, 2] / d.erase[on, 3]).numpy()).pvalue > 1e-3


@pytest.mark.parametrize("flip,affine", [(False, (8.0, 0, 0, 1.0, 0)), (True, (0.0, 3, -2, 1.0, 4)),
                                         (True, (-7.0, 2, 1, 1.05, -3))])
def test_one_warp_does_what_crop_resize_flip_and_affine_do_in_turn(flip, affine):
    image = smooth_image(120, 160)
    draws = Draws(torch.tensor([[10.0, 20, 80, 100]]), torch.tensor([flip]), torch.tensor([affine]).double(),
                  torch.zeros(1, 4))
    out = DeviceAugment(64, augment="light").apply(pad_to_canvas([image]), draws)[0]
    ref = TF.resized_crop(image.float(), 10, 20, 80, 100, [64, 64], antialias=True)
    ref = TF.horizontal_flip(ref) if flip else ref
    angle, tx, ty, scale, shear = affine
    ref = TF.affine(ref, angle=angle, translate=[int(tx), int(ty)], scale=scale, shear=[shear, 0.0],
                    interpolation=InterpolationMode.BILINEAR, fill=255)
    inner = (slice(None), slice(10, -10), slice(10, -10))  # the edges differ on purpose: no white corners here
    assert (out - ref)[inner].abs().mean() < 0.5


def test_outside_the_image_is_the_background_fill():
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)  # black ink everywhere
    canvas = pad_to_canvas([image], fill=(200, 30, 90))
    draws = Draws(torch.tensor([[0.0, 0, 40, 40]]), torch.tensor([False]), torch.tensor([[0.0, 0, 0, 0.5, 0]]).double(),
                  torch.zeros(1, 4))  # shrunk to half: the border shows what lies beyond the image
    out = DeviceAugment(64, augment="light", fill=(200, 30, 90)).apply(canvas, draws)[0]
    assert out[:, :12, :].flatten(1).unique(dim=1).tolist() == [[200.0], [30.0], [90.0]]
    assert out[:, 24:40, 24:40].abs().max() < 1e-3  # the image itself, unchanged
    erased = DeviceAugment(64, augment="none", fill=(1, 2, 3)).apply(
        Canvas(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), torch.tensor([[64, 64]]), torch.tensor([False])),
        Draws(torch.tensor([[0.0, 0, 64, 64]]), torch.tensor([False]), no_change(), torch.tensor([[5.0, 6, 10, 20]])))
    assert erased[0, :, 5:15, 6:26].flatten(1).unique(dim=1).tolist() == [[1.0], [2.0], [3.0]]
    assert erased[0, :, 15:].abs().max() == 0


def test_seeded_draws_repeat_and_differ_by_step_epoch_and_rank():
    images = [torch.randint(0, 256, (3, 50 + 7 * i, 60), dtype=torch.uint8) for i in range(6)]
    canvas = pad_to_canvas(images)
    aug = DeviceAugment(32, random_erase=0.5, seed=7)
    first = aug(canvas, epoch=1, step=4, rank=0)
    assert torch.equal(first, DeviceAugment(32, random_erase=0.5, seed=7)(canvas, epoch=1, step=4, rank=0))
    for other in ((1, 5, 0), (2, 4, 0), (1, 4, 1)):
        assert not torch.equal(first, aug(canvas, *other))
    assert not torch.equal(first, DeviceAugment(32, random_erase=0.5, seed=8)(canvas, epoch=1, step=4))


def test_randaugment_on_the_device_is_a_one_line_error():
    with pytest.raises(UserError, match="augment_on='workers'"):
        load_recipe(None, {"augment": "randaugment", "augment_on": "device"})
    assert load_recipe(None, {"augment": "trivialaugment"}).augment_on == "auto"  # auto picks the workers


def test_stopped_and_resumed_run_with_device_augmentation_equals_uninterrupted(digits_dir, tmp_path, monkeypatch):
    hard = dict(augment_on="device", random_erase=0.3, epochs=2, batch_size=32, mixup_ratio=0.3)
    full = train(digits_recipe(digits_dir, tmp_path / "a", **hard), show_progress=False)
    stop_after(monkeypatch, 60)  # epoch 2 (38 steps per epoch), mid-epoch
    with pytest.raises(Exception, match="stopped at epoch 2"):
        train(digits_recipe(digits_dir, tmp_path / "b", **hard), show_progress=False)
    monkeypatch.undo()
    stopped = next((tmp_path / "b").glob("*/*"))
    train(None, resume=str(stopped), show_progress=False)
    a, b = weights(full), weights(stopped)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # bitwise
    assert a["metrics"]["train_loss"] == b["metrics"]["train_loss"]


def test_the_demo_learns_as_well_on_both_paths(digits_dir, tmp_path):
    acc = {}
    for where in ("workers", "device"):  # a few seconds each on a quiet 2-core machine
        run = train(digits_recipe(digits_dir, tmp_path / where, augment_on=where, epochs=5, crop_scale=0.6,
                                  warmup_epochs=0.5), show_progress=False)
        acc[where] = pd.read_csv(run / "fold0" / "metrics.csv")["val_acc"].max()
    assert min(acc.values()) > 0.8 and abs(acc["device"] - acc["workers"]) < 0.1, acc


def test_the_augmentation_preview_shows_the_device_path(digits_dir, tmp_path, monkeypatch):
    from engine.explore import augment_preview
    calls = []
    real = DeviceAugment.__call__
    monkeypatch.setattr(DeviceAugment, "__call__", lambda self, *a: calls.append(a[1:]) or real(self, *a))
    for where in ("workers", "device"):
        recipe = digits_recipe(digits_dir, tmp_path, augment_on=where, mixup_ratio=0.5)
        assert augment_preview.write_augment_preview(recipe, tmp_path / f"{where}.png", columns=4).is_file()
        assert len(calls) == (0 if where == "workers" else 2), where  # one batch per row: unmixed, mixup


def test_flip_setting_h_hv_none():
    extents = torch.tensor([[64, 80]] * N)
    h = DeviceAugment(32, flip="h").draw(extents, 0, 0)
    hv = DeviceAugment(32, flip="hv").draw(extents, 0, 0)
    none = DeviceAugment(32, flip="none").draw(extents, 0, 0)
    assert h.vflip is None and not none.flip.any() and none.vflip is None
    for share in (hv.flip.double().mean(), hv.vflip.double().mean()):
        assert abs(share.item() - 0.5) < 4 * math.sqrt(0.25 / N)
    image = smooth_image(32, 32)
    canvas = Canvas(image[None], torch.tensor([[32, 32]]), torch.tensor([False]))
    upside_down = Draws(torch.tensor([[0.0, 0, 32, 32]]), torch.tensor([False]), no_change(), torch.zeros(1, 4),
                        torch.tensor([True]))
    out = DeviceAugment(32, augment="none", flip="hv").apply(canvas, upside_down)[0]
    assert torch.equal(out.round().byte(), image.flip(1))
