"""Run under torchrun by tests/test_ddp.py and tests/test_resume_world.py: evaluate a checkpoint on N ranks, fail on
one rank, or train while recording what each rank trains on."""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.system import distributed  # noqa: E402


def evaluate_checkpoint(ckpt_path: str, out: str) -> None:
    """Validation metrics of a checkpoint over the sharded (unpadded) validation rows of its run."""
    from engine.checkpoint import load_checkpoint
    from engine.data.batches.loader import ImageDataset, ShardSampler, make_loader
    from engine.train.loop import evaluate
    from engine.models import build_model
    from engine.recipe import from_dict
    from engine.train.training_data import load_data
    from engine.data.pixels.transforms import Normalize, build_eval_transform
    d = distributed.setup()
    ckpt = load_checkpoint(ckpt_path)
    recipe = from_dict(ckpt["recipe"])
    table, classes, _ = load_data(recipe, d, lambda *a: None)
    val = table[table["fold"] == 0]
    model = build_model(recipe.model, len(classes))
    model.load_state_dict(ckpt["model"])
    ds = ImageDataset(val["path"], val["target"], build_eval_transform(recipe.image_size, ckpt["data"]["crop_pct"]))
    loader = make_loader(ds, 7, ShardSampler(len(ds), d.rank, d.world), 0, train=False)  # 7: uneven shards
    from engine.data.batches.loader_source import LoaderBatches
    result = evaluate(model, LoaderBatches(loader, d.device, Normalize(ckpt["data"]["mean"], ckpt["data"]["std"])))
    if d.is_main:
        Path(out).write_text(json.dumps({"n": len(result["targets"]), "loss": result["loss"], "acc": result["acc"],
                                         "probs": result["probs"].tolist()}))
    distributed.cleanup()


def fail_on_rank_1(argv: list[str]) -> None:
    """Train normally, except that rank 1 raises inside its third training step."""
    from engine.train.mix import Mixer
    if os.environ.get("RANK") == "1":
        real = Mixer.__call__
        calls = {"n": 0}

        def boom(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("boom from rank 1")
            return real(self, *args, **kwargs)
        Mixer.__call__ = boom
    import train
    sys.exit(train.main(argv))


def record_training(argv: list[str]) -> None:
    """Train normally, appending to $SEEN_DIR/rank<R>-<pid>.txt each trained batch's "epoch:index" items and each
    step's "loss <loss x batch> <correct> <batch>"; with $STOP_AT, rank 0 sends SIGTERM at that step to its
    torchrun launcher (or, alone, to itself)."""
    import collections
    import signal
    from engine.data.batches.loader import ImageDataset
    from engine.train import state
    from engine.train.mix import Mixer
    rank, stop_at = os.environ.get("RANK", "0"), int(os.environ.get("STOP_AT", 0))
    out = Path(os.environ["SEEN_DIR"]) / f"rank{rank}-{os.getpid()}.txt"
    fetched = collections.deque()  # the loop fetches the next batch before it trains on it
    get, mix, make_loss = ImageDataset.__getitem__, Mixer.__call__, state.build_loss
    steps = {"n": 0}

    def getitem(self, item):
        if isinstance(item, tuple):  # training items are (epoch, index)
            fetched.append(item)
        return get(self, item)

    def call(self, x, y, *args, **kwargs):
        batch = [fetched.popleft() for _ in range(y.shape[0])]
        with open(out, "a") as f:
            f.write(" ".join(f"{e}:{i}" for e, i in batch) + "\n")
        steps["n"] += 1
        if steps["n"] == stop_at and rank == "0":
            os.kill(os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else os.getpid(), signal.SIGTERM)
        return mix(self, x, y, *args, **kwargs)

    def build_loss(*args):
        loss = make_loss(*args)

        def criterion(logits, soft):
            value = loss(logits, soft)
            correct = int((logits.detach().argmax(1) == soft.argmax(1)).sum())
            with open(out, "a") as f:
                f.write(f"loss {value.item() * len(soft)!r} {correct} {len(soft)}\n")
            return value
        return criterion
    ImageDataset.__getitem__, Mixer.__call__, state.build_loss = getitem, call, build_loss
    import train
    sys.exit(train.main(argv))


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "evaluate":
        evaluate_checkpoint(*rest)
    elif mode == "fail":
        fail_on_rank_1(rest)
    elif mode == "record":
        record_training(rest)
