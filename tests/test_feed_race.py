"""augment_on="auto" where it races: the device canvas against the workers, the faster feeds the fold and the
start line says what was measured; a resumed fold keeps the feed it began with (its batches stay the same)."""
from __future__ import annotations

import pandas as pd
import torch

from conftest import digits_recipe
from engine.data.batches import feed_race
from engine.data.batches.factory import build_fold_batches
from engine.data.tables.read import read_train_table
from engine.system.distributed import Dist

DATA_CFG = {"mean": (0.5,) * 3, "std": (0.25,) * 3, "crop_pct": 0.875, "background": (255, 255, 255)}


def fold_rows(digits_dir):
    table = read_train_table(str(digits_dir / "train"), str(digits_dir / "train.csv")).head(48)
    return table.iloc[:40], table.iloc[40:]


def test_the_faster_feed_wins_and_the_line_says_what_was_measured():
    speeds = {"device": 3.0, "workers": 5.0}
    winner, line = feed_race.race({"device": "canvas", "workers": "plain"}, torch.device("cpu"),
                                  measure=lambda source, device: speeds["device" if source == "canvas" else "workers"])
    assert winner == "workers" and "device 3.0 batches/s, workers 5.0 batches/s; workers is faster" in line


def test_auto_races_both_feeds_for_real_and_a_resume_keeps_the_first_choice(digits_dir, tmp_path):
    recipe = digits_recipe(digits_dir, tmp_path, augment_on="auto", cache="none", batch_size=8, image_size=16)
    train, val = fold_rows(digits_dir)
    raced = build_fold_batches(recipe, None, DATA_CFG, train, val, 0, Dist(), False, race_feeds=True)
    assert raced.path in ("device", "workers") and "batches/s" in raced.why and "is faster" in raced.why
    raced.stop()
    for saved in ("device", "workers"):
        again = build_fold_batches(recipe, None, DATA_CFG, train, val, 0, Dist(), False, saved_path=saved)
        assert again.path == saved and ("as this run began" in again.why or saved == "workers")  # CPU: workers
        assert (again.train.augment is not None) == (saved == "device")
        again.stop()
