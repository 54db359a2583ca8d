"""Every shipped recipe as a user runs it on a GPU: one short epoch at the recipe's own model, size and batch
(pretrained=False: no downloads), then predict.py --tta and cam.py, on synthetic sketches in the competition
layout. One row per recipe: the batch path "auto" picked, img/s, peak memory, and whether each command passed.

    python bench/gpu_recipes.py                 # every recipe in recipes/
    python bench/gpu_recipes.py --tiny          # test_* models at 32 px: any machine, proves the script runs
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cam  # noqa: E402
import predict  # noqa: E402
import train  # noqa: E402
from data_pipeline import write_sketches  # noqa: E402
from engine import run_folder  # noqa: E402

TINY = {"convnext": "test_convnext", "efficientnet": "test_efficientnet", "eva02_frozen_mlp": "test_vit",
        "eva02_full": "test_vit", "eva02_last_block": "test_vit"}


def competition_data(root: Path, classes: int, per_class: int, tests: int) -> None:
    """data/train/<class>/*.jpg + train.csv and data/test/*.jpg + test.csv, synthetic sketches of 200-600 px."""
    rows = []
    for c in range(classes):
        for p in write_sketches(root / "train" / f"class{c:02d}", per_class, 200, 600, seed=c):
            rows.append((f"class{c:02d}", str(Path(p).relative_to(root / "train")), c))
    pd.DataFrame(rows, columns=["class_name", "image_path", "target"]).to_csv(root / "train.csv", index=False)
    test = write_sketches(root / "test", tests, 200, 600, seed=999)
    pd.DataFrame({"image_path": [Path(p).name for p in test]}).to_csv(root / "test.csv", index=False)


COLUMNS = ["recipe", "train", "path", "img/s", "train s", "peak mem", "predict --tta", "cam", "error"]
STORE_ROW = ("eva02_frozen_mlp-store", "eva02_frozen_mlp", ["feature_views=2", "augment_schedule={}"])  # 1st place


def run_recipe(name: str, data: Path, out: Path, tiny: bool, recipe: str | None = None, extra: list = ()) -> dict:
    row = {"recipe": name}
    keys = [f"data_dir='{data / 'train'}'", f"train_csv='{data / 'train.csv'}'", f"test_dir='{data / 'test'}'",
            f"test_csv='{data / 'test.csv'}'", "pretrained=False", "num_classes=None", "epochs=1", "folds=1",
            "val_fraction=0.25", "wandb='disabled'", f"output_dir='{out}'", "early_stopping=0", "num_workers=4"]
    if tiny:
        keys += [f"model='{TINY.get(name, 'test_resnet')}'", "image_size=32", "batch_size=8", "drop_path=0.0"]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        code = train.main([str(ROOT / "recipes" / f"{recipe or name}.py"), *keys, *extra, "--name", name])
        row["train"] = "ok" if code == 0 else f"exit {code}"
        run_dir = next((out / (recipe or name)).glob(f"*-{name}"))
        log = (run_dir / run_folder.TRAIN_LOG).read_text()
        row["path"] = next((line.split("(")[0][len("batches: "):] for line in log.splitlines()
                            if line.startswith("batches: ")), "?")
        metrics = pd.read_csv(run_folder.fold_dir(run_dir, 0) / run_folder.METRICS)
        row["img/s"] = f"{metrics['img_per_s'].iloc[-1]:.0f}"
        row["train s"] = f"{time.perf_counter() - t0:.0f}"
        row["peak mem"] = f"{metrics['gpu_mem_gb'].iloc[-1]:.1f}G"
        code = predict.main([str(run_dir), "--tta", "--out", str(out / f"{name}.csv"), "--no-progress"])
        row["predict --tta"] = "ok" if code == 0 else f"exit {code}"
        image = next((ROOT / data / "test").glob("*.jpg"))
        code = cam.main([str(image), "--ckpt", str(run_dir), "--out", str(out / f"cam-{name}"), "--no-progress"])
        row["cam"] = "ok" if code == 0 and list((out / f"cam-{name}").glob("*.png")) else f"exit {code}"
    except Exception as e:  # one recipe's failure must not hide the others' rows
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        traceback.print_exc()
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--recipes", nargs="*", help="names in recipes/ (default: all)")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sketchbook-recipes-"))
    competition_data(work / "data", 12, 16, 16)
    names = args.recipes or sorted(f.stem for f in (ROOT / "recipes").glob("*.py"))
    print(f"every recipe, one epoch on 144 synthetic images, {torch.__version__}, "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}")
    print("| " + " | ".join(COLUMNS) + " |\n" + "|---" * len(COLUMNS) + "|", flush=True)
    plans = [(name, None, ()) for name in names] + ([STORE_ROW] if not args.recipes else [])
    for name, recipe, extra in plans:  # each row printed when done: a timeout keeps the rows before it
        with contextlib.redirect_stdout(sys.stderr):  # the commands' own output to the log, the table alone here
            row = run_recipe(name, work / "data", work / "runs", args.tiny, recipe, extra)
        print(row, file=sys.stderr, flush=True)
        print("| " + " | ".join(str(row.get(c, "")) for c in COLUMNS) + " |", flush=True)


if __name__ == "__main__":
    main()
