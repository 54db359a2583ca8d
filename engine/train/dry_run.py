"""`train.py --dry-run`: the resolved recipe, the data, the model's size, what trains at which learning rate,
where batches come from and the steps per epoch; nothing trains."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.data.batches.factory import PATH_NAMES, choose_path
from engine.data.batches.store_source import describe_stores
from engine.data.stores.image_cache import cache_summary
from engine.errors import UserError
from engine.input_size import check_input_size
from engine.models import count_parameters, data_config, last_feature_map, model_from_recipe, small_map_warning
from engine.recipe import Recipe
from engine.system.distributed import Dist
from engine.train.freezing import apply_freeze, count, trainable_names
from engine.train.lr_schedule import join_warmup_updates
from engine.train.optim import build_optimizer, joining_groups
from engine.train.training_data import load_data


def describe_dry_run(recipe: Recipe, d: Dist, say, show_progress: bool = True) -> None:
    """Print the resolved recipe, the data, model size, what trains at which LR, steps per epoch; train nothing.
    Without the data (a recipe checked on another machine) the model part still runs if num_classes is set."""
    say("resolved recipe:")
    for key, value in recipe.to_dict().items():
        say(f"  {key} = {value!r}")
    try:
        table, classes, audit = load_data(recipe, d, say, show_progress)
    except UserError as e:
        if recipe.num_classes is None:
            raise
        say(f"data: not checked ({e}); the model below has num_classes = {recipe.num_classes}")
        table, classes = None, [str(i) for i in range(recipe.num_classes)]
    if recipe.pretrained_path and not Path(recipe.pretrained_path).is_file():  # the run would refuse it at start
        raise UserError(f"pretrained_path '{recipe.pretrained_path}' not found; give a local weights file "
                        f"(.pt or .safetensors) or pretrained_path=None")
    model = model_from_recipe(recipe, classes, weights=False)
    check_input_size(model, recipe.model, recipe.image_size)  # what the real run refuses, the dry run refuses
    say(f"model: {recipe.model}, {count_parameters(model) / 1e6:.2f}M parameters, head {recipe.head!r}"
        f"{', gradient checkpointing' if recipe.grad_checkpointing else ''}")
    if small_map := small_map_warning(model, recipe.image_size, recipe.model):
        say(small_map)
    elif recipe.small_input_stem and (grid := last_feature_map(model, recipe.image_size)):
        say(f"small_input_stem: the last stage sees a {grid[0]}x{grid[1]} feature map at {recipe.image_size} px")
    n_train = int((table["fold"] != 0).sum()) if table is not None else 0
    per_step = recipe.batch_size * d.world
    updates = -(-(n_train // per_step) // recipe.accumulate_grad_batches)
    describe_training(recipe, model, max(1, updates), say)
    if table is None:
        return
    counts = np.bincount(table["target"], minlength=len(classes))
    say(f"data: {len(table)} usable rows, {len(classes)} classes ({counts.min()}..{counts.max()} per class), "
        f"fold 0: {n_train} train / {len(table) - n_train} val")
    path, why = choose_path(recipe, d.device, list(table["path"]), data_config(model)["crop_pct"])
    say(f"batches on {d.device.type}: {PATH_NAMES[path]} ({why})")
    say(cache_summary(recipe, list(table["path"]), data_config(model)["crop_pct"]))
    if recipe.feature_views:
        for line in describe_stores(recipe, table, model, {**data_config(model), "background": audit.background.rgb},
                                    d.device):
            say(line)
    say(f"steps per epoch: {n_train // per_step} (batch {recipe.batch_size} x {d.world} process(es)), "
        f"updates per epoch: {updates}")


def describe_training(recipe: Recipe, model, updates_per_epoch: int, say) -> None:
    """Trainable and frozen parameter counts, each optimizer group's peak LR and weight decay, and what joins
    at unfreeze_epoch."""
    apply_freeze(model, trainable_names(model, recipe.freeze))
    trainable, frozen = count(model)
    say(f"trainable: {trainable / 1e6:.3f}M parameters, frozen: {frozen / 1e6:.3f}M (freeze = {recipe.freeze!r})")
    optimizer = build_optimizer(model, recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.momentum,
                                recipe.layer_decay, recipe.head_lr_scale)
    say(f"parameter groups ({recipe.optimizer}; peak lr, before the schedule):")
    for g in optimizer.param_groups:
        say(f"  {g['name']:<18} {sum(p.numel() for p in g['params']) / 1e6:9.3f}M  lr {g['lr']:.3e}  "
            f"weight decay {g['weight_decay']:g}")
    if recipe.unfreeze_epoch is None:
        say("unfreezes: never (unfreeze_epoch = None)" if frozen else "unfreezes: nothing is frozen")
        return
    already = {n for n, p in model.named_parameters() if p.requires_grad}
    apply_freeze(model, {n for n, _ in model.named_parameters()})
    warmup = join_warmup_updates(recipe.warmup_epochs, updates_per_epoch)
    say(f"unfreezes at epoch {recipe.unfreeze_epoch}: {frozen / 1e6:.3f}M parameters join, warming up over "
        f"{warmup} updates:")
    for g in joining_groups(model, already, recipe.weight_decay, recipe.layer_decay, recipe.head_lr_scale):
        say(f"  + {g['name']:<16} {sum(p.numel() for p in g['params']) / 1e6:9.3f}M  "
            f"lr {recipe.lr * g['lr_scale']:.3e}  weight decay {g['weight_decay']:g}")
