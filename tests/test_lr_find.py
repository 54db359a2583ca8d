"""The LR range test (`train.py RECIPE --find-lr`): a suggestion where the loss fell, a plot, no run folder, frozen
parameters untouched, and from a feature store the backbone never runs per step."""
from __future__ import annotations

import re

import torch

import engine.train.lr_find as lr_find
import train as train_cli
from engine import run_folder
from tests.conftest import ROOT


def overrides(digits_dir, out, *extra):
    return [str(ROOT / "recipes" / "demo.py"), f"data_dir='{digits_dir}/train'", f"train_csv='{digits_dir}/train.csv'",
            "model='test_resnet'", "num_workers=0", "batch_size=32", f"output_dir='{out}'", *extra]


def capture(monkeypatch) -> dict:
    """Record the model the test builds (and its weights then) and the result it returns."""
    seen = {}
    build, find = lr_find.model_from_recipe, lr_find.find_lr

    def model_from_recipe(*args, **kwargs):
        seen["model"] = model = build(*args, **kwargs)
        seen["before"] = {k: v.clone() for k, v in model.state_dict().items()}
        return model

    def find_lr(*args, **kwargs):
        seen["result"] = find(*args, **kwargs)
        return seen["result"]
    monkeypatch.setattr(lr_find, "model_from_recipe", model_from_recipe)
    monkeypatch.setattr(lr_find, "find_lr", find_lr)
    return seen


def test_suggests_an_lr_where_the_loss_fell_plots_it_and_leaves_no_run(digits_dir, tmp_path, monkeypatch, capsys):
    seen = capture(monkeypatch)
    assert train_cli.main([*overrides(digits_dir, tmp_path, "freeze=2", "optimizer='SGD'"), "--find-lr", "--lr-steps", "100",
                           "--no-progress"]) == 0
    out = capsys.readouterr().out
    r = seen["result"]
    printed = float(re.search(r"suggested lr=(\S+) \(", out).group(1))
    assert printed == float(f"{r.suggestion:.2e}") and r.rule in out
    low = min(range(len(r.smoothed)), key=r.smoothed.__getitem__)
    at = r.lrs.index(r.suggestion)
    assert r.lrs[0] < r.suggestion <= r.lrs[low] and r.smoothed[at] < r.smoothed[0]  # where the loss fell
    assert len(r.lrs) <= 100 and ("diverged" in r.stopped or len(r.lrs) == 100)
    assert r.plot == tmp_path / "demo" / run_folder.LR_FIND and r.plot.stat().st_size > 10_000
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["demo", "demo/.sketchbook_outputs.json",
                                                                                        f"demo/{run_folder.LR_FIND}"]
    model, before = seen["model"], seen["before"]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert frozen and trained
    after = model.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in frozen)  # bitwise
    assert all(torch.equal(before[n], after[n]) for n in before if "running" in n and n.split(".")[0] in
               {f.split(".")[0] for f in frozen} - {t.split(".")[0] for t in trained})  # frozen batch-norm statistics
    assert any(not torch.equal(before[n], after[n]) for n in trained)


def test_from_a_feature_store_the_backbone_never_runs_per_step(digits_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SKETCHBOOK_CACHE_DIR", str(tmp_path / "cache"))
    seen, calls = capture(monkeypatch), {"steps": False, "backbone": 0}
    build_state = lr_find.build_train_state

    def build_train_state(*args, **kwargs):  # the store is built by now: from here on, only the steps
        calls["steps"] = True
        return build_state(*args, **kwargs)
    monkeypatch.setattr(lr_find, "build_train_state", build_train_state)
    real = lr_find.model_from_recipe

    def model_from_recipe(*args, **kwargs):
        model = real(*args, **kwargs)
        stem = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        stem.register_forward_hook(lambda *a: calls.__setitem__("backbone", calls["backbone"] + calls["steps"]))
        return model
    monkeypatch.setattr(lr_find, "model_from_recipe", model_from_recipe)
    assert train_cli.main([*overrides(digits_dir, tmp_path / "runs", "freeze='backbone'", "feature_views=1",
                                      "feature_dtype='fp32'"), "--find-lr", "--lr-steps", "40", "--no-progress"]) == 0
    r = seen["result"]
    assert r.plot.is_file() and len(r.lrs) > 8
    assert calls["steps"] and calls["backbone"] == 0
    assert not list((tmp_path / "runs").rglob("*.pt"))


def test_a_flat_loss_gets_no_suggestion_and_one_that_fell_never_leaves_the_tested_range():
    lrs = [lr_find.lr_at(i, 100, 1e-7, 10.0) for i in range(100)]
    flat = lr_find.smooth([2.3026 + 0.01 * ((i * 7919) % 13 - 6) / 6 for i in range(100)])  # ln(10), noise only
    assert lr_find.suggest(lrs, flat) == (None, lr_find.FLAT)
    early = lr_find.smooth([2.3 - 0.5 * (i < 12) * i / 12 + 0.05 * max(0, i - 12) for i in range(100)])
    lr, _ = lr_find.suggest(lrs, early)  # the minimum right after the settling updates
    assert lr is None or lrs[0] <= lr <= lrs[-1]


def test_the_suggestion_is_printed_before_the_plot_is_written(digits_dir, tmp_path, monkeypatch, capsys):
    from engine.system.atomic import DiskFull

    def full_disk(*args, **kwargs):
        raise DiskFull("disk full writing lr_find.png")
    monkeypatch.setattr(lr_find, "draw", full_disk)
    assert train_cli.main([*overrides(digits_dir, tmp_path, "image_size=16"), "--find-lr", "--lr-steps", "30",
                           "--no-progress"]) == 75
    out = capsys.readouterr().out
    assert "suggested lr=" in out or lr_find.FLAT in out
