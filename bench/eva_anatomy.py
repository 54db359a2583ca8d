"""What one EVA02-L block runs, op by op, under bf16 autocast: each matmul's shape and dtypes, the attention call
(fused SDPA or not, q/k/v dtypes after the rope), and each op family's share of the FLOPs. Runs on the CPU in seconds
(one block at 448 px, batch 1); on a GPU it shows what CUDA's autocast does instead.

    python bench/eva_anatomy.py                 # padded MLPs (what the engine runs)
    python bench/eva_anatomy.py --unpadded      # timm's own forward
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import timm
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.matmul_padding import pad_mlp_matmuls  # noqa: E402
from engine.model_speed import speed_line  # noqa: E402

WATCHED = ("mm", "addmm", "bmm", "linear", "scaled_dot_product", "layer_norm", "convolution", "cat", "mul")


class OpLog(TorchDispatchMode):
    """Counts each watched aten op by its input shapes and dtypes."""

    def __init__(self):
        super().__init__()
        self.calls = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if any(w in name for w in WATCHED):
            shapes = ", ".join(f"{tuple(a.shape)} {str(a.dtype)[6:]}" for a in args if torch.is_tensor(a))
            self.calls[f"{name}({shapes})"] += 1
        return func(*args, **(kwargs or {}))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--unpadded", action="store_true")
    p.add_argument("--size", type=int, default=448)
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = timm.create_model("eva02_large_patch14_448", pretrained=False, depth=1, img_size=args.size,
                              num_classes=500).to(device).train()
    if not args.unpadded:
        pad_mlp_matmuls(model)
    print(speed_line(model, False, device, torch.bfloat16))
    print(f"attention module: {type(model.blocks[0].attn).__name__}, fused_attn={model.blocks[0].attn.fused_attn}, "
          f"rope={type(model.rope).__name__}, mlp={type(model.blocks[0].mlp).__name__} norm="
          f"{type(model.blocks[0].mlp.norm).__name__}")
    x = torch.randn(1, 3, args.size, args.size, device=device)
    log = OpLog()
    with torch.autocast(device.type, torch.bfloat16), log:
        model(x).float().sum().backward()
    print("\n| op (input shapes, dtypes), forward + backward of one block, batch 1 | calls |\n|---|---:|")
    for call, n in sorted(log.calls.items()):
        print(f"| {call} | {n} |")
    with torch.autocast(device.type, torch.bfloat16), FlopCounterMode(display=False) as flops:
        model(x)
    total = flops.get_total_flops()
    print(f"\nforward FLOPs of one block + stem + head: {total / 1e9:.1f} GFLOP")
    for op, n in sorted(flops.get_flop_counts()["Global"].items(), key=lambda kv: -kv[1]):
        print(f"  {op}: {n / 1e9:.1f} GFLOP ({n / total:.0%})")


if __name__ == "__main__":
    main()
