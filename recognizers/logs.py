"""Rank-0 training logs: ``train_log.csv`` / ``val_log.csv`` (append, resumable) and TensorBoard."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any


class RunLogger:
    """Writes per-step and per-validation rows to CSV and TensorBoard (only when ``enabled``).

    On resume, rows after the checkpoint's global step (written by the interrupted run after
    its last checkpoint) are dropped, so the CSV holds each step exactly once.
    """

    def __init__(self, run_dir: str | os.PathLike, *, enabled: bool, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.tb = None
        if not enabled:
            return
        for name in ("train_log.csv", "val_log.csv"):
            path = self.run_dir / name
            if resume_step is None and path.exists():
                path.unlink()
            elif resume_step is not None and path.exists():
                _truncate_after(path, resume_step)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=resume_step)
        except ImportError:  # tensorboard is optional at run time; the CSVs carry the same numbers
            self.tb = None

    def _append(self, name: str, row: dict[str, Any]) -> None:
        path = self.run_dir / name
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    def step(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._append("train_log.csv", row)
        if self.tb is not None:
            for k in ("loss", "lr", "images_per_s", "acc", "active"):
                if k in row:
                    self.tb.add_scalar(f"train/{k}", row[k], row["global_step"])

    def val(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._append("val_log.csv", row)
        if self.tb is not None:
            for k, v in row.items():
                if k.startswith("val_") and isinstance(v, float):
                    self.tb.add_scalar(f"val/{k[4:]}", v, row["global_step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _truncate_after(path: Path, step: int) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    keep = [r for r in rows if int(r["global_step"]) <= step]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
