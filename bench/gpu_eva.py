"""EVA02-L at 448 px on a GPU: training img/s, share of the chip's bf16 rate and peak memory for each set-up
the recipes use (freeze none / last block / backbone, gradient checkpointing on and off, timm's unpadded MLPs),
through the engine's train state and train_one_epoch; then the feature-store build (engine/data/stores/feature_store.py)
against a bare forward_features loop over the same images; the compile=True rows on their own (--compile-only).
The share counts the FLOPs each set-up runs: forward through everything, backward through what trains (no
recomputation counted under gradient checkpointing). Random init (speed does not depend on the weights).

    python bench/gpu_eva.py                       # on the GPU (about 1.5 minutes)
    python bench/gpu_eva.py --compile-only        # the compile rows: first epoch (compilation) and speed after it
    python bench/gpu_eva.py --tiny                # test_vit at 64 px: any machine, proves the script runs
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from feeds import OnDevice  # noqa: E402
from engine.data.stores import feature_store as fs  # noqa: E402
from engine.data.batches.loader import ImageDataset  # noqa: E402
from engine.data.pixels.transforms import Normalize, build_eval_transform  # noqa: E402
from engine.matmul_padding import unpad_mlp_matmuls  # noqa: E402
from engine.model_speed import speed_line  # noqa: E402
from engine.models import data_config, model_from_recipe  # noqa: E402
from engine.recipe import load_recipe  # noqa: E402
from engine.system.distributed import Dist  # noqa: E402
from engine.train.loop import train_one_epoch  # noqa: E402
from engine.train.state import build_train_state  # noqa: E402

PEAK_BF16 = 790e12  # measured on this workplace's H200 (8192^3 bf16 matmul, random data): KINDS.md


def step_flops_per_image(model: torch.nn.Module, size: int, device: torch.device) -> float:
    """The FLOPs one training step runs per image: forward through everything, backward through the parameters
    that train (a frozen part takes no backward); gradient checkpointing's recomputation is not counted."""
    checkpointing = getattr(model, "grad_checkpointing", False)
    if checkpointing:
        model.set_grad_checkpointing(False)
    x = torch.zeros(1, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter, torch.autocast(device.type, torch.bfloat16):
        model(x).float().sum().backward()
    model.zero_grad(set_to_none=True)
    if checkpointing:
        model.set_grad_checkpointing(True)
    return counter.get_total_flops()


def forward_flops_per_image(model: torch.nn.Module, size: int, device: torch.device) -> float:
    """The FLOPs of one image's forward (what the feature-store build and predict run)."""
    x = torch.zeros(1, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), torch.autocast(device.type, torch.bfloat16):
        model(x)
    return counter.get_total_flops()


def build(recipe, device: torch.device, padded: bool = True) -> torch.nn.Module:
    """The recipe's model with 500 classes, initialised on the device (EVA02-L's random init on the host takes
    seconds a row); padded=False: timm's own MLP forward."""
    torch.manual_seed(0)
    with torch.device(device):
        model = model_from_recipe(recipe, [str(i) for i in range(500)], weights=False)
    if not padded:
        unpad_mlp_matmuls(model)
    return model


def one_setup(name: str, size: int, batch: int, steps: int, device: torch.device, padded: bool = True,
              **keys) -> dict:
    """Warm-up epoch (compilation, when compile=True), then a timed epoch of `steps` batches already on the device."""
    recipe = load_recipe(None, dict(model=name, image_size=size, batch_size=batch, epochs=3, warmup_epochs=0.0,
                                    precision="bf16" if device.type == "cuda" else "fp32", **keys))
    model = build(recipe, device, padded)
    cfg = data_config(model)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g).to(device),
             torch.randint(0, 500, (batch,), generator=g).to(device)) for _ in range(steps)]
    batches = OnDevice(data, device, Normalize(cfg["mean"], cfg["std"], device.type == "cuda").to(device))
    s = build_train_state(recipe, model, 500, steps, device)
    flops = step_flops_per_image(s.model, size, device)  # after freezing: what trains is known
    t0 = time.perf_counter()
    train_one_epoch(s, batches, 0, show_progress=False)  # warm-up (and compilation)
    if device.type == "cuda":
        torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    if recipe.compile:  # a second call may recompile (a value that was constant became dynamic): not in the timing
        train_one_epoch(s, batches, 1, show_progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    train_one_epoch(s, batches, 2, show_progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = steps * batch / (time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    del s, model, data, batches
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"img/s": rate, "TFLOP/s": rate * flops / 1e12, "share": rate * flops / PEAK_BF16, "mem": mem,
            "warm-up s": warm}


def store_build(name: str, size: int, images: int, batch: int, device: torch.device, workers: int) -> dict:
    """img/s of the feature-store build and of a bare forward_features + pooling loop over the same images and
    loader settings (the bare loop before and after the build, averaged: neither gets the warmer page cache), and
    the share of the chip's bf16 rate each reaches (forward FLOPs)."""
    from data_pipeline import write_sketches
    work = Path(tempfile.mkdtemp(prefix="sketchbook-store-"))
    paths = write_sketches(work / "images", images, 300, 600)
    recipe = load_recipe(None, dict(model=name, image_size=size, precision="bf16" if device.type == "cuda" else "fp32"))
    model = build(recipe, device).eval()
    cfg = data_config(model)
    normalize = Normalize(cfg["mean"], cfg["std"], device.type == "cuda").to(device)
    dataset = ImageDataset(paths, None, build_eval_transform(size, cfg["crop_pct"]))
    amp = torch.bfloat16 if device.type == "cuda" else None
    builder = fs.Builder(model, normalize, lambda view: fs.view_images(view, None, dataset), amp, batch, workers)
    key = fs.store_key(name, "random", size, cfg["crop_pct"], paths, ("eval",), "bf16", "fp16")
    fs.feature_dim(builder, size)  # cuDNN / kernels warm for both

    def bare() -> float:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers, pin_memory=True)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for x, _ in loader:
                with torch.autocast(device.type, amp, enabled=amp is not None):
                    f = fs.pooled_features(model, normalize(x.to(device, non_blocking=True)))
                f.float().cpu()
        return images / (time.perf_counter() - t0)

    before = bare()
    t0 = time.perf_counter()
    fs.ensure(key, builder, Dist(device=device), show_progress=False, log=lambda m: None, root=work / "store")
    store = images / (time.perf_counter() - t0)
    flops = forward_flops_per_image(model, size, device)
    bare_rate = (before + bare()) / 2
    return {"store": store, "bare": bare_rate, "store share": store * flops / PEAK_BF16,
            "bare share": bare_rate * flops / PEAK_BF16}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="eva02_large_patch14_448.mim_m38m_ft_in22k_in1k")
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--compile-only", action="store_true", help="only the compile=True rows (minutes of compilation)")
    p.add_argument("--no-store", action="store_true", help="skip the feature-store build comparison")
    p.add_argument("--store-images", type=int, default=512)
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.size, args.steps, args.store_images = "test_vit", 64, 2, 32
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    setups = [("full, grad ckpt", 16, dict(freeze="none", grad_checkpointing=True)),
              ("full", 16, dict(freeze="none")),
              ("full, timm's unpadded MLPs", 16, dict(freeze="none", padded=False)),
              ("full", 32, dict(freeze="none")),
              ("last block (freeze=1)", 32, dict(freeze=1)),
              ("backbone frozen, through it", 64, dict(freeze="backbone"))]
    if args.compile_only:  # the frozen forward first: it compiles in a fraction of the full step's time
        setups = [("backbone frozen, compile", 64, dict(freeze="backbone", compile=True)),
                  ("full, compile", 16, dict(freeze="none", compile=True))]
    recipe = load_recipe(None, dict(model=args.model, image_size=args.size))
    print(speed_line(build(recipe, torch.device("meta")), args.compile_only, device,
                     torch.bfloat16 if device.type == "cuda" else None), flush=True)
    print("\n| set-up | batch | img/s | TFLOP/s run | of bf16 peak | peak mem | first epoch s |\n"
          "|---|---:|---:|---:|---:|---:|---:|", flush=True)
    for label, batch, keys in setups[:3]:
        measure(label, batch, keys, args, device)
    if not args.no_store and not args.compile_only:  # before the slower rows: a timeout then cuts only those
        r = store_build(args.model, args.size, args.store_images, 64 if not args.tiny else 8, device,
                        14 if device.type == "cuda" else 0)
        print(f"\nfeature-store build: {r['store']:.0f} img/s ({r['store share']:.1%} of bf16 peak); bare "
              f"forward_features loop: {r['bare']:.0f} img/s ({r['bare share']:.1%}); {r['store'] / r['bare']:.2f}x; "
              f"{args.store_images} images at {args.size} px, {args.model}\n", flush=True)
    for label, batch, keys in setups[3:]:
        measure(label, batch, keys, args, device)


def measure(label: str, batch: int, keys: dict, args, device: torch.device) -> None:
    """One table row, printed as soon as it is measured (a timeout keeps the rows before it)."""
    try:
        r = one_setup(args.model, args.size, batch if not args.tiny else 4, args.steps, device, **keys)
        print(f"| {label} | {batch} | {r['img/s']:.1f} | {r['TFLOP/s']:.0f} | {r['share']:.1%} | {r['mem']:.1f}G "
              f"| {r['warm-up s']:.0f} |", flush=True)
    except Exception as e:  # out of memory, or a compile failure: say it and go on
        print(f"| {label} | {batch} | {type(e).__name__}: {str(e).splitlines()[0][:80]} | | | | |", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
