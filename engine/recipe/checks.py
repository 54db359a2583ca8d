"""The checks of a resolved recipe that involve several keys, in one place: combinations that cannot work, and
(for a recipe still to train) keys that would never take effect or leave part of the model untrained."""
from __future__ import annotations

import dataclasses
import sys

from engine.errors import UserError
from engine.recipe.epoch_keys import Recipe, augment_presets

# layer-wise decay below this leaves a 12-group model's lowest group at lr * 1e-12 or less: it never trains
LOWEST_LAYER_DECAY = 0.1


def check_recipe(r: Recipe, saved: bool = False) -> Recipe:
    """Every cross-key check; `saved` (a recipe a run already trained with) skips those of a plan still to train,
    so recipe.json files written before a check existed still load for predict, resume and the runs table."""
    _check_combinations(r)
    if not saved:
        check_training_plan(r)
    return r


def _check_combinations(r: Recipe) -> None:
    """Checks that involve several keys or ranges."""
    if r.mixup_ratio + r.cutmix_ratio > 1 + 1e-9:
        raise UserError(f"mixup_ratio + cutmix_ratio must be <= 1 (a batch is mixed one way or the other); "
                        f"got {r.mixup_ratio} + {r.cutmix_ratio}")
    if isinstance(r.freeze, str) and r.freeze not in ("none", "backbone"):
        raise UserError(f'recipe key \'freeze\' must be "none", "backbone" or an int N >= 0; got {r.freeze!r}')
    if isinstance(r.freeze, int) and r.freeze < 0:
        raise UserError(f"recipe key 'freeze' must be an int N >= 0 (the last N layer groups train); got {r.freeze}")
    if r.unfreeze_epoch is not None and r.freeze == "none":
        raise UserError(f"unfreeze_epoch = {r.unfreeze_epoch} needs something frozen: set freeze "
                        f'("backbone" or an int N) or unfreeze_epoch=None')
    if r.init_head == "imagenet" and r.head != "linear":
        raise UserError('init_head="imagenet" copies rows of a linear ImageNet head; use head="linear" or init_head="random"')
    if r.feature_views:
        _check_feature_store(r)
    worker_only = [p for p in augment_presets(r) if p in ("randaugment", "trivialaugment")]
    if r.augment_on == "device" and worker_only:
        raise UserError(f"augment='{worker_only[0]}' runs only in the workers; set augment_on='workers' (or auto), "
                        f"or augment='light' to augment on the device")
    if r.cache == "device" and (r.augment_on == "workers" or worker_only):
        raise UserError(f"cache='device' keeps the images on the device and augments them there, which "
                        f"augment_on={r.augment_on!r} / augment={(worker_only or [r.augment])[0]!r} cannot; use augment='light' or 'none' "
                        f"with augment_on='auto', or cache='memory'")
    if r.scheduler == "step" and not r.step_milestones:
        raise UserError('scheduler="step" needs step_milestones, the epochs after which the LR drops, '
                        'e.g. step_milestones=(6, 9)')
    if r.teacher_test and (not r.teacher or r.pseudo_labels):
        raise UserError("teacher_test=True needs a teacher and no pseudo_labels (both add the test images); set "
                        "teacher, or use one of teacher_test and pseudo_labels")
    if r.folds == 1 and not 0 <= r.val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1) when folds = 1; got {r.val_fraction}")
    if r.folds > 1 and r.val_fraction == 0:  # folds decide the validation rows: "no validation" would be ignored
        raise UserError(f"val_fraction=0 (train on every row) needs folds=1; with folds={r.folds} each fold "
                        f"validates on 1/{r.folds} of the rows: set folds=1 for a full-data refit")


