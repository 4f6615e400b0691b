"""The quick end-to-end pipeline behind ``mfrbench quickstart``.

It runs every stage that exists, small, on the shared data kit when present (else on the
built-in synthetic faces, clearly labelled), and writes everything under one folder:
aligned CelebA and LFW crops with manifests, sample grids, and a dataset report.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mfrbench.align import align_dataset
from mfrbench.datasets import create_dataset
from mfrbench.errors import DataNotFoundError
from mfrbench.reports_data import manifest_report
from mfrbench.viz import manifest_grid

log = logging.getLogger(__name__)


def run_quickstart(out: str | Path, *, limit: int = 200, workers: int = 2, echo=print) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = ["# mfrbench quickstart", ""]
    aligned: dict[str, Path] = {}
    for name in ("celeba", "lfw"):
        try:
            ds = create_dataset(name)
        except DataNotFoundError as err:
            echo(f"[{name}] not found ({err}); skipping")
            continue
        aligned[name] = out / f"{name}-aligned"
        echo(f"[align] {name}: first {limit} images -> {aligned[name]}")
        align_dataset(ds, aligned[name], limit=limit, workers=workers)
    if not aligned:
        echo("[align] no real data found: using the built-in SYNTHETIC faces")
        aligned["synthetic"] = out / "synthetic-aligned"
        align_dataset(create_dataset("synthetic"), aligned["synthetic"], workers=workers)
    for name, d in aligned.items():
        grid = manifest_grid(d, d / "grid.png", show="lmk5_crop")
        report += [manifest_report(d), "", f"sample grid: {grid}", ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(report))
    echo(f"report: {path}")
    return path
