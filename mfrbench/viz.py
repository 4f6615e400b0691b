"""Pictures for users: image grids (aligned crops, generated masks) with optional landmarks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from mfrbench.imageio import load_rgb, save_image


def image_grid(images: Sequence[np.ndarray], *, cols: int = 8, size: int = 112, pad: int = 2,
               points: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
    """Tile RGB images (resized to ``size``) into one grid; optionally dot landmarks on them."""
    import cv2

    n = len(images)
    rows = max(1, (n + cols - 1) // cols)
    grid = np.full((rows * (size + pad) + pad, min(n, cols) * (size + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, 2)
        h, w = img.shape[:2]
        tile = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        if points is not None and points[i] is not None:
            tile = tile.copy()
            for x, y in np.asarray(points[i]).reshape(-1, 2):
                cv2.circle(tile, (int(x * size / w), int(y * size / h)), 1, (0, 255, 0), -1)
        r, c = divmod(i, cols)
        y0, x0 = pad + r * (size + pad), pad + c * (size + pad)
        grid[y0:y0 + size, x0:x0 + size] = tile
    return grid


def manifest_grid(manifest_dir: str | os.PathLike, out_png: str | os.PathLike, *, n: int = 32, cols: int = 8,
                  column: str = "abs_out_path", show: str | None = None, seed: int = 0) -> Path | None:
    """Save a grid of ``n`` ok outputs of a manifest (a fixed seeded sample) to ``out_png``."""
    from mfrbench.manifest import read_manifest

    df = read_manifest(manifest_dir, status="ok")
    if df.empty:
        return None
    df = df.sample(min(n, len(df)), random_state=seed).sort_index()
    imgs = [load_rgb(p, min_side=1) for p in df[column]]
    pts = list(df[show]) if show and show in df.columns else None
    save_image(out_png, image_grid(imgs, cols=cols, points=pts))
    return Path(out_png)


def curve_figure(kind: str, curves: dict, title: str, path: str | os.PathLike, *, fars: Sequence[float] = (),
                 size: tuple[float, float] = (5, 4), dpi: int = 110, lw: float = 1.5, ms: float = 3,
                 legend: int | None = 8) -> None:
    """One ROC (``kind="roc"``: label -> (fpr, tpr), log-FAR axis, a grey line at each of ``fars``) or CMC
    (``kind="cmc"``: label -> identification rate by rank) figure, a curve per entry, saved as PNG.
    ``legend``: its font size, or None for no legend (one unnamed curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    for label, c in curves.items():
        if kind == "roc":
            fpr, tpr = c
            m = fpr > 0
            ax.step(fpr[m], tpr[m], where="post", label=label, lw=lw)
        else:
            ax.plot(np.arange(1, len(c) + 1), c, marker="o", ms=ms, lw=lw, label=label)
    if kind == "roc":
        for f in fars:
            ax.axvline(f, color="0.8", lw=0.8, zorder=0)
        ax.set_xscale("log")
        ax.set_xlabel("FAR (log scale)")
        ax.set_ylabel("TAR")
    else:
        ax.set_xlabel("rank")
        ax.set_ylabel("identification rate")
    ax.set_ylim(0, 1.01)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if legend is not None:
        ax.legend(fontsize=legend, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