def _check_feature_store(r: Recipe) -> None:
    """A feature store holds features computed once: refuse every key that would change them during training."""
    fv, fix = f"feature_views={r.feature_views}", "; set it so, or feature_views=0 to train through the backbone"
    refused = [  # (the key is set, why it cannot be)
        (r.freeze != "backbone", f"{fv} needs freeze='backbone' (freeze={r.freeze!r} trains backbone weights, so "
                                 f"stored features would go stale){fix}"),
        (r.unfreeze_epoch is not None, f"{fv} cannot unfreeze the backbone (unfreeze_epoch={r.unfreeze_epoch}); "
                                       f"set unfreeze_epoch=None or feature_views=0"),
        (r.drop_path > 0, f"{fv} needs drop_path=0 (stochastic depth changes the backbone's features every step; "
                          f"got {r.drop_path}){fix}"),
        (r.sync_bn, f"{fv} cannot use sync_bn=True (a train-mode batch-norm changes the backbone's features); set "
                    f"sync_bn=False or feature_views=0"),
        # a store is keyed by the backbone's weights, which the stem's stride leaves alone
        (r.small_input_stem, f"{fv} cannot use small_input_stem=True (stored features are keyed by weights, not by "
                             f"the stem); set small_input_stem=False or feature_views=0"),
        (r.cutmix_ratio > 0, f"cutmix_ratio={r.cutmix_ratio} needs pixels, a feature store has none; use mixup_ratio "
                             f"(it mixes stored features) or feature_views=0"),
        (bool(r.augment_schedule), f"{fv} stores views augmented once with `augment`; an augment_schedule cannot "
                                   f"change them: set augment_schedule={{}} or feature_views=0"),
    ]
    for is_set, message in refused:
        if is_set:
            raise UserError(message)


def check_training_plan(r: Recipe) -> None:
    """Keys that leave part of the model untrained or watch what is not there (errors), and keys that would never
    take effect in r.epochs epochs (warnings)."""
    if r.early_stopping and r.folds == 1 and r.val_fraction == 0:
        raise UserError(f"early_stopping={r.early_stopping} watches {r.monitor} on the validation rows, and folds=1 "
                        f"val_fraction=0 keeps none: set val_fraction (e.g. 0.2) or early_stopping=0")
    if r.layer_decay is not None and r.layer_decay < LOWEST_LAYER_DECAY:
        raise UserError(f"layer_decay={r.layer_decay:g} gives the lowest of 12 layer groups lr * "
                        f"{r.layer_decay ** 12:.0e}: it never trains; layer-wise decay is 0.5-0.9 in practice "
                        f"(>= {LOWEST_LAYER_DECAY} here); to keep early layers fixed use freeze=N")
    for line in never_take_effect(r):
        print(f"warning: {line}", file=sys.stderr)


def never_take_effect(r: Recipe) -> list[str]:
    """Keys set to act after the run's last epoch, or on a part the model lacks: a warning each, not an error
    (a smoke test of a shipped recipe with epochs=1, or a sweep over `head`, must still run)."""
    said = []
    if r.head == "linear" and r.head_hidden != default_of(r, "head_hidden"):  # another value was set by the user
        said.append(f'head_hidden={r.head_hidden} sizes the hidden layer of head="mlp"; head="linear" has none, so '
                    f'it is not used')
    late = [m for m in r.step_milestones if m >= r.epochs]
    if r.scheduler == "step" and late:
        said.append(f"step_milestones {r.step_milestones}: the LR drops once {late[0]} epochs are trained, and "
                    f"epochs={r.epochs} trains no epoch after that, so that drop never happens")
    late = [e for e in r.augment_schedule if e >= r.epochs]
    if late:
        said.append(f"augment_schedule starts {r.augment_schedule[late[0]]!r} after {late[0]} epochs, and "
                    f"epochs={r.epochs} trains no epoch after that, so it never starts")
    if r.unfreeze_epoch is not None and r.unfreeze_epoch > r.epochs:
        said.append(f"unfreeze_epoch={r.unfreeze_epoch} is after the last epoch (epochs={r.epochs}): nothing "
                    f"unfreezes in this run")
    return said


def default_of(r: Recipe, name: str):
    """A key's default, as keys.py declares it (read from the recipe's own fields: no import of keys.py)."""
    return next(f.default for f in dataclasses.fields(r) if f.name == name)
