"""Aligned MLP matmuls: a timm MLP whose hidden width is not a multiple of 64 (EVA02-L's SwiGLU: 2,730) runs its
matmuls at the next multiple (2,752), the weights zero-padded inside the forward. Exact: the padded hidden units are
act(0) * 0 or meet zero columns of fc2, and a hidden-width norm sees only the real units. The parameters, the
state_dict, the optimizer state and every checkpoint keep the model's own shapes; only the forward changes.

Why: bf16 matmuls with a dimension that is not a multiple of 8 miss the tensor cores' aligned kernels."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import GluMlp, LayerNorm, Mlp, SwiGLU

ALIGN = 64
MAX_EXTRA = 1 / 16  # EVA02-L: 2,730 -> 2,752 is +0.8%


def pad_mlp_matmuls(model: torch.nn.Module, align: int = ALIGN, max_extra: float = MAX_EXTRA) -> list[tuple[int, int]]:
    """Make every timm Mlp / GluMlp / SwiGLU whose hidden width is off a multiple of `align` by at most `max_extra`
    of itself run padded; returns the (real, padded) widths changed (none for most models: ResNets, ViT-B, ...)."""
    changed = []
    for module in model.modules():
        width = _hidden_width(module)
        if width is None or width % align == 0 or "forward" in vars(module):
            continue
        padded = width + (-width % align)
        if padded - width > max_extra * width:  # a small model (96 -> 128): the extra work outweighs alignment
            continue
        module._padded_width = (width, padded)
        module.forward = _FORWARDS[type(module)].__get__(module)  # an instance forward: deepcopy (EMA) rebinds it
        changed.append((width, padded))
    return changed


def unpad_mlp_matmuls(model: torch.nn.Module) -> int:
    """Undo pad_mlp_matmuls (the module's own forward again); returns how many modules it restored."""
    restored = 0
    for module in model.modules():
        if hasattr(module, "_padded_width"):
            del module.forward, module._padded_width
            restored += 1
    return restored


def padded_widths(model: torch.nn.Module) -> list[tuple[int, int]]:
    """The (real, padded) hidden widths the model's MLPs run at now."""
    return [m._padded_width for m in model.modules() if hasattr(m, "_padded_width")]


def _hidden_width(module: torch.nn.Module) -> int | None:
    """The hidden width of a plain-Linear timm MLP (None for other modules and for the 1x1-conv variants)."""
    if type(module) is SwiGLU:
        linears = (module.fc1_g, module.fc1_x, module.fc2)
        width = module.fc1_g.out_features
    elif type(module) in (Mlp, GluMlp):
        linears = (module.fc1, module.fc2)
        width = module.fc1.out_features // (2 if type(module) is GluMlp else 1)
        if type(module) is GluMlp and module.chunk_dim != -1:
            return None
    else:
        return None
    if not all(type(fc) is torch.nn.Linear for fc in linears):  # use_conv=True, or a LoRA / quantised wrapper
        return None
    return width if _norm_fits(module.norm, width) else None


def _norm_fits(norm: torch.nn.Module, width: int) -> bool:
    """A hidden norm this can run on the real units: none, or a LayerNorm over the last dim with affine weights."""
    if isinstance(norm, torch.nn.Identity):
        return True
    return type(norm) in (torch.nn.LayerNorm, LayerNorm) and tuple(norm.normalized_shape) == (width,)


def _pad_out(fc: torch.nn.Linear, extra: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fc's weight and bias with `extra` zero output rows."""
    bias = F.pad(fc.bias, (0, extra)) if fc.bias is not None else None
    return F.pad(fc.weight, (0, 0, 0, extra)), bias


def _hidden_norm(module: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The module's hidden norm over the real units only (a LayerNorm's statistics must not count the padding)."""
    if isinstance(module.norm, torch.nn.Identity):
        return h
    width, padded = module._padded_width
    # in h's dtype before padding: under autocast fc2 rounds it to bf16 anyway, and the pad then moves half the bytes
    return F.pad(module.norm(h[..., :width]).to(h.dtype), (0, padded - width))


def _fc2(module: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """fc2 on the padded hidden units: its weight gets zero input columns."""
    width, padded = module._padded_width
    return F.linear(h, F.pad(module.fc2.weight, (0, padded - width)), module.fc2.bias)


def _mlp_forward(self: Mlp, x: torch.Tensor) -> torch.Tensor:
    width, padded = self._padded_width
    x = self.drop1(self.act(F.linear(x, *_pad_out(self.fc1, padded - width))))
    return self.drop2(_fc2(self, _hidden_norm(self, x)))


def _swiglu_forward(self: SwiGLU, x: torch.Tensor) -> torch.Tensor:
    width, padded = self._padded_width
    gate = F.linear(x, *_pad_out(self.fc1_g, padded - width))
    x = self.drop1(self.act(gate) * F.linear(x, *_pad_out(self.fc1_x, padded - width)))
    return self.drop2(_fc2(self, _hidden_norm(self, x)))


def _glu_forward(self: GluMlp, x: torch.Tensor) -> torch.Tensor:
    width, padded = self._padded_width
    weight, bias = self.fc1.weight, self.fc1.bias  # two halves (x1, x2) stacked: pad each one
    weight = torch.cat([F.pad(half, (0, 0, 0, padded - width)) for half in weight.chunk(2)])
    bias = torch.cat([F.pad(half, (0, padded - width)) for half in bias.chunk(2)]) if bias is not None else None
    x1, x2 = F.linear(x, weight, bias).chunk(2, dim=-1)
    x = x1 * self.act(x2) if self.gate_last else self.act(x1) * x2
    return self.drop2(_fc2(self, _hidden_norm(self, self.drop1(x))))


_FORWARDS = {Mlp: _mlp_forward, SwiGLU: _swiglu_forward, GluMlp: _glu_forward}
