"""The loop: it learns, accumulation equals a big batch, the LR schedule, bf16 on CPU, checkpoints."""
import math

import pandas as pd
import pytest
import torch

from engine import checkpoint
from engine.data.batches.loader_source import LoaderBatches
from engine.data.batches.loader import EpochSampler, make_loader
from engine.train.loop import evaluate, train_one_epoch
from engine.train.state import TrainState
from engine.train.losses import SoftTargetCrossEntropy
from engine.train.mix import Mixer
from engine.models import build_model
from engine.train.optim import build_optimizer
from engine.train.lr_schedule import build_scheduler, lr_factor, step_milestone_updates
from engine.recipe import from_dict
from engine.data.tables.read import read_train_table
from engine.data.pixels.transforms import Normalize, build_eval_transform
from engine.data.batches.loader import ImageDataset, ShardSampler


class TensorImages(torch.utils.data.Dataset):
    """Deterministic uint8 images; items requested as (epoch, index) like the engine's dataset."""

    def __init__(self, n=24, size=8, classes=3):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
        self.y = torch.arange(n) % classes

    def __len__(self):
        return len(self.y)

    def __getitem__(self, item):
        _, i = item
        return self.x[i], self.y[i]


def tiny_state(accumulate=1, precision=None, lr=0.1, optimizer="SGD"):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))  # no batch-norm: micro-batches are exact
    opt = build_optimizer(model, optimizer, lr, 0.0, momentum=0.0)
    return TrainState(model=model, forward=model, optimizer=opt, scheduler=build_scheduler(opt, 100, 0, "none"),
                      scaler=torch.amp.GradScaler("cpu", enabled=False), criterion=SoftTargetCrossEntropy(),
                      mixer=Mixer(3), device=torch.device("cpu"), amp_dtype=precision, accumulate=accumulate)


NORMALIZE = Normalize((0.5,) * 3, (0.25,) * 3)


def run_epoch(state, batch_size, n=24):
    sampler = EpochSampler(n, batch_size, True, seed=0)
    loader = make_loader(TensorImages(n), batch_size, sampler, 0, train=True)
    return train_one_epoch(state, LoaderBatches(loader, state.device, NORMALIZE), epoch=0, show_progress=False)


def test_accumulating_micro_batches_equals_one_big_batch():
    big, small = tiny_state(accumulate=1), tiny_state(accumulate=3)
    run_epoch(big, batch_size=12)  # 2 updates of 12
    run_epoch(small, batch_size=4)  # 2 updates of 3 x 4
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert big.scheduler.last_epoch == small.scheduler.last_epoch == 2


def test_last_partial_window_is_divided_by_its_true_length():
    state = tiny_state(accumulate=4)
    run_epoch(state, batch_size=4, n=24)  # 6 micro-batches: a window of 4, then a partial window of 2
    ref = tiny_state()
    data = TensorImages(24)
    sampler = EpochSampler(24, 4, True, seed=0)
    sampler.set_epoch(0)
    order = [i for _, i in sampler]
    for window in (order[:16], order[16:]):  # by hand: the mean loss over each window's samples
        x, y = data.x[window], data.y[window]
        loss = ref.criterion(ref.model(NORMALIZE(x)), torch.eye(3)[y])
        loss.backward()
        ref.optimizer.step()
        ref.optimizer.zero_grad()
    for a, b in zip(state.model.parameters(), ref.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_lr_warms_up_linearly_then_follows_a_cosine():
    total, warm = 110, 10
    assert lr_factor(0, total, warm) == pytest.approx(1 / 11)
    assert lr_factor(9, total, warm) == pytest.approx(10 / 11)
    assert lr_factor(10, total, warm) == pytest.approx(1.0)
    assert lr_factor(60, total, warm) == pytest.approx(0.5)
    assert lr_factor(110, total, warm) == pytest.approx(0.0)
    assert lr_factor(60, total, warm, "none") == 1.0


def test_step_decay_drops_by_gamma_at_each_milestone_after_its_warm_up():
    upe = 10  # updates per epoch; milestones after 3 and 6 epochs, 5 updates of warm-up
    milestones = step_milestone_updates((3, 6), upe)
    assert milestones == (30, 60)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = build_scheduler(opt, 10 * upe, 5, "step", milestones, 0.1)
    lrs = []
    for _ in range(10 * upe):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:6] == pytest.approx([0.5 * k / 6 for k in range(1, 6)] + [0.5])  # warm-up, then the peak
    assert lrs[29] == pytest.approx(0.5) and lrs[30] == pytest.approx(0.05)  # first update after 3 epochs
    assert lrs[59] == pytest.approx(0.05) and lrs[60] == pytest.approx(0.005) and lrs[-1] == pytest.approx(0.005)
    assert lr_factor(2, 100, 5, "step", (2,), 0.5) == pytest.approx(0.5 * 3 / 6)  # a milestone inside the warm-up


