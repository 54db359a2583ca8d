"""Sweeps: W&B config translation, the Optuna backend (seeding, resume, grid, crashes, pruning),
results that train, and the W&B backend driven through fakes. No network, no credentials."""
from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import digits_recipe

import engine.sweep.command as sweep_mod
from engine.errors import UserError
from engine.recipe import from_dict, load_recipe
from engine.sweep.command import choose_backend, run_sweep
from engine.sweep.config import grid_points, parse_sweep, sample_point
from engine.sweep.optuna_backend import make_pruner, make_sampler

LR = {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}


def base_recipe(tmp_path: Path, sweep: dict, **changes):
    """A recipe that never touches data (for sweeps whose trials are faked)."""
    return load_recipe(None, dict(name="fake", output_dir=str(tmp_path), epochs=3, sweep=sweep, **changes))


def fake_trainer(calls: list):
    """Stands in for training: a deterministic val_acc from the values, reported every epoch."""
    def run(recipe, run_name, on_epoch, show_progress):
        calls.append(recipe)
        if recipe.batch_size == 13:
            raise RuntimeError("boom")
        score = 1 / (1 + abs(math.log10(recipe.lr) + 2.5)) + recipe.weight_decay
        for epoch in range(1, recipe.epochs + 1):
            on_epoch({"epoch": epoch, "val_acc": score * epoch / recipe.epochs, "val_loss": 1 - score})
    return run


@pytest.fixture
def fake_train(monkeypatch) -> list:
    calls: list = []
    monkeypatch.setattr(sweep_mod, "run_in_process", fake_trainer(calls))
    return calls


@pytest.fixture
def no_report(monkeypatch):
    """Trials are normal runs; their per-run evaluation plots are not what these tests check."""
    import engine.evaluate.report_figures
    monkeypatch.setattr(engine.evaluate.report_figures, "make_report", lambda run_dir, *a, **k: [])


def trials(sweep_dir: Path) -> pd.DataFrame:
    return pd.read_csv(sweep_dir / "trials.csv")


