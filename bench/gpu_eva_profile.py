"""Where EVA02-L's GPU time goes: a profile of one full-fine-tune step (batch 16) and one frozen forward (batch 64)
at 448 px, bf16, through the engine's model (padded MLPs unless --unpadded): the top ops by device time with the
TFLOP/s each achieves (the profiler's FLOP count over its own time), and the top kernels by name.

    python bench/gpu_eva_profile.py             # on the GPU, about a minute
    python bench/gpu_eva_profile.py --tiny      # test_vit at 64 px: any machine, proves the script runs
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_eva import build  # noqa: E402
from engine.matmul_padding import unpad_mlp_matmuls  # noqa: E402
from engine.recipe import load_recipe  # noqa: E402


def op_table(prof, device: torch.device, rows: int = 15) -> str:
    """Top aten ops by self device time, with their FLOPs and achieved TFLOP/s."""
    timed = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: -getattr(e, timed))[:rows]
    total = sum(getattr(e, timed) for e in prof.key_averages()) or 1
    lines = ["| op | calls | ms | share of time | GFLOP | TFLOP/s |", "|---|---:|---:|---:|---:|---:|"]
    for e in events:
        us = getattr(e, timed)
        flops = e.flops or 0
        rate = f"{flops / us / 1e6:.1f}" if flops and us else ""
        lines.append(f"| {e.key[:70]} | {e.count} | {us / 1e3:.1f} | {us / total:.0%} | {flops / 1e9:.1f} | {rate} |")
    return "\n".join(lines)


def run(label: str, step, device: torch.device) -> None:
    """Two warm-up calls, then one profiled; prints the op table and the top kernels."""
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts, with_flops=True) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    print(f"\n### {label}\n\n{op_table(prof, device)}", flush=True)
    if device.type == "cuda":
        kernels = prof.key_averages().table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=90)
        print("\n```\n" + kernels + "\n```", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="eva02_large_patch14_448.mim_m38m_ft_in22k_in1k")
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--unpadded", action="store_true", help="timm's own MLP forward")
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.size = "test_vit", 64
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build(load_recipe(None, dict(model=args.model, image_size=args.size)), device)
    if args.unpadded:
        unpad_mlp_matmuls(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    g = torch.Generator(device=device).manual_seed(0)
    x16 = torch.randn(16 if not args.tiny else 4, 3, args.size, args.size, device=device, generator=g)
    x64 = torch.randn(64 if not args.tiny else 8, 3, args.size, args.size, device=device, generator=g)
    y = torch.randint(0, 500, (x16.shape[0],), device=device, generator=g)

    def train_step() -> None:
        with torch.autocast(device.type, torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x16), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def frozen_forward() -> None:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16):
            model.forward_features(x64)

    print(f"{args.model} at {args.size} px, bf16 autocast, {'unpadded' if args.unpadded else 'padded'} MLPs, {device}")
    run(f"full fine-tune step, batch {x16.shape[0]}", train_step, device)
    model.eval()
    run(f"frozen forward_features, batch {x64.shape[0]}", frozen_forward, device)


if __name__ == "__main__":
    main()
