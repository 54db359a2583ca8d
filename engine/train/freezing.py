"""What trains: the recipe's `freeze` over timm's own layer groups, and frozen parts kept in eval mode.

Layer groups are `model.group_matcher(coarse=False)`, the grouping timm's layer decay uses (ViT blocks,
ConvNeXt / ResNet / EfficientNet blocks). The top group holds the classifier (and what sits with it, like
a final norm); `freeze=N` trains the top group and the N groups below it, `freeze="backbone"` only the
classifier (`model.get_classifier()`).
"""
from __future__ import annotations

import torch
from timm.models import group_parameters

from engine.errors import UserError


def layer_ids(model: torch.nn.Module) -> dict[str, int]:
    """Parameter name -> timm layer group (0: stem ... top: the group holding the classifier)."""
    if not hasattr(model, "group_matcher"):
        raise UserError(f"{type(model).__name__} has no timm layer grouping (group_matcher); use freeze='backbone' "
                        f"or 'none' and layer_decay=None")
    return group_parameters(model, model.group_matcher(coarse=False), reverse=True)


def head_names(model: torch.nn.Module) -> set[str]:
    """Names of the classifier's parameters (`model.get_classifier()`: timm's linear head or our MLP)."""
    head = {id(p) for p in model.get_classifier().parameters()}
    return {name for name, p in model.named_parameters() if id(p) in head}


def trainable_names(model: torch.nn.Module, freeze: str | int) -> set[str]:
    """The parameters that train under `freeze` ("none", "backbone", or N: the top group and N below)."""
    names = {name for name, _ in model.named_parameters()}
    if freeze == "none":
        return names
    head = head_names(model)
    if freeze == "backbone":
        return head
    layer = layer_ids(model)
    top = max([layer[n] for n in head if n in layer], default=max(layer.values()))
    return head | {n for n in names if layer.get(n, top) >= top - int(freeze)}


def apply_freeze(model: torch.nn.Module, trainable: set[str]) -> None:
    """requires_grad on exactly the `trainable` parameters (frozen ones then take no optimizer state)."""
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)


def frozen_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The outermost modules whose parameters are all frozen (their BN statistics and dropout must not move)."""
    found: list[torch.nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in inside:
            continue
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            found.append(module)
            inside.update(id(m) for m in module.modules())
    return found


def set_train_mode(forward: torch.nn.Module, model: torch.nn.Module) -> None:
    """forward.train(), then eval mode for every frozen part of `model` (the module inside forward)."""
    forward.train()
    for module in frozen_modules(model):
        module.eval()


def unfreeze_index(unfreeze_epoch: int | None) -> int | None:
    """The 0-based epoch from which everything trains (unfreeze_epoch counts from 1, like the console)."""
    return None if unfreeze_epoch is None else unfreeze_epoch - 1


def count(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters()) - trainable
