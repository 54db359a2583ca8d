"""What a run reports: the console (copied to train.log), metrics.csv and W&B. Rank 0 only.

The loop talks to W&B only through RunLog, so a run with wandb="disabled" never imports it.
"""
from __future__ import annotations

import csv
import os
import secrets
import string
from pathlib import Path

from engine import run_folder
from engine.system.atomic import write_atomic


class RunLog:
    """Console + train.log lines, metrics.csv rows, W&B scalars; silent on ranks other than 0."""

    def __init__(self, run_dir: Path | None, enabled: bool = True, wandb_mode: str = "disabled",
                 wandb_project: str = "sketchbook", wandb_entity: str | None = None,
                 wandb_name: str | None = None, config: dict | None = None):
        self.enabled = enabled
        self.run_dir = run_dir
        self.log_file = open(run_dir / run_folder.TRAIN_LOG, "a") if enabled and run_dir else None
        self.wandb = None
        if enabled and wandb_mode != "disabled":
            import wandb  # late: optional (GPU machines may lack it), ~0.8 s to import
            os.environ.setdefault("WANDB_SILENT", "true")
            run_id = None
            if run_dir:  # a resumed run continues the same W&B run
                id_file = run_dir / run_folder.WANDB_ID
                if not id_file.exists():
                    id_file.write_text(new_wandb_id())
                run_id = id_file.read_text().strip()
            self.wandb = wandb.init(project=wandb_project, entity=wandb_entity, name=wandb_name, config=config,
                                    mode=wandb_mode, dir=str(run_dir) if run_dir else None, reinit="finish_previous",
                                    id=run_id, resume="allow" if run_id else None)

    def print(self, *parts, **kwargs) -> None:
        """Print to the console and append to train.log."""
        if not self.enabled:
            return
        text = " ".join(str(p) for p in parts)
        print(text, **kwargs, flush=True)
        if self.log_file:
            self.log_file.write(text + "\n")
            self.log_file.flush()

    def metrics(self, csv_path: Path, row: dict, prefix: str = "", step: int | None = None) -> None:
        """Append one row to a metrics.csv (header on first write) and send it to W&B as prefix + key."""
        if not self.enabled:
            return
        new = not csv_path.exists()
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        self.scalars({prefix + k: v for k, v in row.items()}, step)

    def trim_metrics(self, csv_path: Path, last_epoch: int) -> None:
        """Drop metrics.csv rows after `last_epoch` (the epoch a resume restarts from is trained again)."""
        if not self.enabled or not csv_path.is_file():
            return
        with open(csv_path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or "epoch" not in rows[0]:
            return
        col = rows[0].index("epoch")
        keep = [rows[0]] + [r for r in rows[1:] if len(r) > col and r[col].isdigit() and int(r[col]) <= last_epoch]
        if len(keep) < len(rows):
            write_atomic(csv_path, lambda f: csv.writer(f).writerows(keep))

    def scalars(self, values: dict, step: int | None = None) -> None:
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)

    def close(self) -> None:
        if self.log_file:
            self.log_file.close()
            self.log_file = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def new_wandb_id() -> str:
    """A W&B run id: 8 lowercase letters and digits, as W&B makes them (its own helper moved between versions)."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
