"""Time `python -m engine.explore` on a synthetic sketch set of realistic size: JPEG line drawings of 200-800 px.

    python bench/explore_synthetic.py /tmp/sketch25k --images 25000 --classes 500

Builds the set once under ROOT (train/<class>/*.jpg, train.csv, test/*.jpg, test.csv; 12% test),
then explores it twice: cold (every image decoded) and warm (the facts cache is reused).
"""
from __future__ import annotations

import argparse
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _draw(job: tuple[str, int]) -> None:
    from PIL import Image, ImageDraw
    path, seed = job
    rng = np.random.default_rng(seed)
    w, h = (int(v) for v in rng.integers(200, 801, 2))
    image = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 30))):
        points = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(int(rng.integers(2, 6)))]
        draw.line(points, fill=int(rng.integers(0, 100)), width=int(rng.integers(1, 6)))
    if seed % 3 == 0:  # some sketches are stored as RGB files, as scans often are
        image = image.convert("RGB")
    image.save(path, quality=int(rng.integers(75, 96)))


def build(root: Path, images: int, classes: int) -> None:
    if (root / "test.csv").is_file():
        return
    n_test = int(images * 0.12)
    per_class = (images - n_test) // classes
    train_rows, jobs = [], []
    for t in range(classes):
        name = f"class_{t:03d}"
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            rel = f"{name}/{k:03d}.jpg"
            train_rows.append((name, rel, t))
            jobs.append((str(root / "train" / rel), len(jobs)))
    (root / "test").mkdir(parents=True, exist_ok=True)
    test_rows = [f"{k:05d}.jpg" for k in range(images - len(train_rows))]
    jobs += [(str(root / "test" / rel), len(jobs) + k) for k, rel in enumerate(test_rows)]
    with Pool() as pool:
        pool.map(_draw, jobs, chunksize=64)
    pd.DataFrame(train_rows, columns=["class_name", "image_path", "target"]).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_path": test_rows}).to_csv(root / "test.csv", index=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--images", type=int, default=25000)
    p.add_argument("--classes", type=int, default=500)
    args = p.parse_args()
    start = time.perf_counter()
    build(args.root, args.images, args.classes)
    print(f"data set ready in {time.perf_counter() - start:.0f} s: {args.root}")
    from engine.explore.analysis import explore
    from engine.recipe import load_recipe
    root = args.root
    recipe = load_recipe(None, dict(data_dir=str(root / "train"), train_csv=str(root / "train.csv"),
                                    test_dir=str(root / "test"), test_csv=str(root / "test.csv"),
                                    output_dir=str(root / "runs"), name="synthetic"))
    for label in ("cold (decode everything)", "warm (facts cache)"):
        start = time.perf_counter()
        result = explore(recipe, log=lambda m: print(m) if m.startswith(("scanned", "audit")) else None)
        print(f"explore {label}: {time.perf_counter() - start:.1f} s, {result.decoded} images decoded, "
              f"{len(result.findings.findings)} findings -> {result.report}")


if __name__ == "__main__":
    main()
