"""Models from timm: by name, with pretrained weights from timm or a local file (.pt or .safetensors), any class
count; the recipe's head (timm's linear classifier or an MLP on the pooled pre-logits features) and init_head."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import timm
import torch
from safetensors.torch import load_file

from engine.errors import UserError
from engine.matmul_padding import pad_mlp_matmuls


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


def load_pretrained(model: torch.nn.Module, path: str) -> list[str]:
    """Load a local state dict (plain, a checkpoint's 'model' / 'state_dict', or .safetensors); skip a mismatched
    head. Returns the names of the tensors it loaded."""
    if not Path(path).is_file():
        raise UserError(f"pretrained_path '{path}' not found")
    try:
        if str(path).endswith(".safetensors"):  # what the model hub ships; safetensors comes with timm
            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"pretrained_path '{path}' is not a loadable weights file ({type(e).__name__})") from e
    for wrapper in ("model", "state_dict", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    own = model.state_dict()
    head = _classifier_prefix(model)
    in_head = (lambda k: head is not None and (k == head or k.startswith(head + ".")))
    differ = ([f"{k} {list(state[k].shape)} there vs {list(own[k].shape)} here" for k in own
               if k in state and own[k].shape != state[k].shape and not in_head(k)]
              + [f"{k} not in the file" for k in own if k not in state and not in_head(k)
                 and not k.endswith("num_batches_tracked")]  # older files lack the batch-norm step counter
              + [f"{k} not in this model" for k in state if k not in own and not in_head(k)])
    if differ:  # only the classifier may differ: a backbone tensor left random would train silently wrong
        raise UserError(f"pretrained_path '{path}' does not fit model '{type(model).__name__}' outside its "
                        f"classifier ({len(differ)} tensors: {'; '.join(differ[:3])}{' ...' if len(differ) > 3 else ''}); "
                        f"use weights of the same architecture")
    skipped = [k for k in own if k in state and own[k].shape != state[k].shape]
    state = {k: v for k, v in state.items() if k in own and k not in skipped}
    model.load_state_dict(state, strict=False)
    if skipped or any(k not in state for k in own):
        model.reset_classifier(model.num_classes)  # a fresh head sized for our classes, never half a loaded one
        state = {k: v for k, v in state.items() if not in_head(k)}
    _say(f"loaded {len(state)}/{len(own)} tensors from {path}"
         + (f"; new classifier for {model.num_classes} classes (the file's has another shape)" if skipped else ""))
    return list(state)


def _classifier_prefix(model: torch.nn.Module) -> str | None:
    """The state-dict prefix of the model's classifier ('fc', 'head.fc'), or None when it has none."""
    if not hasattr(model, "get_classifier"):
        return None
    classifier = model.get_classifier()
    return next((name for name, m in model.named_modules() if m is classifier and name), None)


def data_config(model: torch.nn.Module) -> dict:
    """The normalisation and crop the model expects (timm's pretrained config, ImageNet by default)."""
    cfg = timm.data.resolve_data_config({}, model=model)
    return {"mean": tuple(float(m) for m in cfg["mean"]), "std": tuple(float(s) for s in cfg["std"]),
            "crop_pct": float(cfg.get("crop_pct", 0.875))}


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_from_recipe(recipe, classes: Sequence[str], weights: bool = True) -> torch.nn.Module:
    """The recipe's model for these classes: timm backbone, pretrained weights (when `weights`), the recipe's head
    (`head`, `head_hidden`, `head_dropout`) and, with init_head="imagenet", the matching ImageNet-1k head rows. MLPs
    with a hidden width off a multiple of 64 run their matmuls zero-padded (exact; the weights keep their shapes)."""
    model = _model_from_recipe(recipe, classes, weights)
    pad_mlp_matmuls(model)
    return model


def _model_from_recipe(recipe, classes: Sequence[str], weights: bool) -> torch.nn.Module:
    pretrained, path = recipe.pretrained and weights, recipe.pretrained_path if weights else None
    if recipe.init_head == "imagenet" and weights and not (pretrained or path):
        _say("warning: init_head='imagenet' has no ImageNet head to copy (pretrained=False and no pretrained_path): "
             "the head starts random")
    if recipe.init_head != "imagenet" or not (pretrained or path):
        model = build_model(recipe.model, len(classes), pretrained, path, recipe.drop_path)
        set_head(model, recipe.head, len(classes), recipe.head_hidden, recipe.head_dropout)
        if recipe.small_input_stem:
            small_input_stem(model, recipe.model)
        return model
    model = build_model(recipe.model, 1000, pretrained and not path, None, recipe.drop_path)  # keep the 1000-row head
    if path:
        loaded = set(load_pretrained(model, path))
        head_loaded = all(name in loaded for name in _classifier_names(model))
    else:
        head_loaded = model.pretrained_cfg.get("num_classes") == 1000
    init_from_imagenet(model, list(classes), head_loaded)
    if recipe.small_input_stem:
        small_input_stem(model, recipe.model)
    return model


def small_input_stem(model: torch.nn.Module, name: str) -> int:
    """small_input_stem=True: the stem keeps the input's resolution (CIFAR-style), so a 28-64 px drawing still has a
    layout at the last stage. ResNet family: first conv stride 1 and no max-pool; ConvNeXt: its 4x4 patchify conv
    slides with stride 1 (padded to keep the size); EfficientNet / MobileNet: stem conv stride 1. Weights are untouched (a
    pretrained stem still fits); returns how many times larger each side of every feature map becomes."""
    conv, pool = _stem_parts(model)
    if conv is None:
        raise UserError(f"small_input_stem=True knows the stems of ResNet, ConvNeXt and EfficientNet / MobileNet "
                        f"models, not '{name}'; set small_input_stem=False (and a larger image_size)")
    factor = conv.stride[0] * (2 if pool is not None else 1)
    if conv.stride[0] == conv.kernel_size[0] and conv.padding == (0, 0):  # a patchify conv: pad so the size stays
        k = conv.kernel_size[0] - 1  # even kernels pad one more on the right and bottom, as padding="same" would
        conv.register_forward_pre_hook(lambda _, args: (torch.nn.functional.pad(args[0], (k // 2, k - k // 2) * 2),))
    conv.stride = (1, 1)
    if pool is not None:
        setattr(model, "maxpool", torch.nn.Identity())
    for info in getattr(model, "feature_info", None) or []:  # what small_map_warning and timm's features_only read
        if isinstance(info, dict) and info.get("reduction"):
            info["reduction"] = max(1, info["reduction"] // factor)
    return factor


def _stem_parts(model: torch.nn.Module) -> tuple[torch.nn.Conv2d | None, torch.nn.Module | None]:
    """The stem's first strided conv and the ResNet max-pool after it (None where the model has neither)."""
    stem = getattr(model, "conv1", None) or getattr(model, "conv_stem", None) or getattr(model, "stem", None)
    if stem is None or getattr(model, "patch_embed", None) is not None:
        return None, None
    conv = next((m for m in ([stem] if isinstance(stem, torch.nn.Conv2d) else stem.modules())
                 if isinstance(m, torch.nn.Conv2d)), None)
    if conv is None or conv.stride[0] == 1:
        return None, None
    pool = getattr(model, "maxpool", None)
    return conv, pool if isinstance(pool, torch.nn.MaxPool2d) else None


def _classifier_names(model: torch.nn.Module) -> list[str]:
    head = {id(p) for p in model.get_classifier().parameters()}
    return [name for name, p in model.named_parameters() if id(p) in head]


def _say(text: str) -> None:
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun, say it once
        print(text)


def init_from_imagenet(model: torch.nn.Module, classes: list[str], head_loaded: bool = True) -> None:
    """Replace a 1000-class ImageNet head by one for `classes`, each class named by a WordNet id (n01440764)
    starting as its ImageNet-1k row (timm's synset list); the others start random, with a warning naming them."""
    old = model.get_classifier()
    model.reset_classifier(len(classes))  # timm's own init for the new head: what unmatched rows keep
    if not head_loaded or model.num_classes == 0 or getattr(old, "out_features", None) != 1000:
        _say("warning: init_head='imagenet' needs pretrained weights with a 1000-class ImageNet head; the head starts random")
        return
    row_of = {wnid: i for i, wnid in enumerate(timm.data.ImageNetInfo().label_names())}
    new = model.get_classifier()
    matched = [(i, row_of[c]) for i, c in enumerate(classes) if c in row_of]
    with torch.no_grad():
        for i, row in matched:
            new.weight[i] = old.weight[row]
            if new.bias is not None and old.bias is not None:
                new.bias[i] = old.bias[row]
    missing = [c for c in classes if c not in row_of]
    if not matched:
        _say("warning: init_head='imagenet': no class name is an ImageNet-1k WordNet id (like n01440764); "
             "the head starts random")
    elif missing:
        _say(f"warning: init_head='imagenet': {len(missing)} of {len(classes)} classes have no ImageNet-1k row and "
             f"start random: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    else:
        _say(f"init_head='imagenet': all {len(classes)} classes start from their ImageNet-1k rows")


class MlpHead(torch.nn.Sequential):
    """head="mlp": Linear -> GELU -> Dropout -> Linear on the pooled pre-logits features."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, dropout: float = 0.0):
        super().__init__(torch.nn.Linear(in_features, hidden), torch.nn.GELU(), torch.nn.Dropout(dropout),
                         torch.nn.Linear(hidden, num_classes))


def set_head(model: torch.nn.Module, head: str, num_classes: int, hidden: int = 512, dropout: float = 0.0) -> None:
    """Put the recipe's head where timm's classifier is, so `model.get_classifier()` returns it and
    `model.forward_head(features, pre_logits=True)` still gives the features it takes."""
    if head == "linear":
        return
    old = model.get_classifier()
    in_features = getattr(old, "in_features", None) or getattr(model, "head_hidden_size", None) or model.num_features
    attribute = next(name for name, module in model.named_modules() if module is old)  # "fc", "head", "head.fc"
    parent_name, _, leaf = attribute.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, MlpHead(in_features, hidden, num_classes, dropout))


def last_feature_map(model: torch.nn.Module, image_size: int) -> tuple[int, int] | None:
    """(h, w) of the model's last feature map for one image_size input (a forward of one zero image), or None
    when the model does not give a spatial map there (token models, or it cannot take that size)."""
    modes = {m: m.training for m in model.modules()}
    param = next(model.parameters(), None)
    try:
        model.eval()  # batch-norm in train mode refuses one 1x1 sample
        with torch.no_grad():
            out = model.forward_features(torch.zeros(1, 3, image_size, image_size,
                                                     device=param.device if param is not None else "cpu"))
    except Exception:  # the run itself will say what is wrong with this size
        return None
    finally:
        for m, training in modes.items():
            m.training = training
    out = out[-1] if isinstance(out, (list, tuple)) else out
    if not torch.is_tensor(out) or out.ndim != 4:
        return None
    return tuple(out.shape[1:3]) if getattr(model, "output_fmt", "NCHW") == "NHWC" else tuple(out.shape[2:])


def small_map_warning(model: torch.nn.Module, image_size: int, name: str) -> str | None:
    """A warning when the last feature map at image_size is 1x1, saying what to change; else None.

    1x1, not 2x2: on MNIST-5k within 5 CPU minutes resnet10t at 48 px (a 2x2 last map) was the best candidate
    (bench/README.md, small drawings), so a 2x2 map is a fair trade and the shipped doodles recipe uses it."""
    info = getattr(model, "feature_info", None)
    reduction = info[-1].get("reduction") if isinstance(info, list) and info and isinstance(info[-1], dict) else None
    if reduction and image_size >= 4 * reduction:  # clearly large enough: skip the forward (costly at 224 px)
        return None
    grid = last_feature_map(model, image_size)
    if grid is None or max(grid) > 1:
        return None
    reduction = max(1, round(image_size / max(grid)))  # how many input pixels one map cell spans
    stem = ("small_input_stem=True (a stem that keeps the input's resolution), " if _stem_parts(model)[0] is not None
            else "")  # a stem already at stride 1, or none this knows: the key would not help
    return (f"warning: {name} reduces a {image_size} px image to a {grid[0]}x{grid[1]} feature map at its last "
            f"stage, so that stage sees no layout; use image_size >= {3 * reduction} (a 3x3 map or larger: "
            f"small images are upscaled), {stem}or a model made for small inputs (fewer stride-2 stages)")
