"""Optimizers over the trainable parameters: no weight decay on norms and biases; with `layer_decay` timm's
layer-wise groups, with `head_lr_scale` the classifier in groups of its own; groups joining at unfreeze.

AdamW and SGD run their fused kernels wherever PyTorch has them (CPU and CUDA): one kernel per step, and
they take a device flag that skips the step (`step_unless`), so a non-finite update is skipped without the
host reading anything."""
from __future__ import annotations

import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay

from engine.train.freezing import head_names, layer_ids


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices and kernels; leave 1-d tensors (norm scales, biases) and tokens undecayed."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith((".bias", "pos_embed", "cls_token", "reg_token", "dist_token"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no decay"}]


def finetune_groups(model: torch.nn.Module, weight_decay: float, layer_decay: float | None,
                    head_lr_scale: float) -> list[dict]:
    """timm's groups over the trainable parameters (layer-wise lr_scale = layer_decay^(top - layer) with
    layer_decay, else decay / no decay), the classifier's parameters split off at lr_scale * head_lr_scale."""
    no_wd = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    if layer_decay is not None:
        groups = param_groups_layer_decay(model, weight_decay, no_weight_decay_list=no_wd, layer_decay=layer_decay)
    else:
        groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_wd)
    name_of = {id(p): n for n, p in model.named_parameters()}
    layer = layer_ids(model) if layer_decay is not None and hasattr(model, "group_matcher") else {}
    head = head_names(model)
    out = []
    for g in groups:
        for in_head in (False, True):
            params = [p for p in g["params"] if (name_of[id(p)] in head) == in_head]
            if not params:
                continue
            where = "head" if in_head else (f"layer {layer.get(name_of[id(params[0])], '?')}" if layer else "backbone")
            out.append({"params": params, "weight_decay": g["weight_decay"],
                        "lr_scale": g.get("lr_scale", 1.0) * (head_lr_scale if in_head else 1.0),
                        "name": f"{where} {'decay' if g['weight_decay'] else 'no decay'}"})
    return out


def trainable_groups(model: torch.nn.Module, weight_decay: float, layer_decay: float | None = None,
                     head_lr_scale: float = 1.0) -> list[dict]:
    """The parameter groups of the trainable parameters; the plain decay / no-decay pair when neither
    layer_decay nor head_lr_scale asks for more (so runs and last.pt files from before keep their layout)."""
    if layer_decay is None and head_lr_scale == 1.0:
        return param_groups(model, weight_decay)
    return finetune_groups(model, weight_decay, layer_decay, head_lr_scale)


def build_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                    layer_decay: float | None = None, head_lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov) over the model's trainable parameters, each group at lr * its lr_scale."""
    groups = trainable_groups(model, weight_decay, layer_decay, head_lr_scale)
    for g in groups:
        g["lr"] = lr * g.setdefault("lr_scale", 1.0)
    if name == "AdamW":
        make = lambda fused: torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), fused=fused)  # noqa: E731
    elif name == "SGD":
        make = lambda fused: torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0,  # noqa: E731
                                             fused=fused)
    else:
        raise ValueError(f"unknown optimizer {name!r}")
    try:
        return make(True if any(g["params"] for g in groups) else None)
    except RuntimeError:  # parameters on a device (or of a dtype) without a fused kernel
        return make(None)


def is_fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every group steps with a fused kernel (which takes a found_inf flag on the device)."""
    return getattr(optimizer, "_step_supports_amp_scaling", False) and \
        all(g.get("fused") for g in optimizer.param_groups)


def step_unless(optimizer: torch.optim.Optimizer, found_inf: torch.Tensor) -> None:
    """Step, skipped where the device flag `found_inf` is set. Fused kernels read the flag on the device
    (PyTorch's GradScaler hands them its flag the same way); other optimizers make the host read it."""
    if is_fused(optimizer):
        optimizer.grad_scale, optimizer.found_inf = None, found_inf.to(torch.float32)
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
    elif not bool(found_inf):
        optimizer.step()


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a saved state, keeping this optimizer's kernel: a last.pt from before fused kernels (or from
    another machine) restores its moments into the fused optimizer, step counts moved to the parameters' device."""
    fused = [g.get("fused") for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for g, f in zip(optimizer.param_groups, fused):
        g["fused"] = f
        if f:
            g["foreach"] = None
            for p in g["params"]:
                step = optimizer.state.get(p, {}).get("step")
                if torch.is_tensor(step):
                    optimizer.state[p]["step"] = step.to(device=p.device, dtype=torch.float32)


def joining_groups(model: torch.nn.Module, already: set[str], weight_decay: float, layer_decay: float | None,
                   head_lr_scale: float) -> list[dict]:
    """The groups of the parameters that train now but are not in `already` (at unfreeze_epoch)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for g in trainable_groups(model, weight_decay, layer_decay, head_lr_scale):
        params = [p for p in g["params"] if name_of[id(p)] not in already]
        if params:
            groups.append({**g, "params": params, "lr_scale": g.get("lr_scale", 1.0)})
    return groups


def add_groups(optimizer: torch.optim.Optimizer, groups: list[dict], lr: float, join_update: int,
               join_warmup: int) -> None:
    """Add groups that start training at update `join_update`, warming up over `join_warmup` updates."""
    for g in groups:
        g["lr"] = g["initial_lr"] = lr * g["lr_scale"]
        g["join_update"], g["join_warmup"] = join_update, join_warmup
        optimizer.add_param_group(g)
