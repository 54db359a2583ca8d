"""Issue 33 measurements on the demo digits (CPU; numbers depend on the load of the machine).

    OMP_NUM_THREADS=1 python bench/distill.py noise --noise 0.05 0.15    # random relabels: label_issues.csv's precision
                                                   # and recall, and the cleaned retrain's accuracy (OOF and test)
    OMP_NUM_THREADS=1 python bench/distill.py distill --per-class 30 [--teacher-test]  # one model alone, its 5-fold
                                                   # ensemble and the one model distilled from it: test accuracy

Everything goes under runs/bench/ (runs, noisy and cleaned CSVs). Accuracy is always against the TRUE labels:
out of fold on the rows the run trained with, and on the 269 held-out digits of data/demo/test_labels.csv.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import predict  # noqa: E402
from engine import run_folder  # noqa: E402
from engine.data.tables.demo_digits import ensure_demo_data  # noqa: E402
from engine.explore.__main__ import main as explore  # noqa: E402
from engine.recipe import load_recipe  # noqa: E402
from engine.train.orchestrator import train  # noqa: E402

OUT = Path("runs/bench/distill")
LABELS = "data/demo/test_labels.csv"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FAST = {"model": "test_resnet", "image_size": 32, "batch_size": 32, "lr": 3e-3, "warmup_epochs": 0.5,
        "num_workers": 0, "folds": 5, "flip": "none", "fold_groups": "none", "output_dir": str(OUT)}


def test_accuracy(targets: list[str], out: Path, *extra: str) -> float:
    """Accuracy of predict.py on the held-out demo test labels."""
    assert predict.main([*targets, "--val", LABELS, "--out", str(out), "--workers", "1", "--no-progress",
                         *extra]) == 0
    table = pd.read_csv(out)
    return float((table["pred"] == table["target"]).mean())


def oof_true_accuracy(run_dir: Path, truth: dict[str, int]) -> float:
    """Out-of-fold accuracy against the true labels of the rows the run trained with."""
    oof = pd.read_csv(run_dir / run_folder.OOF, dtype={"image_path": str})
    return float((oof["pred"].to_numpy() == oof["image_path"].map(truth).to_numpy()).mean())


def run(csv: Path, name: str, epochs: int, **changes) -> tuple[Path, float]:
    start = time.perf_counter()
    recipe = load_recipe("recipes/demo.py", {**FAST, "train_csv": str(csv), "epochs": epochs, "name": name, **changes})
    return train(recipe, show_progress=False), time.perf_counter() - start


def noisy_csv(table: pd.DataFrame, share: float, seed: int = 0) -> tuple[Path, set[str]]:
    """The table with `share` of its labels moved to another class at random; returns the CSV and flipped paths."""
    rng = np.random.default_rng(seed)
    flip = rng.choice(len(table), int(round(share * len(table))), replace=False)
    noisy = table.copy()
    noisy.loc[noisy.index[flip], "target"] = (noisy["target"].to_numpy()[flip] + rng.integers(1, 10, len(flip))) % 10
    noisy["class_name"] = [NAMES[t] for t in noisy["target"]]
    path = OUT / f"train_noise{share:g}.csv"
    noisy.to_csv(path, index=False)
    return path, set(noisy["image_path"].iloc[flip])


def noise(shares: list[float], epochs: int) -> None:
    ensure_demo_data("data/demo/train")
    OUT.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv("data/demo/train.csv", dtype={"image_path": str})
    truth = dict(zip(table["image_path"], table["target"]))
    rows = []
    for share in shares:
        csv, flipped = noisy_csv(table, share)
        noisy_run, s1 = run(csv, f"noise{share:g}", epochs)
        issues = pd.read_csv(noisy_run / "label_issues.csv", dtype={"image_path": str})
        found = set(issues["image_path"])
        hit = len(found & flipped)
        clean = OUT / f"train_noise{share:g}_clean.csv"
        clean.unlink(missing_ok=True)
        assert explore(["recipes/demo.py", f"train_csv={csv}", "--write-clean", str(clean),
                        "--drop", str(noisy_run / "label_issues.csv")]) == 0
        clean_run, s2 = run(clean, f"noise{share:g}-clean", epochs)
        for label, r, secs in (("noisy", noisy_run, s1), ("cleaned", clean_run, s2)):
            rows.append((f"{share:.0%}", label, len(pd.read_csv(r / run_folder.OOF)), oof_true_accuracy(r, truth),
                         test_accuracy([str(r), "--kfold"], OUT / f"test-{r.name}.csv"), secs))
        print(rows[-2:], flush=True)
        print(f"noise {share:.0%}: {len(flipped)} flipped, {len(found)} flagged, "
              f"precision {hit / max(len(found), 1):.3f}, recall {hit / max(len(flipped), 1):.3f}", flush=True)
    print("\n| noise | run | rows | OOF acc (true labels) | test acc (the folds' ensemble) | wall s |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.4f} | {r[4]:.4f} | {r[5]:.0f} |")


def distill(per_class: int, epochs: int, weight: float, temperature: float, teacher: str | None = None,
            teacher_test: bool = False) -> None:
    ensure_demo_data("data/demo/train")
    OUT.mkdir(parents=True, exist_ok=True)
    csv = OUT / f"train_{per_class}.csv"
    pd.read_csv("data/demo/train.csv").groupby("target").head(per_class).to_csv(csv, index=False)
    teacher, s1 = (Path(teacher), 0.0) if teacher else run(csv, f"teacher{per_class}", epochs)
    if teacher_test:  # the ensemble's test predictions, as a user writes them
        assert predict.main([str(teacher), "--kfold", "--save-probs", "--workers", "1", "--no-progress"]) == 0
    student, s2 = run(csv, f"student{per_class}-w{weight:g}-t{temperature:g}{'-test' if teacher_test else ''}",
                      epochs, teacher=str(teacher), teacher_weight=weight, teacher_temperature=temperature,
                      teacher_test=teacher_test)
    single = test_accuracy([str(run_folder.fold_dir(teacher, 0) / run_folder.BEST)], OUT / "test-single.csv")
    ensemble = test_accuracy([str(teacher), "--kfold"], OUT / "test-ensemble.csv")
    singles = [test_accuracy([str(run_folder.fold_dir(r, k) / run_folder.BEST)], OUT / f"test-{r.parent.name}-{k}.csv")
               for r in (teacher, student) for k in range(5)]
    alone, taught = np.mean(singles[:5]), np.mean(singles[5:])
    oof = {r: json.loads((r / run_folder.OOF_METRICS).read_text())["accuracy"] for r in (teacher, student)}
    print(f"\n{per_class * 10} rows, {epochs} epochs, teacher_weight {weight}, temperature {temperature}, "
          f"teacher_test {teacher_test}; "
          f"teacher {s1:.0f} s, student {s2:.0f} s (5 folds each)")
    print("| model | forwards per image | test acc | OOF acc |\n|---|---|---|---|")
    print(f"| one model alone (fold 0) | 1 | {single:.4f} | - |")
    print(f"| one model alone, mean of the 5 folds' models | 1 | {alone:.4f} | {oof[teacher]:.4f} |")
    print(f"| the 5-fold ensemble (teacher) | 5 | {ensemble:.4f} | - |")
    print(f"| distilled student, fold 0 | 1 | {singles[5]:.4f} | - |")
    print(f"| distilled student, mean of its 5 folds' models | 1 | {taught:.4f} | {oof[student]:.4f} |")
    gap = ensemble - alone
    print(f"gap closed (mean of folds): {(taught - alone) / gap:.0%}" if gap > 0 else "no gap to close")


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="what", required=True)
    n = sub.add_parser("noise")
    n.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.15])
    n.add_argument("--epochs", type=int, default=6)
    n.add_argument("--image-size", type=int, default=16)
    n.add_argument("--folds", type=int, default=3)  # the digits are 8 x 8: 16 px loses nothing, 4x fewer pixels
    d = sub.add_parser("distill")
    d.add_argument("--per-class", type=int, default=30)
    d.add_argument("--epochs", type=int, default=8)
    d.add_argument("--weight", type=float, default=0.5)
    d.add_argument("--temperature", type=float, default=1.0)
    d.add_argument("--teacher-test", action="store_true", help="also the test images, with the ensemble's predictions")
    d.add_argument("--teacher", help="an earlier teacher run of this bench (same --per-class and --epochs) to reuse")
    args = p.parse_args()
    if args.what == "noise":
        FAST.update(image_size=args.image_size, folds=args.folds)
        noise(args.noise, args.epochs)
    else:
        distill(args.per_class, args.epochs, args.weight, args.temperature, args.teacher, args.teacher_test)


if __name__ == "__main__":
    main()
