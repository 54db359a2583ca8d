"""Issue 16 measurements on the demo digits (CPU; numbers depend on the load of the machine).

    OMP_NUM_THREADS=1 python bench/endgame.py ensemble --epochs 3 --per-class 60  # 3 models x 5 folds: members,
                                                     # equal / OOF-weighted ensembles: OOF and test accuracy
    OMP_NUM_THREADS=1 python bench/endgame.py leak --epochs 6 --per-class 30      # planted mirrored copies: OOF acc
                                                     # with fold_groups none vs near_duplicates

Everything goes under runs/bench/ (runs, planted data, CSVs). Test accuracy is on data/demo/test_labels.csv.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import predict  # noqa: E402
from engine import run_folder  # noqa: E402
from engine.data.tables.demo_digits import ensure_demo_data  # noqa: E402
from engine.recipe import load_recipe  # noqa: E402
from engine.train.orchestrator import train  # noqa: E402

OUT = Path("runs/bench")
LABELS = "data/demo/test_labels.csv"
MODELS = ("test_resnet", "test_efficientnet", "test_convnext")  # tiny: the 2 shared cores were loaded ~10x
FAST = {"batch_size": 32, "lr": 3e-3, "warmup_epochs": 0.5, "num_workers": 0}


def test_accuracy(targets: list[str], out: Path, *extra: str) -> float:
    """Accuracy of predict.py on the held-out demo test labels."""
    assert predict.main([*targets, "--kfold", "--val", LABELS, "--out", str(out), "--workers", "1",
                         "--no-progress", *extra]) == 0
    table = pd.read_csv(out)
    return float((table["pred"] == table["target"]).mean())


def oof_accuracy(run_dir: Path) -> float:
    return json.loads((run_dir / run_folder.OOF_METRICS).read_text())["accuracy"]


def demo_subset(per_class: int) -> str:
    """The first `per_class` demo training images of each class, as a CSV (the machine was too loaded for all)."""
    ensure_demo_data("data/demo/train")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"train_{per_class}.csv"
    pd.read_csv("data/demo/train.csv").groupby("target").head(per_class).to_csv(path, index=False)
    return str(path)


def ensemble(epochs: int, per_class: int) -> None:
    csv = demo_subset(per_class)
    rows, run_dirs = [], []
    for model in MODELS:
        recipe = load_recipe("recipes/demo.py", {"model": model, "folds": 5, "epochs": epochs, "output_dir": str(OUT),
                                                 "name": f"ens-{model}", "train_csv": csv, **FAST})
        run_dir = train(recipe, show_progress=False)
        run_dirs.append(str(run_dir))
        rows.append((model, oof_accuracy(run_dir), test_accuracy([str(run_dir)], OUT / f"test-{model}.csv")))
    equal = test_accuracy(run_dirs, OUT / "test-equal.csv")
    weighted = test_accuracy(run_dirs, OUT / "test-oof.csv", "--weights", "oof")
    report = json.loads((OUT / run_folder.ENSEMBLE).read_text())
    print(f"\n| member / ensemble | weight | OOF acc | test acc |\n|---|---|---|---|")
    for (model, oof, test), m in zip(rows, report["members"]):
        print(f"| {model} | {m['weight']:.2f} | {oof:.4f} | {test:.4f} |")
    print(f"| equal-weight (soft vote) | - | {report['soft_vote_oof_acc']:.4f} | {equal:.4f} |")
    print(f"| hard vote | - | {report['hard_vote_oof_acc']:.4f} | - |")
    print(f"| OOF-weighted | - | {report['oof_acc']:.4f} | {weighted:.4f} |")


def planted_set(per_class: int = 50, share: float = 0.5) -> Path:
    """`per_class` demo images per class plus a mirrored copy of `share` of them (same class)."""
    ensure_demo_data("data/demo/train")
    root = OUT / f"planted{per_class}"
    table = pd.read_csv("data/demo/train.csv").groupby("target").head(per_class)
    table["image_path"] = [str((Path("data/demo/train") / p).resolve()) for p in table["image_path"]]
    copies = table.sample(frac=share, random_state=0)
    (root / "copies").mkdir(parents=True, exist_ok=True)
    rows = []
    for r in copies.itertuples():
        name = f"copies/{Path(r.image_path).stem}_m.png"
        with Image.open(r.image_path) as im:
            im.transpose(Image.FLIP_LEFT_RIGHT).save(root / name)  # lossless: at 32 px a resample moves the pHash ~50 bits
        rows.append((r.class_name, str((root / name).resolve()), r.target))  # absolute: outside data_dir
    planted = pd.concat([table, pd.DataFrame(rows, columns=table.columns)], ignore_index=True)
    planted.to_csv(root / "train.csv", index=False)
    return root / "train.csv"


def leak(epochs: int, per_class: int, settings: str = "none,near_duplicates", folds: int = 5) -> None:
    csv = planted_set(per_class)
    print(f"planted set: {len(pd.read_csv(csv))} rows ({csv})")
    for groups in settings.split(","):
        recipe = load_recipe("recipes/demo.py", {"model": "test_resnet", "folds": folds, "epochs": epochs, "train_csv": str(csv),
                                                 "fold_groups": groups, "output_dir": str(OUT), "name": f"leak{per_class}x{epochs}-{groups}",
                                                 **FAST})
        run_dir = train(recipe, show_progress=False)
        test = test_accuracy([str(run_dir)], OUT / f"test-leak{per_class}-{groups}.csv")
        oof = pd.read_csv(run_dir / run_folder.OOF)
        originals = oof[~oof["image_path"].str.contains("copies/")]
        print(f"| fold_groups={groups} | OOF acc {oof_accuracy(run_dir):.4f} | OOF acc on the originals "
              f"{(originals['pred'] == originals['target']).mean():.4f} | test acc {test:.4f} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=("ensemble", "leak"))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--per-class", type=int, default=1000, help="training images per class (all: 1000)")
    p.add_argument("--fold-groups", default="none,near_duplicates", help="leak: the settings to compare")
    p.add_argument("--folds", type=int, default=5, help="leak: folds")
    a = p.parse_args()
    ensemble(a.epochs, a.per_class) if a.what == "ensemble" else leak(a.epochs, a.per_class, a.fold_groups, a.folds)
