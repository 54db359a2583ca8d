"""Models from timm: by name, with pretrained weights from timm or a local file, any class count."""
from __future__ import annotations

import os
from pathlib import Path

import timm
import torch

from engine.errors import UserError


def build_model(name: str, num_classes: int, pretrained: bool = False, pretrained_path: str | None = None,
                drop_path: float = 0.0) -> torch.nn.Module:
    """A timm model with a `num_classes` head; weights from timm (`pretrained`) or `pretrained_path`."""
    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        raise UserError(f"unknown timm model '{name}'" + (f"; similar: {', '.join(close)}" if close else ""))
    kwargs = {"drop_path_rate": drop_path} if drop_path > 0 else {}
    try:
        model = timm.create_model(name, pretrained=pretrained and not pretrained_path,
                                  num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise UserError(f"model '{name}' does not take these options ({e}); set drop_path=0.0") from e
    except Exception as e:
        if pretrained:
            raise UserError(f"pretrained weights for '{name}' could not be loaded ({type(e).__name__}); "
                            f"set pretrained_path to a local weights file or pretrained=False") from e
        raise
    if pretrained_path:
        load_pretrained(model, pretrained_path)
    return model


def load_pretrained(model: torch.nn.Module, path: str) -> None:
    """Load a local state dict (plain, or a checkpoint's 'model' / 'state_dict'); skip a mismatched head."""
    if not Path(path).is_file():
        raise UserError(f"pretrained_path '{path}' not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"pretrained_path '{path}' is not a loadable weights file ({type(e).__name__})") from e
    for wrapper in ("model", "state_dict", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    matched = sum(k in own for k in state)
    if matched < len(own) / 2:  # a few coincidental names are not a backbone
        raise UserError(f"pretrained_path '{path}' shares only {matched} of {len(own)} weights with model "
                        f"'{type(model).__name__}'; is it the same architecture?")
    model.load_state_dict(state, strict=False)
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if skipped and head is not None and hasattr(model, "reset_classifier"):
        model.reset_classifier(model.num_classes)  # fresh head sized for our classes
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun, say it once
        print(f"loaded {matched}/{len(own)} tensors from {path}"
              + (f"; new classifier for {len(skipped)} mismatched tensors" if skipped else ""))


def data_config(model: torch.nn.Module) -> dict:
    """The normalisation and crop the model expects (timm's pretrained config, ImageNet by default)."""
    cfg = timm.data.resolve_data_config({}, model=model)
    return {"mean": tuple(float(m) for m in cfg["mean"]), "std": tuple(float(s) for s in cfg["std"]),
            "crop_pct": float(cfg.get("crop_pct", 0.875))}


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_input_size(model: torch.nn.Module, name: str, image_size: int) -> None:
    """One forward pass of a blank image at image_size: a model that cannot take that size says so in one line
    (convnext below 32 px, a ViT at other than its own size) instead of failing inside the first step."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    except (RuntimeError, AssertionError, ValueError) as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"model '{name}' cannot take image_size={image_size} ({reason}); "
                        f"use a larger image_size (or the model's own input size)") from None
    finally:
        model.train(was_training)
