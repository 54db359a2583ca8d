"""Recipes: files, overrides, and every error a user can make, each as one clear line."""
import json
import subprocess
import sys

import pytest

from engine.errors import UserError
from engine.recipe import FIELDS, Recipe, augment_at, augment_presets, describe, from_dict, load_recipe, parse_override
from tests.conftest import ROOT


def write(tmp_path, text, name="exp.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_file_and_overrides_resolve_with_types(tmp_path):
    path = write(tmp_path, "model = 'resnet50'\nlr = 1e-3\nepochs = 3\n")
    r = load_recipe(path, ["lr=3e-4", "batch_size=16", "model=convnext_tiny", "clip_grad_norm=None"])
    assert (r.model, r.lr, r.batch_size, r.epochs, r.clip_grad_norm) == ("convnext_tiny", 3e-4, 16, 3, None)
    assert r.name == "exp"  # the run folder is named after the recipe file
    assert isinstance(load_recipe(path, ["lr=1"]).lr, float)  # an int is a fine float


def test_recipe_may_import_a_base_recipe(tmp_path):
    r = load_recipe(ROOT / "recipes" / "convnext.py")
    assert r.model == "convnext_tiny" and r.folds == 5 and r.name == "convnext"  # folds from resnext.py


@pytest.mark.parametrize("override, message", [
    ("lrr=1e-3", "unknown recipe key 'lrr'; did you mean 'lr'?"),
    ("lr=fast", "recipe key 'lr' must be float, got 'fast'"),
    ("epochs=2.5", "recipe key 'epochs' must be int, got 2.5"),
    ("pretrained=1", "recipe key 'pretrained' must be bool"),
    ("loss=focal", "did you mean 'Focal'?"),
    ("batch_size=0", "'batch_size' must be in [1, inf)"),
    ("mix_alpha=0", "'mix_alpha' must be in (0, inf)"),
    ("val_fraction=1.5", "'val_fraction' must be in [0, 1)"),
    ("lr", "must look like KEY=VALUE"),
    # the keys that change with the epoch
    ("scheduler=step", 'scheduler="step" needs step_milestones'),
    ("step_milestones=(6, 3)", "'step_milestones' must be increasing epochs >= 1"),
    ("step_milestones=(0, 3)", "'step_milestones' must be increasing epochs >= 1"),
    ("step_milestones=6", "'step_milestones' must be a tuple of epochs such as (6, 9)"),
    ("step_milestones=(2.5,)", "'step_milestones' has 2.5 where an epoch (an int >= 0) belongs"),
    ("step_gamma=0", "'step_gamma' must be in (0, 1]"),
    ("step_gamma=2.0", "'step_gamma' must be in (0, 1]"),
    ("augment_schedule={0: 'strong'}", "'augment_schedule' has preset 'strong'; presets are none, light"),
    ("augment_schedule={-1: 'light'}", "'augment_schedule' has -1 where an epoch (an int >= 0) belongs"),
    ("augment_schedule=['light']", "'augment_schedule' must be a dict of epoch -> preset"),
])
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(UserError) as e:
        load_recipe(None, [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_mix_ratios_past_one_are_an_error():
    with pytest.raises(UserError, match="mixup_ratio \\+ cutmix_ratio must be <= 1"):
        load_recipe(None, ["mixup_ratio=0.6", "cutmix_ratio=0.5"])


def test_unknown_name_in_a_recipe_file_is_an_error(tmp_path):
    with pytest.raises(UserError, match="'epoch' is not a recipe key; did you mean 'epochs'"):
        load_recipe(write(tmp_path, "epoch = 3\n"))
    assert load_recipe(write(tmp_path, "import math\n_half = 0.5\nlr = math.pi * _half * 1e-3\n")).lr > 0


def test_missing_or_broken_recipe_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_recipe(tmp_path / "nope.py")
    with pytest.raises(UserError, match="failed to run: NameError"):
        load_recipe(write(tmp_path, "lr = undefined_name\n"))


def test_overrides_parse_python_literals():
    assert parse_override("lr=3e-4") == ("lr", 3e-4)
    assert parse_override("model=resnet18") == ("model", "resnet18")
    assert parse_override("sweep={'method': 'grid'}") == ("sweep", {"method": "grid"})


def test_every_key_is_documented_and_round_trips_through_json():
    assert all(f.metadata["doc"] for f in FIELDS.values())
    text = describe()
    assert all(name in text for name in FIELDS)
    r = load_recipe(None, ["lr=0.1", "sweep={'method': 'random'}"])
    assert from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert from_dict({**r.to_dict(), "key_from_the_future": 1}) == r


def test_help_lists_every_key():
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    assert all(name in out.stdout for name in FIELDS)


def test_cli_prints_one_line_error_and_exit_code_2():
    out = subprocess.run([sys.executable, "train.py", "recipes/demo.py", "lrr=1"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: unknown recipe key 'lrr'; did you mean 'lr'?"


def test_defaults_are_a_valid_recipe():
    assert Recipe() == load_recipe(None)


@pytest.mark.parametrize("args, message", [
    (["--resume", "runs/nothing"], "error: --resume runs/nothing: not found"),
    (["--fold", "3", "epochs=1"], "error: --fold 3 is out of range: the recipe has folds = 1 (0..0)"),
    (["--resume", "runs/x", "lr=1"], "error: --resume continues the saved recipe exactly"),
])
def test_command_line_mistakes_are_one_line(args, message, capsys):
    from train import main  # in this process: the exit path itself is test_cli_prints_one_line_error_and_exit_code_2's
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_schedules_that_cannot_run_where_they_are_asked_to_are_errors():
    with pytest.raises(UserError, match="augment='randaugment' runs only in the workers"):
        load_recipe(None, ["augment_on=device", "augment_schedule={2: 'randaugment'}"])
    with pytest.raises(UserError, match="an augment_schedule cannot change them"):
        load_recipe(None, ["freeze=backbone", "feature_views=2", "augment_schedule={2: 'light'}"])


def test_augment_at_follows_the_schedule_and_survives_recipe_json():
    r = load_recipe(None, ["augment=none", "augment_schedule={5: 'randaugment', 2: 'light'}"])
    assert [augment_at(r, e) for e in range(7)] == ["none"] * 2 + ["light"] * 3 + ["randaugment"] * 2
    saved = from_dict(json.loads(json.dumps(r.to_dict())))  # JSON makes the epochs strings
    assert saved == r and augment_at(saved, 2) == "light"
    assert augment_at(load_recipe(None, ["augment=light"]), 100) == "light"
    staged = load_recipe(None, ["augment=randaugment", "augment_schedule={0: 'none', 3: 'light'}"])
    assert augment_at(staged, 0) == "none" and augment_presets(staged) == ("none", "light")
    assert augment_presets(r) == ("none", "light", "randaugment")
    assert staged.replace(augment_on="device").augment_on == "device"  # randaugment is never used: no error


def test_step_milestones_round_trip_through_json():
    r = load_recipe(None, ["scheduler=step", "step_milestones=[6, 9]"])
    assert r.step_milestones == (6, 9) and from_dict(json.loads(json.dumps(r.to_dict()))) == r
