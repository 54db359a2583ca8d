"""Class activation maps (GradCAM, GradCAM++, LayerCAM) for any timm model, with plain forward hooks.

    result = compute_cams(model, images)               # normalised float batch, as the model expects
    result.maps[b, k]                                   # H x W map in [0, 1] for class result.targets[b, k]

One forward and one (batched) backward per call, whatever the batch size and the number of classes per
image. The forward hook swaps the target layer's output for a fresh leaf tensor, so the backward runs
only from the logits to that layer, never into the backbone, and no parameter's .grad is touched.
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.errors import UserError

METHODS = ("gradcam", "gradcam++", "layercam")
INK_BELOW = 0.6  # on white paper a pixel darker than 60% grey is ink
INK_CONTRAST = 255 - round(255 * INK_BELOW)  # ink: a grey level this far from the paper's (either side)


@dataclass
class CamResult:
    """Maps for a batch: maps[b, k] explains class targets[b, k] of image b."""
    maps: torch.Tensor     # (B, K, H, W) float32 in [0, 1], on the CPU
    targets: torch.Tensor  # (B, K) class indices
    probs: torch.Tensor    # (B, num_classes) softmax of the logits
    flat: torch.Tensor     # (B, K) bool: the raw map was constant (no signal); maps are 0 there
    layer: str             # the layer the maps come from
    grid: tuple            # (h, w) of that layer's feature map


@contextmanager
def _inspecting(model: torch.nn.Module):
    """Eval mode, grad off, fp32 (autocast off), outside inference mode; every module's train flag restored after."""
    modes = {m: m.training for m in model.modules()}
    device = next(model.parameters()).device.type
    model.eval()
    try:
        with torch.inference_mode(False), torch.no_grad(), torch.autocast(device, enabled=False):
            yield
    finally:
        for m, training in modes.items():
            m.training = training


def _first_tensor(out):
    return out[0] if isinstance(out, (tuple, list)) and out and torch.is_tensor(out[0]) else out


def _is_token_model(model: torch.nn.Module) -> bool:
    return hasattr(model, "patch_embed") and isinstance(getattr(model, "blocks", None),
                                                        (torch.nn.Sequential, torch.nn.ModuleList))


def _wide(output: torch.Tensor, model: torch.nn.Module) -> bool:
    """A 4-d feature map wider than 1x1 (NHWC for models like Swin that say so)."""
    if output.ndim != 4:
        return False
    h, w = output.shape[1:3] if getattr(model, "output_fmt", "NCHW") == "NHWC" else output.shape[2:]
    return h * w > 1


def _probe(model: torch.nn.Module, size: int) -> list[tuple[str, torch.nn.Module, torch.Tensor]]:
    """Every module's output for one white image of `size`, in the order the modules finish."""
    seen, handles = [], []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(
                lambda m, i, o, name=name: seen.append((name, m, _first_tensor(o)))))
    param = next(model.parameters())
    try:
        with _inspecting(model):
            model(torch.ones(1, 3, size, size, device=param.device, dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
    return [(n, m, o) for n, m, o in seen if torch.is_tensor(o)]


def _default_size(model: torch.nn.Module) -> int:
    return int(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224))[-1])


def _last_map(model: torch.nn.Module, outputs: list, stages: set, before: str | None = None) -> str | None:
    """Name of the last non-Identity module output wider than 1x1 (finishing before `before`), or None."""
    names = [n for n, _, _ in outputs]
    outputs = outputs[:names.index(before)] if before in names else outputs
    spatial = [(n, m, o) for n, m, o in outputs if _wide(o, model) and not isinstance(m, torch.nn.Identity)]
    if not spatial:
        return None
    last = spatial[-1][2]
    same = [n for n, _, o in outputs if o is last]  # containers and in-place ops share one output tensor
    named = [n for n in same if n in stages]
    return named[-1] if named else min(same, key=lambda n: (n.count("."), same.index(n)))


def find_target_layer(model: torch.nn.Module, image_size: int | None = None) -> str:
    """The last spatial feature map before global pooling (ViT-style: the last block's tokens).

    Where that map is only 1x1 at `image_size` (small inputs), the last one wider than 1x1 before it.
    """
    if _is_token_model(model):
        last = len(model.blocks) - 1
        # class-token pooling: the last block's patch outputs never reach the head; its input (norm1) does
        if getattr(model, "global_pool", None) == "token" and hasattr(model.blocks[last], "norm1"):
            return f"blocks.{last}.norm1"
        return f"blocks.{last}"
    stages = {f.get("module") for f in getattr(model, "feature_info", None) or [] if isinstance(f, dict)}
    size = image_size or _default_size(model)
    at_size = _probe(model, size)
    try:  # big enough that the last stage is wider than 1x1, so it differs from the pooled output
        big = at_size if size >= 128 else _probe(model, 128)
    except Exception:  # models with a fixed input size
        big = at_size
    layer = _last_map(model, big, stages)
    if layer is None:
        raise UserError(f"no spatial feature map found in {type(model).__name__}; pass --layer (see --list-layers)")
    output = next((o for n, _, o in at_size if n == layer), None)
    if output is not None and not _wide(output, model):
        wide = [n for n, _, o in at_size if n in stages and _wide(o, model)]
        return wide[-1] if wide else _last_map(model, at_size, stages, before=layer) or layer
    return layer


