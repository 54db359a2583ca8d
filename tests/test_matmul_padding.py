"""MLP matmuls padded to a multiple of 64 (engine/matmul_padding.py): the same outputs and training steps as the
unmodified model, checkpoints in the model's own shapes, and the fold's start line saying what runs."""
import copy

import pytest
import timm
import torch

from engine.matmul_padding import pad_mlp_matmuls, padded_widths, unpad_mlp_matmuls
from engine.model_speed import speed_line

TINY = {  # name, timm options: each gives an MLP hidden width off a multiple of 64
    "eva SwiGLU + hidden LayerNorm (EVA02-L's)": ("eva02_large_patch14_448", dict(embed_dim=56, num_heads=2)),
    "eva packed SwiGLU (GluMlp)": ("eva02_tiny_patch14_224", dict(embed_dim=56, num_heads=2)),
    "vit GELU Mlp": ("test_vit", dict(mlp_ratio=2.5, img_size=32)),
    "vit Mlp + hidden LayerNorm": ("test_vit", dict(mlp_ratio=2.5, scale_mlp_norm=True, img_size=32)),
}


def tiny(name: str, options: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    size = dict(img_size=28, depth=2) if name.startswith("eva") else {}
    model = timm.create_model(name, pretrained=False, num_classes=5, **size, **options)
    with torch.no_grad():  # non-zero biases and norm weights: zero ones would hide a padding that leaks
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def train_steps(model: torch.nn.Module, steps: int = 3) -> list[torch.Tensor]:
    """The outputs of `steps` AdamW steps on fixed random batches (each after the previous update)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(1)
    size = model.patch_embed.img_size[0]
    outs = []
    for _ in range(steps):
        x, y = torch.randn(4, 3, size, size, generator=g), torch.randint(0, 5, (4,), generator=g)
        out = model(x)
        outs.append(out.detach())
        torch.nn.functional.cross_entropy(out, y).backward()
        opt.step()
        opt.zero_grad()
    return outs


@pytest.mark.parametrize("case", list(TINY))
def test_padded_mlps_train_exactly_like_the_model_itself(case):
    name, options = TINY[case]
    plain = tiny(name, options)
    padded = copy.deepcopy(plain)
    widths = pad_mlp_matmuls(padded, max_extra=1.0)
    assert widths and all(p % 64 == 0 and p > w for w, p in widths)
    for a, b in zip(train_steps(plain), train_steps(padded)):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    theirs, ours = plain.state_dict(), padded.state_dict()
    assert list(ours) == list(theirs)  # same keys, same shapes: the weights were never padded
    assert all(ours[k].shape == theirs[k].shape and torch.allclose(ours[k], theirs[k], atol=1e-5) for k in ours)


def test_checkpoints_keep_the_model_s_own_shapes_both_ways():
    name, options = TINY["eva SwiGLU + hidden LayerNorm (EVA02-L's)"]
    padded = tiny(name, options)
    pad_mlp_matmuls(padded, max_extra=1.0)
    older = tiny(name, options)  # what older code (and predict / cam before this) builds
    older.load_state_dict(padded.state_dict())  # strict: every key and shape fits
    x = torch.randn(2, 3, 28, 28)
    padded.eval(), older.eval()
    assert torch.allclose(padded(x), older(x), atol=1e-5)
    older.load_state_dict(tiny(name, options).state_dict())
    padded.load_state_dict(older.state_dict())  # an old best.pt loads into the padded model
    assert torch.allclose(padded(x), older(x), atol=1e-5)


def test_a_copy_pads_its_own_weights_and_padding_can_be_undone():
    name, options = TINY["vit GELU Mlp"]
    model = tiny(name, options)
    pad_mlp_matmuls(model, max_extra=1.0)
    ema = copy.deepcopy(model)  # the EMA copy: its forward must read its own weights, not the model's
    assert padded_widths(ema) == padded_widths(model)
    with torch.no_grad():
        for p in ema.parameters():
            p.zero_()
    x = torch.randn(2, 3, 32, 32)
    model.eval(), ema.eval()
    assert not torch.allclose(model(x), ema(x))
    assert unpad_mlp_matmuls(model) == len(padded_widths(ema)) and padded_widths(model) == []


def test_small_widths_stay_as_they_are_and_eva02_large_is_padded():
    assert pad_mlp_matmuls(timm.create_model("test_convnext")) == []  # 96 -> 128 would cost a third more
    with torch.device("meta"):
        eva = timm.create_model("eva02_large_patch14_448", pretrained=False, depth=2, num_classes=5)
    assert pad_mlp_matmuls(eva) == [(2730, 2752)] * 2


def test_the_speed_line_names_attention_compile_and_padding():
    vit = timm.create_model("test_vit")
    assert speed_line(vit, False, torch.device("cpu"), None) == \
        "speed: attention cpu fused (SDPA, 2 heads x 32, float32); compile off"
    for m in vit.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    assert "attention unfused (timm's q @ k.T" in speed_line(vit, True, torch.device("cpu"), torch.bfloat16)
    eva = tiny(*TINY["eva SwiGLU + hidden LayerNorm (EVA02-L's)"])
    pad_mlp_matmuls(eva, max_extra=1.0)
    line = speed_line(eva, True, torch.device("cpu"), torch.bfloat16)
    assert "bfloat16" in line and "compile on" in line and "MLP hidden 149 run at 192" in line
    assert speed_line(timm.create_model("test_resnet"), False, torch.device("cpu"), None) == "speed: compile off"


def test_on_cuda_the_line_names_the_first_backend_pytorch_would_take(monkeypatch):
    cuda = torch.backends.cuda
    monkeypatch.setattr(torch, "empty", lambda *a, **k: torch.zeros(1, 2, 4, 32))  # no GPU here: CPU tensors
    monkeypatch.setattr(cuda, "can_use_flash_attention", lambda params: False)  # e.g. an fp32 run, or an old GPU
    monkeypatch.setattr(cuda, "can_use_efficient_attention", lambda params: True)
    vit = timm.create_model("test_vit")
    assert speed_line(vit, False, torch.device("cuda"), torch.bfloat16).startswith(
        "speed: attention memory-efficient (SDPA, 2 heads x 32, bfloat16)")
    monkeypatch.setattr(cuda, "can_use_efficient_attention", lambda params: 1 / 0)
    assert "attention backend unknown (ZeroDivisionError)" in speed_line(vit, False, torch.device("cuda"), None)
