"""Explore a recipe's data: scan every image, audit and repair, plot, and write one HTML report.

    <out>/report.html  findings.csv  image_facts.csv (also the scan cache)  class_counts.csv  *.png
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from engine.data.tables.demo_digits import ensure_demo_data
from engine.data.tables.read import read_test_table, read_train_table
from engine.errors import UserError
from engine.explore.facts import scan_images
from engine.explore.findings import Findings, find_problems, write_clean_csv
from engine.explore.flip_check import check_flips
from engine.explore.report_page import write_report
from engine.explore.plots import duplicates_plot, write_plots
from engine.recipe import Recipe
from engine.system.atomic import write_csv
from engine.system.outputs import OutputGuard

REPORT_FILES = ("report.html", "findings.csv", "image_facts.csv", "class_counts.csv", "class_counts.png", "sizes.png",
                "files.png", "colour_ink.png", "ink_by_class.png", "samples.png", "duplicates.png")  # what --out holds
SAMPLE_CLASSES = 8  # rows of the sample grid when no classes are named
DUPLICATE_PAIRS_SHOWN = 12
DUPLICATE_KINDS = ("leakage_train_test", "duplicate_across_classes", "duplicate_within_class", "duplicate_within_test")


@dataclass
class Exploration:
    """Where the report went and what was found."""
    out_dir: Path
    report: Path
    findings: Findings
    plots: list[tuple[str, Path]]
    decoded: int  # images decoded this time (the rest came from the cache)
    seconds: float


def default_out_dir(recipe: Recipe) -> Path:
    return Path(recipe.output_dir) / "explore" / recipe.name


def _read_tables(recipe: Recipe, log) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    ensure_demo_data(recipe.data_dir, log)
    train = read_train_table(recipe.data_dir, recipe.train_csv)
    if not recipe.test_csv or not recipe.test_dir:
        return train, None
    if not Path(recipe.test_csv).is_file():
        log(f"note: test_csv '{recipe.test_csv}' not found; exploring the training data only")
        return train, None
    return train, read_test_table(recipe.test_dir, recipe.test_csv)


def _pick_classes(counts: pd.Series, chosen: Sequence[str] | None, seed: int) -> list[str]:
    if chosen:
        unknown = [c for c in chosen if c not in counts.index]
        if unknown:
            raise UserError(f"--classes: no class named {', '.join(map(repr, unknown))}; "
                            f"classes look like {', '.join(map(str, counts.index[:5]))}")
        return list(chosen)
    present = counts[counts > 0].index.to_numpy()
    k = min(SAMPLE_CLASSES, len(present))
    return sorted(np.random.default_rng(seed).choice(present, size=k, replace=False).tolist())


def _duplicate_pairs(findings: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame | None) -> list:
    """(copy path, original path, caption) for the first duplicates of each kind, leakage first."""
    where = {("train", p): q for p, q in zip(train["image_path"], train["path"])}
    if test is not None:
        where.update({("test", p): q for p, q in zip(test["image_path"], test["path"])})
    dups = findings[findings["kind"].isin(DUPLICATE_KINDS)].copy()
    dups["order"] = dups["kind"].map(DUPLICATE_KINDS.index)
    pairs = []
    for r in dups.sort_values("order", kind="stable").head(DUPLICATE_PAIRS_SHOWN).itertuples():
        other_split = "test" if r.kind == "duplicate_within_test" else "train"
        labels = "" if r.kind in ("leakage_train_test", "duplicate_within_test") else f" ({r.class_name} | {r.other_class_name})"
        pairs.append((where[(r.split, r.image_path)], where[(other_split, r.other_image_path)],
                      f"{r.kind}{labels}\n{r.detail}"))
    return pairs


def _summary(train: pd.DataFrame, test: pd.DataFrame | None, f: Findings, images: pd.DataFrame,
             counts: pd.Series, decoded: int, scanned: int, seconds: float) -> list[tuple[str, object]]:
    readable = images.dropna(subset=["width"])
    colour = readable["is_colour"].astype(bool).mean() if len(readable) else 0.0
    kinds = f.findings["kind"].value_counts()
    return [
        ("training rows in the CSV", len(train)),
        ("usable training rows after repair and cleaning", len(f.clean)),
        ("labels repaired", f.repaired),
        ("rows dropped from the cleaned table", len(train) - len(f.clean)),
        ("classes", f"{len(counts)} ({counts.min()}..{counts.max()} images, "
                    f"imbalance ratio {counts.max() / max(1, counts.min()):.1f})"),
        ("test images", 0 if test is None else len(test)),
        ("median image size (w x h)", f"{readable['width'].median():.0f} x {readable['height'].median():.0f}"),
        ("formats", ", ".join(f"{k} {v}" for k, v in readable["format"].value_counts().items())),
        ("colour images", f"{100 * colour:.1f}%"),
        ("median ink density", f"{100 * readable['ink'].median():.2f}%"),
        ("findings", ", ".join(f"{k}: {v}" for k, v in kinds.items()) or "none"),
        ("images decoded / from cache", f"{decoded} / {scanned - decoded}"),
        ("time", f"{seconds:.1f} s"),
    ]


def explore(recipe: Recipe, out_dir: str | Path | None = None, classes: Sequence[str] | None = None,
            write_clean: str | Path | None = None, workers: int | None = None, progress: bool = True,
            log=print) -> Exploration:
    """Scan, audit, repair, plot and report the recipe's training (and test) data."""
    start = time.perf_counter()
    clean_guard = OutputGuard("explore --write-clean", [recipe.train_csv, recipe.test_csv], example="train_clean.csv")
    if write_clean:  # a new file, or one an earlier --write-clean wrote: never the user's CSV, recipe or image
        clean_guard.check(write_clean)
    out = OutputGuard("explore --out", [recipe.train_csv, recipe.test_csv], example="eda",
                      recognise=lambda p: p.name in REPORT_FILES).folder(out_dir or default_out_dir(recipe), REPORT_FILES)
    train, test = _read_tables(recipe, log)
    paths = list(train["path"]) + ([] if test is None else list(test["path"]))
    facts, decoded = scan_images(paths, out / "image_facts.csv", workers, progress)
    log(f"scanned {len(facts)} images ({decoded} decoded, {len(facts) - decoded} from the cache) "
        f"in {time.perf_counter() - start:.1f} s")
    found = find_problems(train, test, facts, recipe.num_classes)
    log(f"audit, repair and duplicate search done at {time.perf_counter() - start:.1f} s")
    usable = found.audit.table.assign(split="train")[["split", "path", "class_name"]]
    if test is not None:
        usable = pd.concat([usable, test.assign(split="test", class_name=None)[["split", "path", "class_name"]]])
    images = usable.join(facts.drop(columns="path"), on="path")
    readable = images[images["error"].fillna("x") == ""]
    if readable.empty or found.clean.empty:
        raise UserError(f"none of the {len(train)} training rows is usable (see the audit: "
                        f"{found.audit.summary()}); check data_dir and train_csv")
    counts = found.clean["class_name"].value_counts().reindex(found.audit.classes, fill_value=0)
    counts.index.name = "class_name"
    plots = write_plots(readable, counts, _pick_classes(counts, classes, recipe.seed), out, recipe.seed)
    if pairs := _duplicate_pairs(found.findings, train, test):
        plots.append(("Duplicates and leakage", duplicates_plot(pairs, out / "duplicates.png")))
    write_csv(found.findings, out / "findings.csv")
    write_csv(counts.rename("images").reset_index(), out / "class_counts.csv")
    notes = []
    if write_clean:
        notes.append(f"cleaned train.csv written to {write_clean_csv(found.clean, clean_guard.check(write_clean))}")
        clean_guard.wrote(write_clean)
    seconds = time.perf_counter() - start
    summary = _summary(train, test, found, images, counts, decoded, len(facts), seconds)
    if flips := check_flips(found.clean["path"].tolist(), found.clean["target"].astype(int).tolist(), recipe.seed):
        summary.insert(-2, ("mirror check (recipe key flip)", flips.describe().split(": ", 1)[1]
                            + f"; the recipe has flip={recipe.flip!r}"))
    report = write_report(out / "report.html", f"Data exploration: {recipe.name}", summary, plots,
                          found.findings, notes)
    for label, value in summary:
        log(f"  {label}: {value}")
    return Exploration(out, report, found, plots, decoded, seconds)
