"""EVA02-L at 448 px on a GPU: training img/s, share of the chip's bf16 rate and peak memory for each set-up
the recipes use (freeze none / last block / backbone, gradient checkpointing on and off, compile), through the
engine's train state and train_one_epoch; then the feature-store build (engine/data/stores/feature_store.py) against
a bare forward_features loop over the same images. Random init (speed does not depend on the weights).

    python bench/gpu_eva.py                       # on the GPU (about 3 minutes; compile adds its own)
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
from engine.models import data_config, model_from_recipe  # noqa: E402
from engine.recipe import load_recipe  # noqa: E402
from engine.system.distributed import Dist  # noqa: E402
from engine.train.loop import train_one_epoch  # noqa: E402
from engine.train.state import build_train_state  # noqa: E402

PEAK_BF16 = 790e12  # measured on this workplace's H200 (8192^3 bf16 matmul, random data): KINDS.md


def train_flops_per_image(model: torch.nn.Module, size: int, device: torch.device) -> float:
    """3x the forward FLOPs of one image (forward + backward through everything: the full fine-tune's cost)."""
    x = torch.zeros(1, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), torch.autocast(device.type, torch.bfloat16):
        model(x)
    return 3.0 * counter.get_total_flops()


def one_setup(name: str, size: int, batch: int, steps: int, device: torch.device, **keys) -> dict:
    """Warm-up epoch, then a timed epoch of `steps` batches already on the device."""
    recipe = load_recipe(None, dict(model=name, image_size=size, batch_size=batch, epochs=2, warmup_epochs=0.0,
                                    precision="bf16" if device.type == "cuda" else "fp32", **keys))
    torch.manual_seed(0)
    model = model_from_recipe(recipe, [str(i) for i in range(500)], weights=False)
    flops = train_flops_per_image(model.to(device), size, device) if device.type == "cuda" else 0.0
    cfg = data_config(model)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g).to(device),
             torch.randint(0, 500, (batch,), generator=g).to(device)) for _ in range(steps)]
    batches = OnDevice(data, device, Normalize(cfg["mean"], cfg["std"], device.type == "cuda").to(device))
    s = build_train_state(recipe, model, 500, steps, device)
    t0 = time.perf_counter()
    train_one_epoch(s, batches, 0, show_progress=False)  # warm-up (and compilation)
    warm = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    train_one_epoch(s, batches, 1, show_progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = steps * batch / (time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    del s, model, data, batches
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"img/s": rate, "share": rate * flops / PEAK_BF16, "mem": mem, "warm-up s": warm}


def store_build(name: str, size: int, images: int, batch: int, device: torch.device, workers: int) -> tuple[float, float]:
    """img/s of the feature-store build and of a bare forward_features + pooling loop over the same images."""
    from data_pipeline import write_sketches
    work = Path(tempfile.mkdtemp(prefix="sketchbook-store-"))
    paths = write_sketches(work / "images", images, 300, 600)
    recipe = load_recipe(None, dict(model=name, image_size=size, precision="bf16" if device.type == "cuda" else "fp32"))
    model = model_from_recipe(recipe, [str(i) for i in range(500)], weights=False).to(device).eval()
    cfg = data_config(model)
    normalize = Normalize(cfg["mean"], cfg["std"], device.type == "cuda").to(device)
    dataset = ImageDataset(paths, None, build_eval_transform(size, cfg["crop_pct"]))
    amp = torch.bfloat16 if device.type == "cuda" else None
    builder = fs.Builder(model, normalize, lambda view: fs.view_images(view, None, dataset), amp, batch, workers)
    key = fs.store_key(name, "random", size, cfg["crop_pct"], paths, ("eval",), "bf16", "fp16")
    fs.feature_dim(builder, size)  # cuDNN / kernels warm for both
    t0 = time.perf_counter()
    fs.ensure(key, builder, Dist(device=device), show_progress=False, log=lambda m: None, root=work / "store")
    store_rate = images / (time.perf_counter() - t0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers, pin_memory=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x, _ in loader:
            with torch.autocast(device.type, amp, enabled=amp is not None):
                f = fs.pooled_features(model, normalize(x.to(device, non_blocking=True)))
            f.float().cpu()
    return store_rate, images / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="eva02_large_patch14_448.mim_m38m_ft_in22k_in1k")
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--compile", action="store_true", help="also the compile=True rows, last (minutes of compilation)")
    p.add_argument("--no-store", action="store_true", help="skip the feature-store build comparison")
    p.add_argument("--store-images", type=int, default=512)
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.size, args.steps, args.store_images = "test_vit", 64, 2, 32
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    setups = [("full, grad ckpt", 16, dict(freeze="none", grad_checkpointing=True)),
              ("full", 16, dict(freeze="none")),
              ("full", 32, dict(freeze="none")),
              ("last block (freeze=1)", 32, dict(freeze=1)),
              ("last block (freeze=1)", 64, dict(freeze=1)),
              ("backbone frozen, through it", 64, dict(freeze="backbone"))]
    print(f"| set-up | batch | img/s | of bf16 peak (3x fwd FLOPs) | peak mem | first epoch s |\n|---|---:|---:|---:|---:|---:|",
          flush=True)
    compiled = [("full, compile", 16, dict(freeze="none", compile=True)),
                ("last block, compile", 32, dict(freeze=1, compile=True))] if args.compile else []
    for label, batch, keys in setups[:4]:
        measure(label, batch, keys, args, device)
    if not args.no_store:  # before the slow rows: a timeout then cuts only those
        store, bare = store_build(args.model, args.size, args.store_images, 64 if not args.tiny else 8, device,
                                  14 if device.type == "cuda" else 0)
        print(f"\nfeature-store build: {store:.0f} img/s; bare forward_features loop: {bare:.0f} img/s "
              f"({store / bare:.2f}x), {args.store_images} images at {args.size} px, {args.model}\n", flush=True)
    for label, batch, keys in setups[4:] + compiled:
        measure(label, batch, keys, args, device)


def measure(label: str, batch: int, keys: dict, args, device: torch.device) -> None:
    """One table row, printed as soon as it is measured (a timeout keeps the rows before it)."""
    try:
        r = one_setup(args.model, args.size, batch if not args.tiny else 4, args.steps, device, **keys)
        print(f"| {label} | {batch} | {r['img/s']:.1f} | {r['share']:.1%} | {r['mem']:.1f}G | {r['warm-up s']:.0f} |",
              flush=True)
    except Exception as e:  # out of memory, or a compile failure: say it and go on
        print(f"| {label} | {batch} | {type(e).__name__}: {str(e).splitlines()[0][:80]} | | | |", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
