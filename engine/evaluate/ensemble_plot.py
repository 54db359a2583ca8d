"""The ensemble's per-class plot: each member's recall beside the ensemble's, on the classes where the
members disagree most (the top ones only, so it stays readable at 500 classes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

from engine.system.atomic import write_atomic

TOP_CLASSES = 30


def plot_per_class(per_class: pd.DataFrame, path: Path, top: int = TOP_CLASSES) -> None:
    """A recall heatmap: rows are the `top` classes of the table (already ordered), columns members + ensemble."""
    shown = per_class.head(top)
    columns = [c for c in shown.columns if c not in ("class", "rows", "member_spread")]
    values = shown[columns].to_numpy(dtype=float)
    fig = Figure(figsize=(2.2 + 1.1 * len(columns), 1.4 + 0.32 * len(shown)))
    ax = fig.add_subplot()
    ax.imshow(values, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, "" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(columns)), [c.replace("/", "/\n") if c != "ensemble" else "ENSEMBLE" for c in columns],
                  rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(shown)), [f"{c} ({n})" for c, n in zip(shown["class"], shown["rows"])], fontsize=8)
    ax.axvline(len(columns) - 1.5, color="black", linewidth=1.5)
    more = f" (top {len(shown)} of {len(per_class)})" if len(per_class) > len(shown) else ""
    ax.set_title(f"out-of-fold recall per class, members disagree most first{more}", fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
