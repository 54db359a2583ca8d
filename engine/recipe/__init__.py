"""Recipes: every key (keys.py) and how recipes are read, overridden and saved (files.py)."""
from engine.recipe.files import (differing_keys, from_dict, load_recipe, load_recipe_args, parse_override,
                                 read_recipe_file, save_json)
from engine.recipe.keys import FIELDS, Recipe, augment_at, augment_presets, check_value, describe, resolve

__all__ = ["FIELDS", "Recipe", "augment_at", "augment_presets", "check_value", "describe", "differing_keys",
           "from_dict", "load_recipe", "load_recipe_args", "parse_override", "read_recipe_file", "resolve", "save_json"]
