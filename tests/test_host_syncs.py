"""A step never waits on the host: between an epoch's first and last step the resident and store sources
and the loop read no device value at once (tests/host_reads.py tells device tensors apart on the CPU); a
resident batch costs the same number of operations at any batch size; the late reads change nothing that
matters (a non-finite update never lands, a stop lands one update later)."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from conftest import stop_after
from host_reads import HostReads, mark
from engine.data.batches.loader import EpochSampler
from engine.data.batches.resident_source import ResidentBatches
from engine.data.batches.store_source import FeatureBatches
from engine.data.pixels.device_augment import DeviceAugment
from engine.data.pixels.transforms import Normalize
from engine.models import build_model
from engine.recipe import load_recipe
from engine.system import device as dev
from engine.train.loop import train_one_epoch
from engine.train.state import build_train_state

CPU = torch.device("cpu")
NORMALIZE = Normalize((0.5,) * 3, (0.25,) * 3)
FILL = (255, 255, 255)


@pytest.fixture
def feed_marks(monkeypatch):
    """device_feed's copies (pinned, non_blocking on CUDA: no wait) give device tensors."""
    real = dev.device_feed

    def feed(t, device):
        out = real(t, device)
        out = out.clone() if out is t else out  # on the CPU the "copy" would be the host tensor itself
        mark(out)
        return out
    for module in list(sys.modules.values()):
        if module is not None and module.__name__.startswith("engine") and getattr(module, "device_feed", None) is real:
            monkeypatch.setattr(module, "device_feed", feed)


def images(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, 18 + 5 * (i % 3), 20 + 7 * (i % 2)), generator=g, dtype=torch.uint8)
            for i in range(n)]


def resident(n: int, batch_size: int = 4, erase: float = 0.5) -> ResidentBatches:
    augment = DeviceAugment(16, 0.35, "light", erase, seed=1, fill=FILL, flip="hv")
    source = ResidentBatches.from_images(images(n), torch.arange(n) % 3, EpochSampler(n, batch_size, True, seed=0),
                                         batch_size, augment, FILL, CPU, NORMALIZE)
    mark(*source.device_tensors())
    return source


class Store:
    def __init__(self, n: int):
        self.x = torch.randn(n, 16, generator=torch.Generator().manual_seed(0))

    def view(self, name: str) -> torch.Tensor:
        return self.x


def stored(n: int, batch_size: int = 4) -> FeatureBatches:
    return FeatureBatches(Store(n), lambda epoch: "v0", np.arange(n), torch.arange(n) % 3,
                          EpochSampler(n, batch_size, True, seed=0), batch_size, True, CPU)


def state(source, **changes):
    keys = dict(model="test_resnet", lr=1e-3, clip_grad_norm=1.0, ema_decay=0.99, mixup_ratio=0.3, cutmix_ratio=0.3,
                label_smoothing=0.1, accumulate_grad_batches=1, num_workers=0)
    if isinstance(source, FeatureBatches):
        keys["cutmix_ratio"] = 0.0  # stored features have no pixels to cut
    recipe = load_recipe(None, {**keys, **changes})
    torch.manual_seed(0)
    model = build_model(recipe.model, 3)
    if isinstance(source, FeatureBatches):
        model.reset_classifier(3)
        model.fc = torch.nn.Linear(16, 3)
    s = build_train_state(recipe, model, 3, len(source), CPU, takes=source.takes)
    mark(*s.model.parameters(), *s.model.buffers())
    if s.ema is not None:
        mark(*s.ema.module.parameters(), *s.ema.module.buffers(), s.ema.count)
    return s


def reads_in_epoch(make_source, n: int, **changes) -> list[str]:
    source = make_source(n)
    s = state(source, **changes)
    source.set_epoch(0)
    with HostReads() as r:
        train_one_epoch(s, source, 0, show_progress=False)
    return r.reads


@pytest.mark.parametrize("make_source", [resident, stored], ids=["resident", "store"])
@pytest.mark.parametrize("changes", [{}, {"accumulate_grad_batches": 2, "clip_grad_norm": None},
                                     {"precision": "fp16", "clip_grad_norm": None}], ids=["clip", "accumulate", "fp16"])
def test_no_host_read_per_step(feed_marks, make_source, changes):
    short, long = reads_in_epoch(make_source, 12, **changes), reads_in_epoch(make_source, 24, **changes)
    assert len(long) == len(short), "reads that grow with the steps:\n" + "\n".join(long[len(short):][:3])


def ops_per_batch(batch_size: int) -> int:
    source = resident(4 * batch_size, batch_size)
    source.set_epoch(0)
    batches = iter(source)
    next(batches)  # one-time set-up (fill colours on the device) out of the count
    with HostReads() as r:
        next(batches)
    return r.ops


def test_a_resident_batch_costs_the_same_operations_at_any_batch_size():
    assert ops_per_batch(8) == ops_per_batch(64)


def test_packed_canvases_equal_the_image_by_image_canvas():
    from engine.data.batches.resident_source import PackedImages
    from engine.data.pixels.device_augment import pad_to_canvas
    g = torch.Generator().manual_seed(3)
    pics = [torch.randint(0, 256, (3, int(h), int(w)), generator=g, dtype=torch.uint8)
            for h, w in torch.randint(5, 90, (40, 2), generator=g)]  # portrait and landscape, many canvas shapes
    packed = PackedImages(pics, (250, 240, 230), CPU)
    assert len(packed.tensors) > 3
    for rows in (np.arange(40), np.array([7]), np.array([3, 3, 12, 39, 0]), np.arange(39, -1, -3)):
        a, b = packed.canvas(rows), pad_to_canvas([pics[i] for i in rows], (250, 240, 230))
        assert torch.equal(a.images, b.images) and torch.equal(a.extents, b.extents)
        assert torch.equal(a.transposed, b.transposed)


def test_non_finite_updates_never_land_though_their_flag_is_read_late():
    source = stored(24)
    s = state(source, max_bad_steps=100, ema_decay=0.9, clip_grad_norm=None)
    real = s.criterion
    s.criterion = lambda logits, soft: real(logits, soft) * float("nan")
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in s.ema.module.state_dict().items()}
    source.set_epoch(0)
    train_one_epoch(s, source, 0, show_progress=False)
    assert all(torch.equal(before[k], v) for k, v in s.model.state_dict().items())  # bitwise: nothing landed
    assert all(torch.equal(ema_before[k], v) for k, v in s.ema.module.state_dict().items())
    assert s.skipped_steps == s.bad_steps == len(source) == 6 and s.ema.updates == 0


def test_a_stop_lands_one_update_after_the_signal(monkeypatch):
    source = stored(40)
    s = state(source)
    stop_after(monkeypatch, 2)  # the signal arrives during the second update
    source.set_epoch(0)
    assert train_one_epoch(s, source, 0, show_progress=False) == {"stopped_at": 3}
