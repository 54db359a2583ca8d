"""Whether a model takes an image size, checked once before training (on the meta device: shapes only), and the
image_size that fixes it when it does not."""
from __future__ import annotations

import torch

from engine.errors import UserError


def check_input_size(model: torch.nn.Module, name: str, image_size: int) -> None:
    """One forward pass of a blank image at image_size: a model that cannot take that size says so in one line
    (convnext below 32 px, a ViT at other than its own size) instead of failing inside the first step.

    The pass runs on the meta device (shapes only): EVA02-L at 448 px takes milliseconds there, seconds on a CPU.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if _fits_on_meta(model, image_size):
                return
            model(torch.zeros(1, 3, image_size, image_size))  # the real pass says what is wrong
    except (RuntimeError, AssertionError, ValueError) as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"model '{name}' cannot take image_size={image_size} ({reason}); "
                        f"{size_advice(model, image_size)}") from None
    finally:
        model.train(was_training)


def size_advice(model: torch.nn.Module, image_size: int) -> str:
    """The image_size fix for a model that refused one: a multiple of the patch for a patch model that takes any
    size, its own size for one that takes one size, else a larger size."""
    patch_embed = getattr(model, "patch_embed", None)
    patch = getattr(patch_embed, "patch_size", None)
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    own = getattr(patch_embed, "img_size", None) or model.pretrained_cfg.get("input_size", (0, 0, 0))[1:]
    own = own[0] if isinstance(own, (tuple, list)) else own
    dynamic = getattr(model, "dynamic_img_size", False) or not getattr(patch_embed, "strict_img_size", True)
    if isinstance(patch, int) and dynamic and image_size % patch:
        below, above = image_size // patch * patch, (image_size // patch + 1) * patch
        return (f"use a multiple of its patch size {patch}: image_size={above}"
                + (f" or {below}" if below else ""))
    if isinstance(patch, int) and own:  # a fixed position grid: only the size it was built for
        return f"use the model's own size, image_size={own}"
    return f"use a larger image_size (the model's own input size is {own})" if own else "use a larger image_size"


def _fits_on_meta(model: torch.nn.Module, image_size: int) -> bool:
    """Whether a forward at image_size runs with every weight and input on the meta device (no data, no compute);
    False also when some op has no meta version, so the caller runs the real pass."""
    shapes = {k: torch.empty_like(v, device="meta") for k, v in (*model.named_parameters(), *model.named_buffers())}
    try:
        torch.func.functional_call(model, shapes, (torch.zeros(1, 3, image_size, image_size, device="meta"),))
    except Exception:
        return False
    return True
