"""Head training on a frozen backbone: from a feature store (feature_views) vs through the backbone every epoch.

Synthetic sketches (one shape family per class, black ink on white, 256 px), a randomly initialised backbone,
freeze="backbone", the same recipe both ways. Times (wall clock, one process):
  - the whole run with the store (store build included) vs without,
  - one head epoch from the store vs one through the backbone (medians over the epochs after the first),
  - both runs' best validation accuracy,
  - a sweep of N head trials (lr, label_smoothing, weight_decay, mixup_ratio) from one store vs one trial without.
"Without" is fit()'s own epoch (train_one_epoch + evaluate over the pixel loaders) with the backbone kept in
eval mode and only the head requiring gradients: what freeze="backbone" does (issue 13) without a store.

    python bench/feature_store.py                                   # resnet18, 224 px, 500 images, 10 epochs
    python bench/feature_store.py --images 60 --size 64 --epochs 2 --trials 2   # smoke test
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.data.batches.factory import build_fold_batches  # noqa: E402
from engine.models import build_model, data_config  # noqa: E402
from engine.recipe import load_recipe  # noqa: E402
from engine.system.distributed import Dist  # noqa: E402
from engine.train.training_data import load_data  # noqa: E402
from engine.train.loop import evaluate, train_one_epoch  # noqa: E402
from engine.train.state import build_train_state  # noqa: E402

SHAPES = ["circle", "square", "triangle", "cross", "star", "zigzag", "spiral", "grid", "house", "wave"]


def draw_sketch(shape: str, rng: random.Random, side: int = 256) -> Image.Image:
    """One pencil-like drawing of `shape` at a random place, size and stroke width."""
    img = Image.new("RGB", (side, side), "white")
    d = ImageDraw.Draw(img)
    r = rng.uniform(0.2, 0.4) * side
    cx, cy = rng.uniform(r, side - r), rng.uniform(r, side - r)
    w = rng.randint(2, 6)
    jitter = lambda: rng.uniform(-0.08, 0.08) * r  # noqa: E731
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline="black", width=w)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], outline="black", width=w)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], outline="black", width=w)
    elif shape == "cross":
        d.line([cx - r, cy, cx + r, cy], "black", w)
        d.line([cx, cy - r, cx, cy + r], "black", w)
    elif shape == "star":
        for k in range(5):
            a, b = k * 4 * 3.14159 / 5, (k + 1) * 4 * 3.14159 / 5
            d.line([cx + r * torch.sin(torch.tensor(a)).item(), cy - r * torch.cos(torch.tensor(a)).item(),
                    cx + r * torch.sin(torch.tensor(b)).item(), cy - r * torch.cos(torch.tensor(b)).item()], "black", w)
    elif shape == "zigzag":
        pts = [(cx - r + 2 * r * i / 6, cy + (r / 2 if i % 2 else -r / 2) + jitter()) for i in range(7)]
        d.line(pts, "black", w)
    elif shape == "spiral":
        pts = [(cx + r * t / 60 * torch.cos(torch.tensor(t / 6)).item(), cy + r * t / 60 * torch.sin(torch.tensor(t / 6)).item())
               for t in range(60)]
        d.line(pts, "black", w)
    elif shape == "grid":
        for i in range(4):
            d.line([cx - r + 2 * r * i / 3, cy - r, cx - r + 2 * r * i / 3, cy + r], "black", w)
            d.line([cx - r, cy - r + 2 * r * i / 3, cx + r, cy - r + 2 * r * i / 3], "black", w)
    elif shape == "house":
        d.rectangle([cx - r, cy, cx + r, cy + r], outline="black", width=w)
        d.line([(cx - r, cy), (cx, cy - r), (cx + r, cy)], "black", w)
    else:  # wave
        pts = [(cx - r + 2 * r * t / 40, cy + r / 2 * torch.sin(torch.tensor(t / 4)).item() + jitter()) for t in range(41)]
        d.line(pts, "black", w)
    return img


def make_sketches(folder: Path, n: int, seed: int = 0) -> Path:
    """n images in class folders folder/<shape>/<i>.png (reused if already there)."""
    if (folder / "done").exists():
        return folder
    rng = random.Random(seed)
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        (folder / shape).mkdir(parents=True, exist_ok=True)
        draw_sketch(shape, rng).save(folder / shape / f"{i:05d}.png")
    (folder / "done").touch()
    return folder


def run_epochs(recipe, store: bool) -> dict:
    """fit()'s epochs (train_one_epoch + evaluate) over pixels with a frozen backbone, or over stored features
    (engine/data/batches/store_source.py, store build included when new); checkpoints and reports are left out of both."""
    t0 = time.perf_counter()
    d = Dist()
    table, classes, _ = load_data(recipe, d, log=lambda *a: None)
    train_rows, val_rows = table[table["fold"] != 0], table[table["fold"] == 0]
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model, len(classes))
    cfg = {**data_config(model), "background": (255, 255, 255)}
    # feature_views: stored features (store build included when new); else freeze="backbone" through the backbone
    batches = build_fold_batches(recipe, model, cfg, train_rows, val_rows, 0, d, False, log=lambda *a: None)
    s = build_train_state(recipe, model, len(classes), len(batches.train), d.device, takes=batches.train.takes)
    epochs, accs = [], []
    for epoch in range(recipe.epochs):
        e0 = time.perf_counter()
        batches.train.set_epoch(epoch)
        train_one_epoch(s, batches.train, epoch, show_progress=False)
        accs.append(evaluate(s.model, batches.val)["acc"])
        epochs.append(time.perf_counter() - e0)
    batches.stop()
    return {"wall": time.perf_counter() - t0, "epochs": epochs, "acc": max(accs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "bench_feature_store"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    os.environ["SKETCHBOOK_CACHE_DIR"] = str(work / f"cache-{time.time_ns()}")  # a cold store for this run
    data = make_sketches(work / f"sketches-{args.images}", args.images)
    base = dict(model=args.model, data_dir=str(data), train_csv=None, image_size=args.size, epochs=args.epochs,
                batch_size=32, lr=1e-3, warmup_epochs=0.0, num_workers=args.workers, freeze="backbone",
                test_csv=None, test_dir=None)
    load_data(load_recipe(None, base), Dist(), log=lambda *a: None)  # imports and file checks: not in either time
    pixels = run_epochs(load_recipe(None, {**base, "feature_views": 0}), store=False)
    print(f"through the backbone: {pixels}", file=sys.stderr)
    stored = run_epochs(load_recipe(None, {**base, "feature_views": args.views}), store=True)
    print(f"from the store: {stored}", file=sys.stderr)
    rng = random.Random(0)
    t0 = time.perf_counter()
    sweep_accs = []
    for trial in range(args.trials):  # every trial reuses the store the run above built
        values = {"lr": 10 ** rng.uniform(-4, -2), "label_smoothing": rng.choice([0.0, 0.1]),
                  "weight_decay": rng.choice([0.0, 0.05]), "mixup_ratio": rng.choice([0.0, 0.5])}
        sweep_accs.append(run_epochs(load_recipe(None, {**base, "feature_views": args.views, **values}), True)["acc"])
    sweep = time.perf_counter() - t0
    per_pixel, per_store = statistics.median(pixels["epochs"][1:] or pixels["epochs"]), \
        statistics.median(stored["epochs"][1:] or stored["epochs"])
    print(f"\n{args.model} random init, {args.size} px, {args.images} synthetic sketches (80/20), {args.epochs} epochs, "
          f"feature_views={args.views}, batch 32, {args.workers} worker(s), {args.threads} threads")
    print("| | through the backbone | from the store | ratio |\n|---|---:|---:|---:|")
    print(f"| whole run, s (store build included) | {pixels['wall']:.1f} | {stored['wall']:.1f} | "
          f"{pixels['wall'] / stored['wall']:.1f}x |")
    print(f"| one head epoch, s (median of epochs 2..) | {per_pixel:.2f} | {per_store:.3f} | {per_pixel / per_store:.0f}x |")
    print(f"| best val acc | {pixels['acc']:.3f} | {stored['acc']:.3f} | |")
    print(f"| {args.trials} head trials from one store vs 1 trial without, s | {pixels['wall']:.1f} (1 trial) | "
          f"{sweep:.1f} ({args.trials} trials) | {args.trials * pixels['wall'] / sweep:.1f}x per trial |")
    print(f"sweep trials' best val acc: {', '.join(f'{a:.3f}' for a in sweep_accs)}")


if __name__ == "__main__":
    main()
