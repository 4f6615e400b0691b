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