def list_layers(model: torch.nn.Module, image_size: int | None = None) -> list[tuple[str, str, tuple]]:
    """(name, module type, output shape) of every module whose output is a feature map or token sequence."""
    outputs = _probe(model, image_size or _default_size(model))
    return [(n, type(m).__name__, tuple(o.shape)) for n, m, o in outputs
            if o.ndim in (3, 4) and not isinstance(m, torch.nn.Identity)]


def get_layer(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The sub-module called `name`; a UserError naming close layer names if there is none."""
    modules = dict(model.named_modules())
    if name not in modules or not name:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
        raise UserError(f"no layer '{name}' in {type(model).__name__}"
                        + (f"; close: {', '.join(close)}" if close else "") + " (see --list-layers)")
    return modules[name]


def resolve_target(text: str | int, classes: list[str]) -> int:
    """A class index from an index or a class name; a UserError listing near matches for an unknown name."""
    if text in classes:  # a class literally named "6" is that class, wherever it sits
        return classes.index(text)
    if isinstance(text, int) or str(text).lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(classes):
            raise UserError(f"target {index} is out of range: the model has {len(classes)} classes (0..{len(classes) - 1})")
        return index
    if text in classes:
        return classes.index(text)
    folded = [c.casefold() for c in classes]
    if text.casefold() in folded:
        return folded.index(text.casefold())
    near = difflib.get_close_matches(text.casefold(), folded, n=5, cutoff=0.6)
    near += [c for c in folded if text.casefold() in c and c not in near][:5 - len(near)]
    names = [classes[folded.index(c)] for c in near]
    raise UserError(f"unknown class '{text}'" + (f"; did you mean: {', '.join(names)}?" if names
                                                  else f"; classes are e.g. {', '.join(classes[:5])}"))


def _to_nchw(t: torch.Tensor, model: torch.nn.Module, layer: str, size: tuple[int, int]) -> torch.Tensor:
    """A layer output (N, C, h, w), (N, h, w, C) or (N, tokens, C) as (N, C, h, w) float32."""
    t = t.float()
    if t.ndim == 4:
        return t.movedim(-1, 1) if getattr(model, "output_fmt", "NCHW") == "NHWC" else t
    if t.ndim != 3 or not hasattr(model, "patch_embed"):
        raise UserError(f"layer '{layer}' gives a {tuple(t.shape)} output, not a feature map; pick another (--list-layers)")
    embed = model.patch_embed
    grid = embed.dynamic_feat_size(size) if hasattr(embed, "dynamic_feat_size") else \
        (size[0] // embed.patch_size[0], size[1] // embed.patch_size[1])
    tokens = t[:, getattr(model, "num_prefix_tokens", 0):]  # class, distillation and register tokens
    if tokens.shape[1] != grid[0] * grid[1]:
        raise UserError(f"layer '{layer}' has {tokens.shape[1]} patch tokens, not the {grid[0]}x{grid[1]} "
                        f"patch grid of a {size[0]}x{size[1]} input; pick another layer")
    return tokens.unflatten(1, grid).movedim(-1, 1)


def _combine(acts: torch.Tensor, grads: torch.Tensor, method: str) -> torch.Tensor:
    """Raw maps (B, K, h, w) from activations (B, C, h, w) and gradients (B, K, C, h, w)."""
    acts = acts[:, None]
    if method == "gradcam":
        weights = grads.mean(dim=(-2, -1), keepdim=True)
        return (weights * acts).sum(2)
    if method == "gradcam++":  # Chattopadhyay et al. 2018, closed form for an exponential of the score
        g2, g3 = grads.pow(2), grads.pow(3)
        denom = 2 * g2 + acts.sum(dim=(-2, -1), keepdim=True) * g3
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        weights = (alpha * grads.relu()).sum(dim=(-2, -1), keepdim=True)
        return (weights * acts).sum(2)
    return (grads.relu() * acts).sum(2)  # layercam: element-wise positive gradients


def _normalise(cams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-map min-max to [0, 1]; a constant map becomes zeros and is flagged instead of divided by zero."""
    low = cams.amin(dim=(-2, -1), keepdim=True)
    span = cams.amax(dim=(-2, -1), keepdim=True) - low
    flat = span <= 1e-6 * cams.abs().amax(dim=(-2, -1), keepdim=True)
    maps = torch.where(flat, torch.zeros_like(cams), (cams - low) / torch.where(flat, torch.ones_like(span), span))
    return maps, flat[..., 0, 0]


def _targets(targets, logits: torch.Tensor, top_k: int) -> torch.Tensor:
    n_images, n_classes = logits.shape
    if targets is None:
        return logits.topk(min(top_k, n_classes), dim=1).indices
    t = torch.as_tensor(targets, dtype=torch.long, device=logits.device)
    t = t.expand(n_images).clone() if t.ndim == 0 else t
    t = t[:, None] if t.ndim == 1 else t
    if t.shape[0] != n_images or t.ndim != 2:
        raise UserError(f"targets of shape {tuple(t.shape)} do not fit a batch of {n_images} images")
    if t.min() < 0 or t.max() >= n_classes:
        raise UserError(f"target class out of range: the model has {n_classes} classes")
    return t


def _class_gradients(scores: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
    """d scores[:, k] / d leaf for every k as (B, K, ...): one batched backward (images are independent in eval)."""
    k = scores.shape[1]
    if k == 1:
        return torch.autograd.grad(scores.sum(), leaf)[0][:, None]
    picks = torch.eye(k, device=scores.device, dtype=scores.dtype)[:, None, :].expand(k, *scores.shape)
    try:
        grads = torch.autograd.grad(scores, leaf, picks, retain_graph=True, is_grads_batched=True)[0]
    except RuntimeError:  # an op without a vmap rule: one backward per class instead
        grads = torch.stack([torch.autograd.grad(scores[:, j].sum(), leaf, retain_graph=True)[0] for j in range(k)])
    return grads.movedim(0, 1)


def compute_cams(model: torch.nn.Module, images: torch.Tensor, targets=None, method: str = "gradcam",
                 layer: str | None = None, top_k: int = 1) -> CamResult:
    """Maps for a normalised batch: for `targets` (an index, one per image, or B x K), else the top_k predictions.

    The model is left as it was: hooks removed (also on errors), train/eval flags and requires_grad
    untouched, no .grad written. Works under torch.no_grad(), with frozen weights and channels_last.
    """
    if method not in METHODS:
        raise UserError(f"unknown CAM method '{method}'; choose one of {', '.join(METHODS)}")
    layer = layer or find_target_layer(model, images.shape[-1])
    module, kept = get_layer(model, layer), []

    def keep(mod, inputs, out):
        tensor = _first_tensor(out)
        if not torch.is_tensor(tensor):
            raise UserError(f"layer '{layer}' returns {type(out).__name__}, not a tensor; pick another layer")
        leaf = tensor.detach().requires_grad_()
        kept.append(leaf)
        torch.set_grad_enabled(True)  # record only from here to the logits; _inspecting restores the mode
        fresh = leaf.clone()  # a non-leaf copy, so in-place layers downstream are allowed
        return fresh if out is tensor else type(out)((fresh, *out[1:]))

    param = next(model.parameters())
    handle = module.register_forward_hook(keep)
    try:
        with _inspecting(model):
            logits = _first_tensor(model(images.to(param.device, param.dtype)))
            if len(kept) != 1:
                raise UserError(f"layer '{layer}' ran {len(kept)} times in one forward pass; pick another layer")
            chosen = _targets(targets, logits.detach(), top_k)
            scores = logits.gather(1, chosen)  # (B, K)
            grads = _class_gradients(scores, kept[0])
            size = tuple(images.shape[-2:])
            acts = _to_nchw(kept[0].detach(), model, layer, size)
            grads = _to_nchw(grads.flatten(0, 1), model, layer, size).unflatten(0, scores.shape)
            raw = _combine(acts, grads, method).relu()
            grid = tuple(raw.shape[-2:])
            raw = F.interpolate(raw, size=size, mode="bilinear", align_corners=False)
            maps, flat = _normalise(raw)
            probs = logits.detach().float().softmax(dim=1)
    finally:
        handle.remove()
    return CamResult(maps.cpu(), chosen.cpu(), probs.cpu(), flat.cpu(), layer, grid)


def ink_pixels(image: torch.Tensor, background: tuple = (255, 255, 255)) -> torch.Tensor:
    """H x W bool: pixels of a 3 x H x W uint8 image whose grey level differs from the paper's by more than
    INK_CONTRAST, lighter or darker, so light strokes on black paper count as dark ones on white do."""
    grey3 = image.to(torch.int32).sum(dim=0)  # 3x the grey level, in integers: exact either way round
    return (grey3 - sum(int(c) for c in background)).abs() > 3 * INK_CONTRAST


def ink_mass(cam: torch.Tensor, image: torch.Tensor, background: tuple = (255, 255, 255)) -> tuple[float, float]:
    """(share of the map's mass on ink pixels, share of pixels that are ink) for an H x W map and 3 x H x W uint8
    image on paper of colour `background`."""
    ink = ink_pixels(image, background)
    total = float(cam.sum())
    return (float(cam[ink].sum()) / total if total > 0 else float("nan")), float(ink.float().mean())
