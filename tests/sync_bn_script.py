"""Run under `torchrun --nproc_per_node=2` by tests/test_sync_bn.py: one training step of test_resnet on each
rank's half of a batch, with batch-norm synced (engine.train.sync_bn) or not, against one process on the
whole batch. Rank 0 writes the largest differences as JSON."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from engine.system import distributed  # noqa: E402
from engine.train.sync_bn import convert_sync_batchnorm  # noqa: E402


def step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    F.cross_entropy(model(x), y).backward()
    return model


def worst_difference(synced: bool) -> dict:
    d = distributed.setup()
    torch.manual_seed(0)
    reference = timm.create_model("test_resnet", num_classes=10)
    model = timm.create_model("test_resnet", num_classes=10)
    model.load_state_dict(reference.state_dict())
    if synced:
        model = convert_sync_batchnorm(model, d.device)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 3, 32, 32, generator=g) * 2 + 1, torch.randint(0, 10, (32,), generator=g)
    half = slice(16 * d.rank, 16 * (d.rank + 1))
    step(ddp, x[half], y[half])
    step(reference, x, y)
    grads = max(((p.grad - q.grad).abs().max() / q.grad.abs().max()).item()
                for p, q in zip(model.parameters(), reference.parameters()))
    ours, theirs = model.state_dict(), reference.state_dict()
    stats = max((ours[k] - theirs[k]).abs().max().item() for k in ours if "running" in k)
    return {"grad": grads, "running": stats, "types": sorted({type(m).__name__ for m in model.modules()})}


if __name__ == "__main__":
    result = {"synced": worst_difference(True), "plain": worst_difference(False)}
    if distributed.setup().is_main:
        Path(sys.argv[1]).write_text(json.dumps(result))
    distributed.cleanup()
