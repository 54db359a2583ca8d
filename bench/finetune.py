"""Fine-tuning cost on the CPU: seconds per epoch and peak memory with freeze none / N / backbone.

Each (model, freeze) runs in its own process (so peak RSS is its own), through the engine's train state and
`train_one_epoch`, on in-memory synthetic uint8 images at 224 px (random init: speed and memory do not
depend on the weights). An epoch is timed after one warm-up epoch. Rounds interleave the set-ups; the table
shows medians over rounds.

    python bench/finetune.py                                # vit_tiny_patch16_224 and convnext_atto, 3 rounds
    python bench/finetune.py --rounds 1 --images 16         # smoke test
    python bench/finetune.py --device cuda --precision bf16 --models eva02_base_patch14_448 --size 448 \
        --batch 32 --images 512 --freeze none backbone [--grad-checkpointing]   # GPU: img/s and peak CUDA memory
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc), in MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def one(model_name: str, freeze: str | int, images: int, batch: int, size: int, device: str = "cpu",
        precision: str = "fp32", grad_checkpointing: bool = False) -> dict:
    """Train one warm-up epoch and one timed epoch; peak RSS and its growth over the built model (CUDA: peak
    allocated GPU memory of the timed epoch)."""
    import torch
    from engine.models import model_from_recipe
    from engine.recipe import load_recipe
    from engine.train.freezing import count
    from engine.train.loop import train_one_epoch
    from engine.train.state import build_train_state
    from engine.data.pixels.transforms import Normalize
    from feeds import OnDevice
    torch.manual_seed(0)
    recipe = load_recipe(None, dict(model=model_name, freeze=freeze, batch_size=batch, image_size=size,
                                    epochs=2, warmup_epochs=0.0, num_workers=0, augment="none",
                                    precision=precision, grad_checkpointing=grad_checkpointing))
    model = model_from_recipe(recipe, [str(i) for i in range(10)], weights=False)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g),
                torch.randint(0, 10, (batch,), generator=g)) for _ in range(images // batch)]
    s = build_train_state(recipe, model, 10, len(batches), torch.device(device))
    batches = OnDevice(batches, torch.device(device), Normalize((0.5,) * 3, (0.5,) * 3).to(device))
    built = rss_mb()
    train_one_epoch(s, batches, 0, show_progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    train_one_epoch(s, batches, 1, show_progress=False)  # ends with a .tolist(): synchronised
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        peak, built = torch.cuda.max_memory_allocated() / 2**20, 0.0
    trainable, frozen = count(s.model)
    return {"epoch_s": seconds, "img_s": len(batches) * batch / seconds, "peak_mb": peak, "growth_mb": peak - built,
            "trainable_m": trainable / 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vit_tiny_patch16_224", "convnext_atto"])
    p.add_argument("--freeze", nargs="+", default=["none", "2", "backbone"], help="freeze values (N as a number)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:  # one measurement, in its own process
        model, freeze = args.child.split(":")
        print(json.dumps(one(model, int(freeze) if freeze.isdigit() else freeze, args.images, args.batch, args.size,
                             args.device, args.precision, args.grad_checkpointing)))
        return
    setups = [(m, f) for m in args.models for f in args.freeze]
    results: dict = {s: [] for s in setups}
    for r in range(args.rounds):
        for m, f in setups[r % len(setups):] + setups[:r % len(setups)]:  # rotate the order per round
            out = subprocess.run([sys.executable, __file__, "--child", f"{m}:{f}", "--images", str(args.images),
                                  "--batch", str(args.batch), "--size", str(args.size), "--device", args.device,
                                  "--precision", args.precision]
                                 + (["--grad-checkpointing"] if args.grad_checkpointing else []),
                                 capture_output=True, text=True, check=True)
            results[(m, f)].append(json.loads(out.stdout.strip().splitlines()[-1]))
    memory = "peak CUDA" if args.device.startswith("cuda") else "peak RSS"
    print(f"{args.images} images/epoch, batch {args.batch}, {args.size} px, {args.precision}, {args.device}"
          f"{', grad checkpointing' if args.grad_checkpointing else ''}, median of {args.rounds} rounds")
    print(f"{'model':<22} {'freeze':<9} {'trainable':>10} {'s/epoch':>8} {'img/s':>7} {memory:>9} {'growth':>8}")
    for (m, f), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{m:<22} {f:<9} {med['trainable_m']:>9.2f}M {med['epoch_s']:>8.2f} {med['img_s']:>7.1f} "
              f"{med['peak_mb']:>7.0f}MB "
              f"{med['growth_mb']:>6.0f}MB")


if __name__ == "__main__":
    main()
