"""W&B logging goes through RunLog only: per-fold keys, one W&B run per run folder (kept on resume)."""
import sys
import types

from engine.train.orchestrator import train
from tests.conftest import digits_recipe


class FakeRun:
    def __init__(self, **kwargs):
        self.kwargs, self.logged, self.finished = kwargs, [], False

    def log(self, values, step=None):
        self.logged.append(values)

    def finish(self):
        self.finished = True


def fake_wandb(runs):
    module = types.ModuleType("wandb")
    module.init = lambda **kwargs: runs.append(FakeRun(**kwargs)) or runs[-1]
    return module


def test_metrics_reach_wandb_per_fold_and_a_resume_continues_the_same_run(digits_dir, tmp_path, monkeypatch):
    runs = []
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(runs))
    recipe = digits_recipe(digits_dir, tmp_path, epochs=1, wandb="offline", wandb_project="sketches")
    run_dir = train(recipe, show_progress=False)
    (first,) = runs
    assert first.kwargs["mode"] == "offline" and first.kwargs["project"] == "sketches"
    run_id = (run_dir / "wandb_id").read_text()
    assert first.kwargs["id"] == run_id and len(run_id) == 8 and first.finished
    assert first.logged[0]["fold0/val_acc"] == first.logged[0]["fold0/val_acc"]  # a number, not NaN
    assert {"fold0/train_loss", "fold0/val_loss", "fold0/lr"} <= set(first.logged[0])
    train(None, resume=str(run_dir), show_progress=False)
    assert runs[1].kwargs["id"] == run_id and runs[1].kwargs["resume"] == "allow"


def test_disabled_wandb_is_never_imported(digits_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # importing it would raise
    train(digits_recipe(digits_dir, tmp_path, epochs=1), show_progress=False)
