"""Mixup and cutmix: exact convex combinations, untouched pixels outside the box, seeded, right ratios."""
import math

import pytest
import torch

from engine.train.mix import Mixer, cutmix_box


def batch(n=8, c=3, h=16, w=12):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, c, h, w, generator=g), torch.arange(n) % 5


def first_step(mixer, mode, x, y, epoch=0):
    """The first step whose batch gets `mode` (mixing decisions are a function of epoch and step)."""
    for step in range(200):
        out = mixer(x, y, epoch, step)
        if out[2].mode == mode:
            return out
    raise AssertionError(f"no {mode} batch in 200 steps")


def test_mixup_is_an_exact_convex_combination_with_the_reported_lam():
    x, y = batch()
    mixer = Mixer(5, mixup_ratio=1.0, alpha=0.4)
    xm, soft, info = mixer(x, y, 0, 0)
    assert info.mode == "mixup" and 0 < info.lam < 1
    assert torch.allclose(xm, info.lam * x + (1 - info.lam) * x[info.partner], atol=1e-6)
    assert (info.partner != torch.arange(len(y))).all()  # the partner is another sample
    expected = info.lam * torch.eye(5)[y] + (1 - info.lam) * torch.eye(5)[y[info.partner]]
    assert torch.allclose(soft, expected)


def test_cutmix_leaves_pixels_outside_the_box_and_lam_is_the_area():
    x, y = batch()
    mixer = Mixer(5, cutmix_ratio=1.0, smoothing=0.1)
    for step in range(20):
        xm, soft, info = mixer(x, y, 0, step)
        changed = (xm != x).any(dim=(0, 1))  # pixels changed in any image
        inside = torch.zeros(16, 12, dtype=torch.bool)
        rows, cols = torch.where((xm[0] == x[info.partner][0]).all(0) & (xm[0] != x[0]).any(0))
        if len(rows):
            inside[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
            area = inside.sum().item() / inside.numel()
            assert info.lam == pytest.approx(1 - area)
        assert not changed[~inside].any()  # nothing outside the box moved
        assert torch.allclose(soft.sum(1), torch.ones(len(y)))


def test_cutmix_box_is_clipped_to_the_image():
    g = torch.Generator().manual_seed(1)
    for _ in range(100):
        y0, y1, x0, x1 = cutmix_box(0.1, 10, 7, g)
        assert 0 <= y0 <= y1 <= 10 and 0 <= x0 <= x1 <= 7


def test_target_rows_sum_to_one_in_every_mode():
    x, y = batch()
    mixer = Mixer(5, 0.4, 0.4, smoothing=0.2)
    for step in range(30):
        _, soft, _ = mixer(x, y, 1, step)
        assert torch.allclose(soft.sum(1), torch.ones(len(y)), atol=1e-6)


def test_seeded_mixing_repeats_and_depends_on_the_step():
    x, y = batch()
    a = Mixer(5, 0.5, 0.5, seed=7)
    b = Mixer(5, 0.5, 0.5, seed=7)
    for step in range(10):
        xa, sa, ia = a(x, y, 2, step)
        xb, sb, ib = b(x, y, 2, step)
        assert ia.mode == ib.mode and ia.lam == ib.lam and torch.equal(xa, xb) and torch.equal(sa, sb)
    lams = {a(x, y, 2, step)[2].lam for step in range(10)}
    assert len(lams) > 5


def test_disabled_or_zero_ratios_never_mix():
    x, y = batch()
    assert all(Mixer(5, 1.0, 0.0)(x, y, 0, s, enabled=False)[2].mode == "none" for s in range(20))
    assert all(Mixer(5, 0.0, 0.0)(x, y, 0, s)[2].mode == "none" for s in range(20))


def test_fractions_of_mixed_and_cut_batches_match_the_ratios():
    x, y = batch(n=2, h=4, w=4)
    mixer = Mixer(5, mixup_ratio=0.3, cutmix_ratio=0.2, seed=11)
    n = 4000
    modes = [mixer(x, y, 0, step)[2].mode for step in range(n)]
    for mode, p in (("mixup", 0.3), ("cutmix", 0.2), ("none", 0.5)):
        share = modes.count(mode) / n
        assert abs(share - p) < 6 * math.sqrt(p * (1 - p) / n)  # 6 sigma: a false alarm is ~1e-9


def test_ratios_past_one_are_refused():
    with pytest.raises(ValueError):
        Mixer(5, 0.7, 0.4)
