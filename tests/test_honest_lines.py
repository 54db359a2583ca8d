"""Issue 32, the rest of section 6: keys that could never take effect, files that do not belong, advice that names
the real fix; each is one line and fails on the code before."""
from __future__ import annotations

import pytest

from engine.errors import UserError
from engine.recipe import from_dict, load_recipe


@pytest.mark.parametrize("keys, named", [
    (dict(early_stopping=3, folds=1, val_fraction=0.0), "early_stopping=3 watches val_loss"),
    (dict(layer_decay=1e-30), "layer_decay=1e-30 gives the lowest"),
    (dict(layer_decay=0.05), "layer_decay=0.05"),
])
def test_a_key_that_cannot_work_is_one_line(keys, named):
    with pytest.raises(UserError, match=named) as e:
        load_recipe(None, keys)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("keys, named", [
    (dict(head="linear", head_hidden=256), 'head_hidden=256 sizes the hidden layer of head="mlp"'),
    (dict(scheduler="step", step_milestones=(3, 12), epochs=10), "step_milestones (3, 12)"),
    (dict(scheduler="step", step_milestones=(10,), epochs=10), "once 10 epochs are trained"),
    (dict(augment_schedule={0: "none", 10: "light"}, epochs=10), "augment_schedule starts 'light' after 10"),
    (dict(freeze="backbone", unfreeze_epoch=11, epochs=10), "unfreeze_epoch=11 is after the last epoch")])
def test_a_key_that_would_never_take_effect_is_one_warning_line(keys, named, capsys):
    load_recipe(None, keys)  # a smoke test with epochs=1 (or a sweep over head) must still run
    err = capsys.readouterr().err
    assert named in err and err.startswith("warning: ") and err.count("\n") == 1


@pytest.mark.parametrize("keys", [
    dict(early_stopping=3, folds=1, val_fraction=0.2), dict(early_stopping=3, folds=3, val_fraction=0.2),
    dict(layer_decay=0.65), dict(head="mlp", head_hidden=256), dict(scheduler="step", step_milestones=(6, 9)),
    dict(augment_schedule={0: "none", 9: "light"}), dict(freeze="backbone", unfreeze_epoch=10)])
def test_the_same_keys_within_the_run_are_accepted(keys, capsys):
    load_recipe(None, keys)
    assert "warning" not in capsys.readouterr().err


def test_a_saved_recipe_from_before_the_checks_still_loads():
    """predict, resume and the runs table read recipe.json files written before a check existed."""
    saved = load_recipe(None, {}).to_dict() | dict(head_hidden=256, early_stopping=2, val_fraction=0.0)
    assert from_dict(saved).head_hidden == 256


@pytest.mark.parametrize("bad", [{"model": 5}, {"epochs": "ten"}, {"head": "conv"}])
def test_a_bad_value_in_recipe_json_names_the_file_and_the_key(bad, tmp_path):
    import json
    from engine import run_folder
    (tmp_path / run_folder.RECIPE).write_text(json.dumps(load_recipe(None, {}).to_dict() | bad))
    with pytest.raises(UserError, match=rf"{tmp_path / run_folder.RECIPE}: recipe key '{next(iter(bad))}'") as e:
        run_folder.read_recipe(tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("options, size, fix", [
    ({}, 100, "multiple of its patch size 16: image_size=112 or 96"),  # test_vit takes any multiple of 16
    ({}, 8, "multiple of its patch size 16: image_size=16$"),
    (dict(dynamic_img_size=False), 100, "the model's own size, image_size=160")])  # one position grid: one size
def test_a_vit_that_refuses_a_size_is_told_the_size_it_takes(options, size, fix):
    import timm
    from engine.input_size import check_input_size
    vit = timm.create_model("test_vit", num_classes=3, **options)
    with pytest.raises(UserError, match=fix) as e:
        check_input_size(vit, "test_vit", size)
    assert "larger" not in str(e.value)
    check_input_size(vit, "test_vit", int(str(e.value).split("image_size=")[-1].split()[0]))  # the advice works


def _dry_run(tmp_path, **keys) -> list[str]:
    """The dry run's lines for a recipe checked without its data (num_classes set): the model part only."""
    from engine.system.distributed import Dist
    from engine.train.dry_run import describe_dry_run
    lines = []
    recipe = load_recipe(None, dict(dict(model="test_resnet", train_csv=str(tmp_path / "absent.csv"), num_classes=3,
                                         image_size=32, num_workers=0), **keys))
    describe_dry_run(recipe, Dist(), lines.append, show_progress=False)
    return lines


def test_dry_run_refuses_a_pretrained_path_that_is_not_there(tmp_path):
    with pytest.raises(UserError, match=f"pretrained_path '{tmp_path / 'gone.pt'}' not found"):
        _dry_run(tmp_path, pretrained_path=str(tmp_path / "gone.pt"))


@pytest.mark.parametrize("size, grid", [(32, "4x4"), (64, "8x8")])
def test_dry_run_says_the_last_map_small_input_stem_gives(tmp_path, size, grid):
    lines = _dry_run(tmp_path, small_input_stem=True, image_size=size)
    assert f"small_input_stem: the last stage sees a {grid} feature map at {size} px" in lines


@pytest.mark.parametrize("groups", [None, "near-duplicate groups"])
def test_k_fold_with_a_one_row_class_says_one_line_and_no_raw_warning(groups, recwarn):
    import numpy as np
    from engine.data.tables.folds import assign_folds, few_rows_warning
    targets = np.array([0] + [1] * 2 + [2] * 30)
    ids = np.arange(len(targets)) // 2 if groups else None
    folds = assign_folds(targets, 3, 0.2, seed=0, groups=ids)
    assert sorted(set(folds)) == [0, 1, 2] and not [w for w in recwarn if "fold" in str(w.message).lower()]
    line = few_rows_warning(targets, ["cat", "dog", "eel"], 3)
    assert line.startswith("warning: 2 class(es) have fewer rows than folds=3: cat (1), dog (2);") and "\n" not in line
    assert few_rows_warning(targets, ["cat", "dog", "eel"], 1) is None and few_rows_warning(targets[3:] - 2, ["eel"], 3) is None


def _copy_run(trained_run, tmp_path):
    import shutil
    run = tmp_path / trained_run.parent.name / trained_run.name
    shutil.copytree(trained_run, run)
    return run


@pytest.mark.parametrize("kept_rows", [1, 0])  # the stopped run recorded one epoch, or none (no metrics.csv)
def test_a_finished_last_pt_copied_into_a_stopped_run_is_refused(trained_run, tmp_path, kept_rows):
    from engine import run_folder
    from engine.train.orchestrator import train
    run = _copy_run(trained_run, tmp_path)
    metrics = run / "fold0" / run_folder.METRICS
    if kept_rows:
        metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:1 + kept_rows]))
    else:
        metrics.unlink()
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(UserError, match=rf"{run / 'fold0' / 'last.pt'} says 2 epochs were trained and the fold "
                                        rf"finished, but .*metrics.csv records {kept_rows}: it was copied") as e:
        train(None, resume=str(run), show_progress=False)
    assert "\n" not in str(e.value) and sorted(p.name for p in run.rglob("*")) == before  # nothing written
    if kept_rows:  # the runs table says the same (was "finished")
        from engine.runs.status import read_run
        row = read_run(run, tmp_path)
        assert row.status == "damaged" and "records 1: it was copied from another run" in row.detail


