"""Recipe files and overrides: a flat Python file of assignments (it may `from recipes.base import *`), KEY=VALUE
words, and the JSON a run folder keeps. Only names that are recipe keys count; any other public name is an
error, so typos never pass silently."""
from __future__ import annotations

import ast
import difflib
import json
import runpy
import sys
import types
from pathlib import Path
from typing import Any

from engine.errors import UserError
from engine.recipe.keys import FIELDS, Recipe, resolve
from engine.system.atomic import write_text

DEFAULT_RECIPE = "recipes/demo.py"  # train.py and python -m engine.explore without a recipe: the digits demo

def parse_override(text: str) -> tuple[str, Any]:
    """'lr=3e-4' -> ('lr', 0.0003); values are Python literals, bare words are strings."""
    if "=" not in text:
        raise UserError(f"override '{text}' must look like KEY=VALUE, e.g. lr=3e-4")
    name, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return name.strip(), value


def read_recipe_file(path: str | Path) -> dict:
    """Run a recipe file and return its recipe keys; any other public name is an error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe file '{path}' not found; recipes live in recipes/, e.g. recipes/demo.py")
    root = str(Path(__file__).resolve().parents[2])  # the repository: recipes/ imports from there
    if root not in sys.path:  # so `from recipes.base import *` works from any folder
        sys.path.insert(0, root)
    try:
        namespace = runpy.run_path(str(path))
    except Exception as e:
        raise UserError(f"recipe file '{path}' failed to run: {type(e).__name__}: {e}") from e
    values = {}
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, (types.ModuleType, types.FunctionType, type)):
            continue
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"{path}: '{name}' is not a recipe key{hint} (prefix helpers with _)")
        values[name] = value
    values.setdefault("name", path.stem)
    return values


def load_recipe(path: str | Path | None, overrides: list[str] | dict | None = None) -> Recipe:
    """Recipe file (None: the defaults) plus KEY=VALUE overrides -> a checked Recipe."""
    values = read_recipe_file(path) if path else {}
    if isinstance(overrides, dict):
        changes = dict(overrides)
    else:
        changes = dict(parse_override(o) for o in overrides or [])
    return resolve(values, changes)


def load_recipe_args(items: list[str], default: str | None = None) -> Recipe:
    """Command-line words `[RECIPE] [KEY=VALUE ...]` -> a Recipe (RECIPE defaults to `default`)."""
    files = [i for i in items if "=" not in i]
    if len(files) > 1 or (not files and default is None):
        raise UserError(f"give exactly one recipe file, got {', '.join(files) or 'none'}")
    return load_recipe(files[0] if files else default, [i for i in items if "=" in i])


# keys that change how fast or where a run goes, not what it learns
HARDWARE_KEYS = {"num_workers", "cache", "compile", "channels_last", "wandb", "wandb_project", "wandb_entity",
                 "output_dir", "grad_checkpointing"}


def differing_keys(a: Recipe, b: Recipe) -> list[str]:
    """Keys whose values differ and change the result (hardware and logging keys are ignored)."""
    return [k for k in FIELDS if k not in HARDWARE_KEYS and getattr(a, k) != getattr(b, k)]


def save_json(recipe: Recipe, path: str | Path) -> None:
    """Write recipe.json atomically (another machine may be reading it)."""
    write_text(path, json.dumps(recipe.to_dict(), indent=2) + "\n")


# what a saved recipe that predates a key was trained with, where that differs from the key's default
LEGACY_VALUES = {"fold_groups": "none"}


def from_dict(values: dict, source: str | Path | None = None) -> Recipe:
    """Recipe from a saved dict (recipe.json or a checkpoint); keys unknown to this version are dropped. A bad
    value is named with `source`, the file it came from."""
    try:
        return resolve({**LEGACY_VALUES, **{k: v for k, v in values.items() if k in FIELDS}}, {}, saved=True)
    except UserError as e:
        if source is None:
            raise
        raise UserError(f"{source}: {e}; fix that key in the file, or restore it from a checkpoint (each one "
                        f"carries its recipe)") from None
