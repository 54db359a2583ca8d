"""Training images/s: the engine's loop vs a bare PyTorch loop vs PyTorch Lightning, one process, interleaved.

Every contender trains the same model (same initial weights) on the same in-memory uint8 batches with
the same optimizer (AdamW), batch size and thread count. Each round times every contender once (order
rotated per round); the table shows medians over rounds. Data loading is left out on purpose: the
data pipeline has its own benchmark (bench/data_pipeline.py).

    python bench/throughput.py                                # full run (minutes)
    python bench/throughput.py --rounds 2 --steps 3 --only engine bare   # smoke test
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.models import build_model, data_config  # noqa: E402
from engine.recipe import load_recipe  # noqa: E402
from engine.train.loop import train_one_epoch  # noqa: E402
from engine.train.state import build_train_state  # noqa: E402
from engine.data.pixels.transforms import Normalize  # noqa: E402
from feeds import OnDevice  # noqa: E402

CLASSES = 10


def synthetic_batches(steps: int, batch: int, size: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 image batches and integer targets, as a loader would yield them."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g),
             torch.randint(0, CLASSES, (batch,), generator=g)) for _ in range(steps)]


def fresh_model(name: str, channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)  # identical initial weights for every contender
    model = build_model(name, CLASSES)
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format).train()


class Engine:
    """engine.train.loop.train_one_epoch over the TrainState fit() trains (engine.train.state.build_train_state)."""

    def __init__(self, model_name: str, amp_dtype: torch.dtype | None, channels_last: bool, steps: int):
        model = fresh_model(model_name, channels_last)
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]
        recipe = load_recipe(None, {"model": model_name, "optimizer": "AdamW", "lr": 1e-3, "weight_decay": 0.05,
                                    "precision": precision, "channels_last": channels_last, "epochs": 1000,
                                    "warmup_epochs": 0.0, "scheduler": "cosine"})
        self.state = build_train_state(recipe, model, CLASSES, steps, torch.device("cpu"))
        cfg = data_config(model)
        self.normalize = Normalize(cfg["mean"], cfg["std"], channels_last)
        self.epoch = 0

    def run(self, batches: list) -> float:
        t0 = time.perf_counter()
        train_one_epoch(self.state, OnDevice(batches, torch.device("cpu"), self.normalize), self.epoch,
                        show_progress=False)
        self.epoch += 1
        return time.perf_counter() - t0


class Bare:
    """The loop anyone would write: normalise, forward, cross-entropy, backward, AdamW step."""

    def __init__(self, model_name: str, amp_dtype: torch.dtype | None, channels_last: bool, steps: int):
        self.model = fresh_model(model_name, channels_last)
        cfg = data_config(self.model)
        self.mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(cfg["std"]).view(1, 3, 1, 1) * 255
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.05)
        self.amp_dtype, self.channels_last = amp_dtype, channels_last

    def run(self, batches: list) -> float:
        t0 = time.perf_counter()
        for x, y in batches:
            x = (x.float() - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                logits = self.model(x)
            loss = F.cross_entropy(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        loss.item()
        return time.perf_counter() - t0


class Lightning:
    """A LightningModule with the bare loop's step; Trainer.fit for one epoch, timed from epoch start to end."""

    def __init__(self, model_name: str, amp_dtype: torch.dtype | None, channels_last: bool, steps: int):
        import lightning as L

        bare = Bare(model_name, None, channels_last, steps)

        class Module(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.model = bare.model

            def training_step(self, batch, _):
                x, y = batch
                x = (x.float() - bare.mean) / bare.std
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                return F.cross_entropy(self.model(x).float(), y)

            def configure_optimizers(self):
                return torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.05)

        class Clock(L.Callback):
            def on_train_epoch_start(self, *_):
                self.t0 = time.perf_counter()

            def on_train_epoch_end(self, *_):
                self.seconds = time.perf_counter() - self.t0

        self.L, self.module, self.clock = L, Module(), Clock()
        self.precision = "bf16-mixed" if amp_dtype == torch.bfloat16 else "32-true"

    def run(self, batches: list) -> float:
        import logging
        for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
            logging.getLogger(name).setLevel(logging.ERROR)  # no "Trainer.fit stopped" line per round
        trainer = self.L.Trainer(max_epochs=1, accelerator="cpu", devices=1, precision=self.precision, logger=False,
                                 enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                 callbacks=[self.clock], num_sanity_val_steps=0)
        trainer.fit(self.module, train_dataloaders=Batches(batches))
        return self.clock.seconds


class Batches:
    """A list of batches as a plain iterable with a length (what Lightning accepts as a loader)."""

    def __init__(self, batches: list):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


CONTENDERS = {  # name: (class, autocast dtype, channels_last)
    "bare fp32": (Bare, None, False),
    "engine fp32": (Engine, None, False),
    "lightning fp32": (Lightning, None, False),
    "bare fp32 channels_last": (Bare, None, True),
    "engine fp32 channels_last": (Engine, None, True),
    "bare bf16": (Bare, torch.bfloat16, False),
    "engine bf16": (Engine, torch.bfloat16, False),
    "lightning bf16": (Lightning, torch.bfloat16, False),
    "engine bf16 channels_last": (Engine, torch.bfloat16, True),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="batches per timed pass")
    p.add_argument("--rounds", type=int, default=7, help="timed passes per contender (median reported)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--only", nargs="*", metavar="NAME", help="contenders whose name contains any NAME given")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n for n in CONTENDERS if not args.only or any(w in n for w in args.only)]
    batches = synthetic_batches(args.steps, args.batch, args.size)
    runners = {n: CONTENDERS[n][0](args.model, CONTENDERS[n][1], CONTENDERS[n][2], args.steps) for n in names}
    for name, runner in runners.items():  # warm-up pass: allocator, kernels, Lightning's first-fit set-up
        runner.run(batches[:2])
    times = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(runners[name].run(batches))
        print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{n} {args.steps * args.batch / times[n][-1]:.0f}"
                                                           for n in names), file=sys.stderr, flush=True)
    rates = {n: [args.steps * args.batch / t for t in times[n]] for n in names}
    base = statistics.median(rates["bare fp32"]) if "bare fp32" in rates else None
    print(f"\n{args.model}, batch {args.batch}, {args.size} px, {args.steps} steps x {args.rounds} rounds, "
          f"{args.threads} threads, torch {torch.__version__}")
    print(f"{'contender':<28} {'img/s (median)':>15} {'min':>7} {'max':>7} {'vs bare fp32':>13}")
    for name in names:
        median = statistics.median(rates[name])
        ratio = f"{median / base:.3f}x" if base else "-"
        print(f"{name:<28} {median:>15.1f} {min(rates[name]):>7.1f} {max(rates[name]):>7.1f} {ratio:>13}")


if __name__ == "__main__":
    main()