def test_a_last_pt_of_another_split_is_refused_naming_it(trained_run, tmp_path):
    import pandas as pd
    from engine import run_folder
    from engine.train.orchestrator import check_belongs
    split = pd.read_csv(trained_run / run_folder.SPLIT)
    path = trained_run / "fold0" / "last.pt"
    state = {"epoch": 1, "split": "0123456789abcdef"}  # what another run's last.pt records
    with pytest.raises(UserError, match=rf"{path} was trained on another split than this run's split.csv"):
        check_belongs(path, state, split)
    from engine.train.split_record import fingerprint
    check_belongs(path, {"epoch": 1, "split": fingerprint(split)}, split)  # its own: accepted


@pytest.mark.parametrize("rows, world, batch, left", [(320, 3, 53, 2), (320, 3, 16, 32), (1222, 1, 64, 6),
                                                      (320, 2, 32, 0), (5, 3, 8, 0)])  # one short batch each: none
def test_the_start_line_says_how_many_rows_each_epoch_leaves_out(rows, world, batch, left):
    from types import SimpleNamespace
    import torch
    from engine.data.batches.loader import EpochSampler
    from engine.data.batches.sources import count_batches
    from engine.train.fit import start_line

    n_rows = rows

    class Source:  # a training batch source as every kind is: whole batches once a shard holds more than one
        sampler, rows, workers = EpochSampler(n_rows, batch, True, 0, 0, world), n_rows, 0

        def __len__(self):
            return count_batches(len(self.sampler), batch, len(self.sampler) > batch)

    s = SimpleNamespace(model=torch.nn.Linear(2, 2), amp_dtype=None, mixer=SimpleNamespace(active=False))
    batches = SimpleNamespace(train=Source(), val=SimpleNamespace(rows=10), path="workers", why="test")
    d = SimpleNamespace(world=world, enabled=world > 1, device=torch.device("cpu"))
    line = start_line(load_recipe(None, dict(batch_size=batch)), 0, s, batches, d)
    said = [x for x in line.splitlines() if "training rows out" in x]
    assert said == ([f"each epoch leaves {left} of {rows} training rows out (others each epoch): every process takes "
                     f"whole batches, {rows // world // batch} x {batch} x {world} process(es) = {rows - left}"]
                    if left else [])


def test_an_oof_table_and_probabilities_of_different_lengths_are_one_line_for_every_reader(tmp_path):
    """Label issues, ensemble weights and distillation read the same pair (oof.csv, oof_probs.npy): a pair cut
    short is one line naming both files and the reader's own fix, never a shape error further on."""
    import numpy as np
    import pandas as pd

    from engine import run_folder
    from engine.evaluate.ensemble import load_oof
    from engine.evaluate.label_issues import oof_inputs
    from engine.recipe import save_json
    from engine.train.distill import read_teacher
    save_json(load_recipe(None, ["folds=2"]), tmp_path / run_folder.RECIPE)
    pd.DataFrame({"image_path": ["a.png", "b.png", "c.png"], "target": [0, 1, 0], "fold": [0, 1, 0],
                  "pred": [0, 1, 1]}).to_csv(tmp_path / run_folder.OOF, index=False)
    np.save(tmp_path / run_folder.OOF_PROBS, np.full((2, 2), 0.5, dtype=np.float16))  # one row short
    for read, fix in [(oof_inputs, "python -m engine.report"), (load_oof, "--weights equal"),
                      (lambda r: read_teacher(str(r)), "name another teacher")]:
        with pytest.raises(UserError) as e:
            read(tmp_path)
        message = str(e.value)
        assert "has 2 rows but" in message and run_folder.OOF in message and fix in message and "\n" not in message