def test_every_parameter_form_translates(tmp_path):
    config = {"method": "random", "metric": {"name": "val_loss", "goal": "minimize"},
              "early_terminate": {"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3},
              "parameters": {
                  "optimizer": {"values": ["AdamW", "SGD"]}, "loss": {"value": "Focal"},
                  "epochs": {"min": 2, "max": 4}, "focal_gamma": {"min": 0.5, "max": 3.0},
                  "accumulate_grad_batches": {"distribution": "int_uniform", "min": 1, "max": 3},
                  "mixup_ratio": {"distribution": "uniform", "min": 0.0, "max": 0.5},
                  "batch_size": {"distribution": "q_uniform", "min": 16, "max": 128, "q": 16},
                  "weight_decay": {"distribution": "log_uniform", "min": math.log(1e-3), "max": math.log(1e-1)},
                  "lr": LR, "label_smoothing": {"distribution": "categorical", "values": [0, 0.1]},
                  "warmup_epochs": {"distribution": "q_log_uniform_values", "min": 0.5, "max": 4, "q": 0.5},
                  "focal_alpha": {"distribution": "constant", "value": 1}}}
    spec = parse_sweep(config, base_recipe(tmp_path, {}))
    assert (spec.min_iter, spec.eta) == (3, 3)  # W&B: bands at 27 / 3**k, k = 1..2
    assert isinstance(make_pruner(spec), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_sampler(spec, 0), optuna.samplers.RandomSampler)
    study = optuna.create_study(sampler=make_sampler(spec, 0))
    points = [sample_point(spec, study.ask()) for _ in range(40)]
    for p in points:
        assert p["optimizer"] in ("AdamW", "SGD") and p["loss"] == "Focal" and p["focal_alpha"] == 1.0
        assert isinstance(p["epochs"], int) and 2 <= p["epochs"] <= 4
        assert isinstance(p["accumulate_grad_batches"], int) and 1 <= p["accumulate_grad_batches"] <= 3
        assert isinstance(p["batch_size"], int) and p["batch_size"] % 16 == 0 and 16 <= p["batch_size"] <= 128
        assert 0.5 <= p["focal_gamma"] <= 3 and 0 <= p["mixup_ratio"] <= 0.5
        assert 1e-3 <= p["weight_decay"] <= 1e-1 and 1e-4 <= p["lr"] <= 1e-2
        assert p["label_smoothing"] in (0.0, 0.1) and (p["warmup_epochs"] * 2).is_integer()
    # log scale: about a third of lr draws per decade, not 90% in the top decade
    assert 0.15 < sum(p["lr"] < 1e-3 for p in points) / len(points) < 0.85
    bayes = parse_sweep({**config, "method": "bayes"}, base_recipe(tmp_path, {}))
    assert isinstance(make_sampler(bayes, 0), optuna.samplers.TPESampler)
    grid = parse_sweep({"method": "grid", "parameters": {"batch_size": {"distribution": "q_uniform", "min": 32,
                        "max": 96, "q": 32}, "optimizer": {"values": ["AdamW", "SGD"]}}}, base_recipe(tmp_path, {}))
    assert grid.grid_size() == 6 and {p["batch_size"] for p in grid_points(grid)} == {32, 64, 96}
    assert isinstance(make_sampler(grid, 0), optuna.samplers.GridSampler)


@pytest.mark.parametrize("config, message", [
    ({"method": "random", "parameters": {"lrr": LR}}, "did you mean 'lr'"),
    ({"method": "random", "parameters": {"lr": {"distribution": "normal", "mu": 0, "sigma": 1}}}, "not supported"),
    ({"method": "random", "parameters": {"batch_size": {"min": 16.0, "max": 64.0}}}, "integer key"),
    ({"method": "random", "parameters": {"optimizer": {"values": ["Adam"]}}}, "must be one of"),
    ({"method": "grid", "parameters": {"lr": LR}}, "grid needs"),
    ({"method": "bayes", "metric": {"name": "accuracy"}, "parameters": {"lr": LR}}, "metric must be"),
    ({"method": "hill", "parameters": {"lr": LR}}, "method must be"),
    ({"method": "random", "parameters": {"lr": LR}, "early_terminate": {"type": "hyperband"}}, "min_iter"),
    ({}, "no `sweep` dict"),
])
def test_bad_configs_are_clear_errors_before_anything_runs(tmp_path, config, message, fake_train):
    with pytest.raises(UserError, match=message):
        run_sweep(base_recipe(tmp_path, config), count=1, backend="optuna", log=lambda *a: None)
    assert fake_train == [] and not (tmp_path / "sweeps").exists()


def test_cli_reports_an_unknown_key_as_an_error(tmp_path, capsys):
    import sweep as sweep_cli
    recipe = tmp_path / "bad.py"
    recipe.write_text(f"output_dir = {str(tmp_path)!r}\nsweep = {{'method': 'random', "
                      f"'parameters': {{'weight_decy': {{'values': [0.0]}}}}}}\n")
    assert sweep_cli.main([str(recipe), "--count", "1"]) == 2
    assert "weight_decay" in capsys.readouterr().err and not (tmp_path / "sweeps").exists()


def test_three_trial_sweep_on_digits_writes_results_and_a_best_recipe_that_trains(digits_dir, tmp_path, no_report):
    sweep = {"method": "bayes", "metric": {"name": "val_acc", "goal": "maximize"},
             "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-2},
                            "batch_size": {"values": [32, 64]}, "label_smoothing": {"values": [0.0, 0.1]}}}
    recipe = digits_recipe(digits_dir, tmp_path, epochs=1, augment="none", sweep=sweep)
    sweep_dir = run_sweep(recipe, count=3, log=lambda *a: None)
    table = trials(sweep_dir)
    assert len(table) == 3 and set(table["state"]) == {"complete"}
    assert table.loc[0, ["lr", "batch_size", "label_smoothing"]].tolist() == [recipe.lr, recipe.batch_size, 0.0]
    assert (sweep_dir / "history.png").stat().st_size > 0
    best = table.loc[table["val_acc"].idxmax()]
    best_recipe = load_recipe(sweep_dir / "best_recipe.py")
    assert (best_recipe.lr, best_recipe.batch_size, best_recipe.label_smoothing) == (
        best["lr"], best["batch_size"], best["label_smoothing"])
    assert best_recipe.name == recipe.name and best_recipe.sweep == {}
    # it is exactly the recipe the best trial trained, so `train.py best_recipe.py` reproduces that run
    trained = from_dict(__import__("json").loads((Path(best["run"]) / "recipe.json").read_text()))
    assert best_recipe == trained


