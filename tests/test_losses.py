"""Losses against their formulas: focal, soft-target cross-entropy, label smoothing."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.train.losses import FocalLoss, SoftTargetCrossEntropy, build_loss, smooth_targets


def numpy_focal(logits, targets, alpha, gamma):
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return float(np.mean(-alpha * np.sum(targets * (1 - p) ** gamma * np.log(p), axis=1)))


@pytest.mark.parametrize("alpha, gamma", [(1.0, 0.0), (0.25, 2.0), (0.5, 1.0), (1.0, 5.0)])
def test_focal_matches_the_formula_on_soft_targets(alpha, gamma):
    g = torch.Generator().manual_seed(int(gamma * 10 + alpha * 100))
    logits = torch.randn(16, 7, generator=g, dtype=torch.float64) * 3
    targets = torch.rand(16, 7, generator=g, dtype=torch.float64).softmax(1)
    got = FocalLoss(alpha, gamma)(logits, targets).item()
    assert got == pytest.approx(numpy_focal(logits.numpy(), targets.numpy(), alpha, gamma), rel=1e-5)


def test_focal_with_gamma_0_alpha_1_is_cross_entropy():
    logits, y = torch.randn(32, 10), torch.randint(10, (32,))
    focal = FocalLoss(1.0, 0.0)(logits, smooth_targets(y, 10))
    assert focal.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


@pytest.mark.parametrize("loss", [FocalLoss(0.25, 2.0), SoftTargetCrossEntropy()])
def test_gradients_are_finite_for_extreme_logits(loss):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0], [80.0, 80.0, -80.0]], requires_grad=True)
    value = loss(logits, smooth_targets(torch.tensor([1, 1, 2]), 3, 0.1))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


def test_losses_run_in_fp32_under_bf16_logits():
    logits = torch.randn(8, 5).bfloat16()
    assert FocalLoss()(logits, smooth_targets(torch.arange(8) % 5, 5)).dtype == torch.float32


def test_soft_ce_matches_the_formula_and_torch_label_smoothing():
    logits, y = torch.randn(20, 6, dtype=torch.float64), torch.randint(6, (20,))
    t = smooth_targets(y, 6, 0.1).double()
    by_hand = -(t * torch.log(torch.softmax(logits, 1))).sum(1).mean()
    assert SoftTargetCrossEntropy()(logits, t).item() == pytest.approx(by_hand.item(), rel=1e-9)
    assert SoftTargetCrossEntropy()(logits, t).item() == pytest.approx(
        F.cross_entropy(logits, y, label_smoothing=0.1).item(), rel=1e-6)  # targets are fp32


def test_smoothing_rows_sum_to_one_with_the_right_mass():
    t = smooth_targets(torch.tensor([0, 3]), 4, 0.2)
    assert torch.allclose(t.sum(1), torch.ones(2))
    assert t[0].tolist() == pytest.approx([0.85, 0.05, 0.05, 0.05])


def test_build_loss_by_name():
    assert isinstance(build_loss("Focal", 0.5, 1.0), FocalLoss) and build_loss("Focal", 0.5, 1.0).gamma == 1.0
    assert isinstance(build_loss("CE"), SoftTargetCrossEntropy)