def test_bf16_on_cpu_runs_the_forward_in_bf16_and_learns():
    state = tiny_state(precision=torch.bfloat16, lr=0.5)
    dtypes = []
    state.model[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    first = run_epoch(state, 8)["train_loss"]
    for _ in range(6):
        last = run_epoch(state, 8)["train_loss"]
    assert dtypes[0] == torch.bfloat16 and last < first * 0.7


def test_a_short_run_learns_the_digits(trained_run):
    metrics = pd.read_csv(trained_run / "fold0" / "metrics.csv")
    assert len(metrics) == 2 and metrics["val_acc"].iloc[-1] > 0.4  # 10 classes: chance is 0.1 (one thread: 0.49)
    assert metrics["val_acc"].is_monotonic_increasing and metrics["train_loss"].is_monotonic_decreasing
    assert (trained_run / "recipe.json").is_file() and (trained_run / "train.log").read_text().count("epoch") >= 2


def test_the_fold_start_says_what_sets_its_speed(trained_run):
    lines = (trained_run / "train.log").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("fold 0: test_resnet"))
    assert lines[start + 1] == "speed: compile off"  # a ResNet: no attention, no padded MLP, compile=False


def test_checkpoint_round_trip_with_weights_only(trained_run):
    raw = torch.load(trained_run / "fold0" / "best.pt", map_location="cpu", weights_only=True)
    assert {"model", "recipe", "classes", "epoch", "metrics"} <= set(raw)
    last = torch.load(trained_run / "fold0" / "last.pt", map_location="cpu", weights_only=True)
    assert {"optimizer", "scheduler", "scaler", "rng", "early_stopping"} <= set(last)
    recipe = from_dict(raw["recipe"])
    model = build_model(recipe.model, len(raw["classes"]))
    model.load_state_dict(raw["model"])
    table = read_train_table(recipe.data_dir, recipe.train_csv)
    val = pd.read_csv(trained_run / "fold0" / "val_predictions.csv")
    rows = table.set_index("image_path").loc[val["image_path"]]
    ds = ImageDataset(rows["path"], rows["target"], build_eval_transform(recipe.image_size, raw["data"]["crop_pct"]))
    loader = make_loader(ds, 64, ShardSampler(len(ds)), 0, train=False)
    result = evaluate(model, LoaderBatches(loader, torch.device("cpu"), Normalize(raw["data"]["mean"], raw["data"]["std"])))
    assert result["acc"] == pytest.approx(raw["metrics"]["val_acc"])
    assert (result["probs"].argmax(1).numpy() == val["pred"].to_numpy()).all()


def test_a_killed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"epoch": 1}, path)

    def dies_half_way(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is killed mid-write

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_ema_warms_up_so_early_averages_follow_the_model():
    from engine.train.ema import ModelEma
    model = torch.nn.Linear(4, 2)
    ema = ModelEma(model, decay=0.9998)
    for _ in range(50):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update(model)
    # a fixed 0.9998 would have moved the average 1% of the way; the warm-up keeps it close
    assert (model.weight - ema.module.weight).abs().max() < 10 and ema.current_decay() < 0.99


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    from engine.system.distributed import Dist
    from engine.recipe import load_recipe
    from engine.run_folder import make_run_dir
    a = make_run_dir(load_recipe(None, {"output_dir": str(tmp_path), "lr": 1e-3}), None, Dist())
    b = make_run_dir(load_recipe(None, {"output_dir": str(tmp_path), "lr": 3e-3}), None, Dist())
    assert a != b and from_dict(__import__("json").loads((a / "recipe.json").read_text())).lr == 1e-3