def test_seeded_sweeps_repeat_and_a_new_seed_differs(tmp_path, fake_train):
    sweep = {"method": "bayes", "parameters": {"lr": LR, "weight_decay": {"values": [0.0, 0.01, 0.05]}}}
    runs = [trials(run_sweep(base_recipe(tmp_path / str(i), sweep, seed=seed), count=4, log=lambda *a: None))
            for i, seed in enumerate((1, 1, 2))]
    assert runs[0][["lr", "weight_decay"]].equals(runs[1][["lr", "weight_decay"]])
    assert not runs[0]["lr"].iloc[1:].equals(runs[2]["lr"].iloc[1:])


def test_resume_adds_exactly_n_trials_with_new_values(tmp_path, fake_train):
    recipe = base_recipe(tmp_path, {"method": "random", "parameters": {"lr": LR}})
    run_sweep(recipe, count=3, log=lambda *a: None)
    with pytest.raises(UserError, match="--resume"):
        run_sweep(recipe, count=2, log=lambda *a: None)
    table = trials(run_sweep(recipe, count=2, resume=True, log=lambda *a: None))
    assert table["trial"].tolist() == [0, 1, 2, 3, 4] and len(fake_train) == 5
    assert table["lr"].nunique() == 5  # the resumed session does not replay the first one's draws


def test_grid_stops_at_its_size(tmp_path, fake_train):
    recipe = base_recipe(tmp_path, {"method": "grid", "parameters": {
        "lr": {"values": [1e-3, 3e-3]}, "weight_decay": {"values": [0.0, 0.05]}, "epochs": {"value": 1}}})
    table = trials(run_sweep(recipe, count=10, log=lambda *a: None))
    assert len(table) == 4 and {tuple(r) for r in table[["lr", "weight_decay"]].values} == {
        (1e-3, 0.0), (1e-3, 0.05), (3e-3, 0.0), (3e-3, 0.05)}
    assert all(r.epochs == 1 for r in fake_train)
    run_sweep(recipe, count=10, resume=True, log=lambda *a: None)
    assert len(fake_train) == 4


def test_a_crashing_trial_is_recorded_and_the_sweep_goes_on(digits_dir, tmp_path, no_report):
    # a model timm does not have: building it raises; the other grid point trains
    sweep = {"method": "grid", "parameters": {"model": {"values": ["test_resnet", "no_such_net"]}}}
    recipe = digits_recipe(digits_dir, tmp_path, epochs=1, augment="none", sweep=sweep)
    sweep_dir = run_sweep(recipe, count=5, log=lambda *a: None)
    table = trials(sweep_dir).set_index("model")
    assert table.loc["no_such_net", "state"] == "fail" and "unknown timm model" in table.loc["no_such_net", "error"]
    assert table.loc["test_resnet", "state"] == "complete"
    assert load_recipe(sweep_dir / "best_recipe.py").model == "test_resnet"


def test_pruning_stops_a_trial_whose_metric_is_worse(digits_dir, tmp_path, no_report):
    # trial 0 is the recipe's own lr; with seed 42 the random sampler then draws lr = 1e-7 (checked below)
    sweep = {"method": "random", "metric": {"name": "val_acc", "goal": "maximize"},
             "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
             "parameters": {"lr": {"values": [3e-3, 1e-7]}}}
    recipe = digits_recipe(digits_dir, tmp_path, epochs=3, lr=3e-3, warmup_epochs=0.0, seed=42, augment="none",
                           sweep=sweep)
    table = trials(run_sweep(recipe, count=2, log=lambda *a: None))
    assert table["lr"].tolist() == [3e-3, 1e-7]
    assert table["state"].tolist() == ["complete", "pruned"]
    assert table.loc[0, "epochs"] == 3 and table.loc[1, "epochs"] < 3  # it stopped before its last epoch
    assert len(pd.read_csv(Path(table.loc[1, "run"]) / "fold0" / "metrics.csv")) == table.loc[1, "epochs"]


