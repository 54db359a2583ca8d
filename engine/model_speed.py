"""What decides a model's speed on this device, in one line for the fold's start: the attention kernel
PyTorch's scaled_dot_product_attention picks for the model's heads, whether compile is on, and the MLP widths
that run padded (engine/matmul_padding.py)."""
from __future__ import annotations

import torch

from engine.matmul_padding import padded_widths

_BACKEND_NAMES = {"FLASH_ATTENTION": "flash", "EFFICIENT_ATTENTION": "memory-efficient", "CUDNN_ATTENTION": "cuDNN",
                  "MATH": "math (unfused)", "OVERRIDEABLE": "overrideable"}


def speed_line(model: torch.nn.Module, compile: bool, device: torch.device, amp_dtype: torch.dtype | None) -> str:
    """'speed: attention flash (SDPA, 16 heads x 64, bfloat16); compile off; MLP hidden 2730 run at 2752'."""
    parts = [attention_line(model, device, amp_dtype)] if _attention_modules(model) else []
    parts.append("compile on (the first epoch includes compilation)" if compile else "compile off")
    widths = sorted(set(padded_widths(model)))
    if widths:
        parts.append("MLP hidden " + ", ".join(f"{w} run at {p}" for w, p in widths) + " (zero-padded, exact)")
    return "speed: " + "; ".join(parts)


def attention_line(model: torch.nn.Module, device: torch.device, amp_dtype: torch.dtype | None) -> str:
    """The attention kernel of the model's first attention module: timm's unfused path, or the SDPA backend."""
    attn = _attention_modules(model)[0]
    heads, head_dim = attn.num_heads, attn.head_dim
    if not attn.fused_attn:
        return (f"attention unfused (timm's q @ k.T, softmax; {heads} heads x {head_dim}: "
                f"set TIMM_FUSED_ATTN=1 for PyTorch's fused kernels)")
    dtype = amp_dtype or next(model.parameters()).dtype
    try:
        backend = sdpa_backend(device, heads, head_dim, dtype)
    except Exception as e:  # PyTorch's probes are young APIs: a run never fails for want of this line
        backend = f"backend unknown ({type(e).__name__})"
    return f"attention {backend} (SDPA, {heads} heads x {head_dim}, {_dtype_name(dtype)})"


def sdpa_backend(device: torch.device, heads: int, head_dim: int, dtype: torch.dtype) -> str:
    """The kernel scaled_dot_product_attention takes for q, k, v of this shape and dtype (no mask, no dropout):
    the first of PyTorch's priority order that is enabled and accepts them. On the CPU, its one fused kernel."""
    if device.type != "cuda":
        return f"{device.type} fused" if dtype in (torch.float32, torch.bfloat16, torch.float16) else "math (unfused)"
    cuda = torch.backends.cuda
    q = torch.empty(1, heads, 64, head_dim, device=device, dtype=dtype)
    params = cuda.SDPAParams(q, q, q, None, 0.0, False, False)
    checks = {"FLASH_ATTENTION": lambda: cuda.flash_sdp_enabled() and cuda.can_use_flash_attention(params),
              "EFFICIENT_ATTENTION": lambda: cuda.mem_efficient_sdp_enabled() and cuda.can_use_efficient_attention(params),
              "CUDNN_ATTENTION": lambda: cuda.cudnn_sdp_enabled() and cuda.can_use_cudnn_attention(params),
              "MATH": cuda.math_sdp_enabled}
    for backend in _priority_order():
        if backend in checks and checks[backend]():
            return _BACKEND_NAMES[backend]
    return "none enabled"


def _priority_order() -> list[str]:
    """PyTorch's SDPA backend order on CUDA (flash, memory-efficient, cuDNN, math where it cannot say)."""
    try:
        return [torch.nn.attention.SDPBackend(b).name for b in torch._C._get_sdp_priority_order()]
    except Exception:  # a private API: fall back to the documented default
        return ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"]


def _attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """timm attention modules (they carry fused_attn, num_heads and head_dim)."""
    return [m for m in model.modules()
            if hasattr(m, "fused_attn") and isinstance(getattr(m, "num_heads", None), int)
            and isinstance(getattr(m, "head_dim", None), int)]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
