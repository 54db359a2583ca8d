"""The values of the recipe keys that change with the epoch: step-decay milestones and the augmentation schedule
(checked here; the LR they give is engine/train/lr_schedule.py's), and the augmentation preset of each epoch."""
from __future__ import annotations

from typing import Any

Recipe = Any  # engine/recipe/keys.py's Recipe (keys.py imports this module: a name here, not an import)

AUGMENT_PRESETS = ("none", "light", "randaugment", "trivialaugment")


def _epoch(value: Any) -> int:
    """An epoch count >= 0 (JSON gives dict keys as strings: "3" -> 3)."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"has {value!r} where an epoch (an int >= 0) belongs")
    return value


def parse_milestones(value: Any) -> tuple:
    """`step_milestones`: increasing epochs >= 1, as a tuple (a list, as JSON gives it, too)."""
    if not isinstance(value, (tuple, list)):
        raise ValueError(f"must be a tuple of epochs such as (6, 9); got {value!r}")
    epochs = tuple(_epoch(v) for v in value)
    if any(e < 1 for e in epochs) or list(epochs) != sorted(set(epochs)):
        raise ValueError(f"must be increasing epochs >= 1 such as (6, 9); got {value!r}")
    return epochs


def parse_augment_schedule(value: Any) -> dict:
    """`augment_schedule`: {epoch: preset}, epochs >= 0 and presets of `augment`, sorted by epoch."""
    if not isinstance(value, dict):
        raise ValueError(f'must be a dict of epoch -> preset such as {{0: "none", 3: "light"}}; got {value!r}')
    schedule = {_epoch(e): p for e, p in value.items()}
    bad = [p for p in schedule.values() if p not in AUGMENT_PRESETS]
    if bad:
        raise ValueError(f"has preset {bad[0]!r}; presets are {', '.join(AUGMENT_PRESETS)}")
    return dict(sorted(schedule.items()))


def augment_at(recipe: Recipe, epoch: int) -> str:
    """The augmentation preset of the epoch after `epoch` epochs trained (0: the first): the augment_schedule
    entry with the largest epoch <= `epoch`, else `augment`."""
    return next((p for e, p in reversed(recipe.augment_schedule.items()) if e <= epoch), recipe.augment)


def augment_presets(recipe: Recipe) -> tuple[str, ...]:
    """Every preset some epoch of the run uses, in order (where augmentation can run must suit them all)."""
    return tuple(dict.fromkeys(augment_at(recipe, e) for e in range(recipe.epochs)))