def test_backend_is_wandb_only_with_credentials_and_online_mode(tmp_path, monkeypatch):
    online = base_recipe(tmp_path, {}, wandb="online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_MODE", "online")
    assert choose_backend(None, online) == "optuna"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert choose_backend(None, online) == "wandb"
    assert choose_backend(None, base_recipe(tmp_path, {}, wandb="disabled")) == "optuna"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert choose_backend(None, online) == "optuna"
    assert choose_backend("wandb", online) == "wandb"


def test_wandb_backend_sends_the_config_and_trains_what_wandb_config_says(tmp_path, monkeypatch, fake_train):
    import wandb
    sweep = {"method": "bayes", "metric": {"name": "val_acc", "goal": "maximize"},
             "early_terminate": {"type": "hyperband", "min_iter": 1},
             "parameters": {"lr": LR, "batch_size": {"values": [32, 64]}}}
    recipe = base_recipe(tmp_path, sweep, wandb_project="sketchy")
    seen, logged = {}, []
    suggestions = [{"lr": 1e-3, "batch_size": 64.0}, {"lr": 3e-3, "batch_size": 32}]

    class FakeRun:
        def __init__(self, i):
            self.id, self.summary = f"run{i}", {}

        def log(self, row):
            logged.append((self.id, row))

        def finish(self, exit_code=0):
            seen.setdefault("exit_codes", []).append(exit_code)

    def fake_sweep(sweep, project=None, entity=None):
        seen.update(config=sweep, project=project)
        return "sweep42"

    def fake_agent(sweep_id, function, count=None, project=None, entity=None):
        assert sweep_id == "sweep42"
        for i in range(count):
            monkeypatch.setattr(wandb, "config", dict(suggestions[i]))
            monkeypatch.setattr(wandb, "init", lambda **kw: FakeRun(i))
            function()

    monkeypatch.setattr(wandb, "sweep", fake_sweep)
    monkeypatch.setattr(wandb, "agent", fake_agent)
    sweep_dir = run_sweep(recipe, count=2, backend="wandb", log=lambda *a: None)
    assert seen["project"] == "sketchy" and seen["config"]["parameters"] == sweep["parameters"]
    assert seen["config"]["method"] == "bayes" and seen["config"]["early_terminate"] == sweep["early_terminate"]
    assert [(r.lr, r.batch_size, r.wandb) for r in fake_train] == [(1e-3, 64, "disabled"), (3e-3, 32, "disabled")]
    assert len(logged) == 6 and seen["exit_codes"] == [0, 0]  # 3 epochs per trial, into the agent's run
    table = trials(sweep_dir)
    assert table["state"].tolist() == ["complete", "complete"] and table["wandb_id"].tolist() == ["run0", "run1"]
    assert load_recipe(sweep_dir / "best_recipe.py").lr == table.loc[table["val_acc"].idxmax(), "lr"]


def test_nproc_runs_the_trial_under_torchrun_and_reads_its_metrics(digits_dir, tmp_path, no_report):
    sweep = {"method": "random", "parameters": {"lr": {"values": [3e-3]}}}
    recipe = digits_recipe(digits_dir, tmp_path, epochs=1, augment="none", monitor="val_acc", sweep=sweep)
    sweep_dir = run_sweep(recipe, count=1, nproc=2, log=lambda *a: None)
    row = trials(sweep_dir).iloc[0]
    assert row["state"] == "complete" and (sweep_dir / "trials" / "sweep-digits-t000.py").is_file()
    metrics = pd.read_csv(Path(row["run"]) / "fold0" / "metrics.csv")
    assert row["val_acc"] == pytest.approx(metrics["val_acc"].max())
    assert "x2" in (Path(row["run"]) / "train.log").read_text()  # two processes trained it
