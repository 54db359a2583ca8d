"""The demo data: scikit-learn's 1,797 real handwritten digits, written in the competition layout.

    data/demo/train/<digit>/<n>.png   data/demo/train.csv   (class_name,image_path,target)
    data/demo/test/<n>.png            data/demo/test.csv    (image_path)
    data/demo/test_labels.csv         the test answers, for `predict.py --val`

Digits are drawn as dark ink on white paper, like sketches, and upscaled from 8x8 to 32x32.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits

DEMO_ROOT = Path("data/demo")
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def build_demo_data(root: str | Path = DEMO_ROOT, test_fraction: float = 0.15, size: int = 32,
                    seed: int = 0) -> Path:
    """Write the demo data set under root (idempotent: an existing complete set is kept)."""
    root = Path(root)
    if (root / "train.csv").is_file() and (root / "test.csv").is_file():
        return root
    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    n_test = int(len(order) * test_fraction)
    train_rows, test_rows = [], []
    for rank, i in enumerate(order):
        ink = digits.images[i] / 16.0
        pixels = (255 * (1 - ink)).round().astype(np.uint8)  # dark ink on white paper
        image = Image.fromarray(pixels).resize((size, size), Image.BILINEAR)
        name, target = NAMES[digits.target[i]], int(digits.target[i])
        if rank < n_test:
            rel = f"{rank:05d}.png"
            (root / "test").mkdir(parents=True, exist_ok=True)
            image.save(root / "test" / rel)
            test_rows.append((rel, name, target))
        else:
            rel = f"{name}/{rank:05d}.png"
            (root / "train" / name).mkdir(parents=True, exist_ok=True)
            image.save(root / "train" / rel)
            train_rows.append((name, rel, target))
    pd.DataFrame(train_rows, columns=["class_name", "image_path", "target"]).to_csv(root / "train.csv", index=False)
    tests = pd.DataFrame(test_rows, columns=["image_path", "class_name", "target"])
    tests[["image_path", "class_name", "target"]].to_csv(root / "test_labels.csv", index=False)
    tests[["image_path"]].to_csv(root / "test.csv", index=False)  # written last: marks the set complete
    return root


def ensure_demo_data(data_dir: str, log=print) -> None:
    """Build the demo set if a recipe points into data/demo and it is not there yet."""
    data_dir = Path(data_dir)
    root = data_dir.parent if data_dir.name in ("train", "test") else data_dir
    if root.resolve() == DEMO_ROOT.resolve() and not (root / "test.csv").is_file():
        log(f"building the demo data set in {root}/ (1,797 handwritten digits from scikit-learn) ...")
        build_demo_data(root)
