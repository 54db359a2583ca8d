"""Recipes: keys (every key: default, type, doc, checks), epoch_keys (the keys that change with the epoch: step LR
milestones, augment_schedule), checks (keys checked against each other), several_types (keys of more than one
type: background, teacher) and files (how recipes are read, overridden and saved; DEFAULT_RECIPE)."""
from engine.recipe.epoch_keys import augment_at, augment_presets
from engine.recipe.files import (DEFAULT_RECIPE, differing_keys, from_dict, load_recipe, load_recipe_args,
                                 parse_override, read_recipe_file, save_json)
from engine.recipe.keys import FIELDS, Recipe, check_value, describe, resolve

__all__ = ["DEFAULT_RECIPE", "FIELDS", "Recipe", "augment_at", "augment_presets", "check_value", "describe",
           "differing_keys", "from_dict", "load_recipe", "load_recipe_args", "parse_override", "read_recipe_file", "resolve", "save_json"]
