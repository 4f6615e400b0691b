"""``mfrbench quality``: image quality of a generated masked set, one results row.

Moved out of :mod:`mfrbench.evaluate` (issue 11): recognition evaluation and image quality
share only the results store.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mfrbench import __version__
from mfrbench.errors import MfrbenchError

def _real_images(real: str | os.PathLike, limit: int | None) -> list[str]:
    from mfrbench.datasets import walk_images
    from mfrbench.manifest import MANIFEST_CSV, read_manifest

    p = Path(real)
    if (p / MANIFEST_CSV).is_file() or (p.is_file() and p.suffix == ".csv"):
        paths = read_manifest(p, status="ok")["abs_out_path"].tolist()
    elif p.is_dir():
        paths = [str(x) for x in walk_images(p)]
    else:
        raise MfrbenchError(f"--real {p} is neither a folder of images nor a manifest")
    if not paths:
        raise MfrbenchError(f"no images under --real {p}")
    return paths[:limit] if limit else paths


def _features(model, paths: list[str], desc: str, progress: bool, batch: int = 16) -> np.ndarray:
    from tqdm import tqdm

    from mfrbench.imageio import load_rgb
    from mfrbench.metrics.quality import inception_features

    out = []
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, dynamic_ncols=True, mininterval=0.5)
    for i in range(0, len(paths), batch):
        imgs = [load_rgb(p, min_side=1) for p in paths[i:i + batch]]
        # Same size per batch for the network: each image goes to 299x299 anyway.
        feats = [inception_features(model, im[None]) for im in imgs] if len({im.shape for im in imgs}) > 1 \
            else [inception_features(model, np.stack(imgs))]
        out.append(np.concatenate(feats))
        bar.update(len(imgs))
    bar.close()
    return np.concatenate(out)


def run_quality(generated: str | os.PathLike, *, real: str | os.PathLike | None = None, model_spec: str | None = None,
                results_dir: str | os.PathLike = "results", limit: int | None = None, real_limit: int | None = None,
                kid_subset: int = 1000, seed: int = 0, progress: bool = True, model: Any = None) -> dict:
    """SSIM/PSNR (non-mask area), FID/KID against ``real``, identity cosine; append a quality row.

    Args:
        generated: a masked manifest (``mfrbench generate`` output): masked image ``out_path``,
            mask map ``map_out_path`` (1 = mask), input ``src_path``.
        real: real masked faces for FID/KID (a folder of images or an aligned manifest; aligned
            crops give numbers comparable to aligned generated faces). ``None``: no FID/KID.
        model_spec: embedder for the identity cosine (``dlib``, a run dir or an .onnx file).
    """
    from mfrbench.imageio import load_rgb
    from mfrbench.manifest import read_manifest, read_manifest_meta, resolve_manifest_path
    from mfrbench.metrics import quality as Q
    from mfrbench.results import append_row, new_eval_id, now_iso

    t0 = time.time()
    meta = read_manifest_meta(generated)
    if meta.get("kind") != "masked":
        raise MfrbenchError(f"{generated} is a {meta.get('kind')!r} manifest; --generated takes the output folder of "
                            "`mfrbench generate`")
    base = resolve_manifest_path(generated).parent
    df = read_manifest(generated, status="ok")
    if "map_out_path" not in df.columns:
        raise MfrbenchError(f"{generated} has no map_out_path column: SSIM/PSNR need the generator's mask maps")
    if limit:
        df = df.head(limit)
    if df.empty:
        raise MfrbenchError(f"{generated} has no ok rows")
    gcfg = (meta.get("config") or {}).get("generator") or {}
    gen = str(gcfg.get("method") or gcfg.get("name") or meta.get("generator") or "unknown") \
        if isinstance(gcfg, dict) else str(gcfg)
    if model is None and model_spec:
        from mfrbench.embedders import load_model

        model = load_model(model_spec)
    ssim, psnr, cos, skipped = [], [], [], 0
    from tqdm import tqdm

    pairs_in, pairs_out = [], []
    for r in tqdm(df.to_dict("records"), desc="ssim/psnr", unit="img", disable=not progress, dynamic_ncols=True):
        src = load_rgb(r["src_path"], min_side=1)
        out = load_rgb(r["abs_out_path"], min_side=1)
        if src.shape != out.shape:
            skipped += 1  # raw photo aligned on the fly: the input crop was not stored
            continue
        from PIL import Image

        keep = np.asarray(Image.open(base / r["map_out_path"])) == 0
        ssim.append(Q.ssim_non_mask(src, out, keep))
        psnr.append(Q.psnr_non_mask(src, out, keep))
        if model is not None and src.shape == (112, 112, 3):
            pairs_in.append(src)
            pairs_out.append(out)
    if not ssim:
        raise MfrbenchError(f"no generated image in {generated} has a stored input of the same size")
    notes = [f"SSIM/PSNR: RGB, range 0-255, non-mask pixels only, mean over {len(ssim)} images"]
    if skipped:
        notes.append(f"{skipped} images without a same-size input left out of SSIM/PSNR")
    finite = [p for p in psnr if np.isfinite(p)]
    row: dict[str, Any] = {"eval_id": new_eval_id(), "kind": "quality", "time": now_iso(), "generator": gen,
                           "quality_data": str(base), "ssim": float(np.nanmean(ssim)),
                           "psnr": float(np.mean(finite)) if finite else float("inf"), "n_images": len(ssim),
                           "tool_version": __version__}
    if len(finite) < len(psnr):
        notes.append(f"{len(psnr) - len(finite)} images identical outside the mask (PSNR inf) left out of the mean")
    if model is not None and pairs_in:
        a = model.embed(np.stack(pairs_in))
        b = model.embed(np.stack(pairs_out))
        from mfrbench.metrics.verification import similarity

        row["identity_cos"] = float(similarity(a, b, metric="cosine").mean())
        row["model"] = model.info.get("model", "")
        row["config_hash"] = model.info.get("config_hash", "")
        notes.append(f"identity: cosine of {model.info.get('model')} embeddings, input vs output, {len(pairs_in)} images")
    if real is not None:
        inc = Q.load_inception()
        rp = _real_images(real, real_limit)
        fr = _features(inc, rp, "inception (real)", progress)
        fg = _features(inc, df["abs_out_path"].tolist(), "inception (generated)", progress)
        row["fid"] = Q.fid_from_features(fr, fg)
        row["kid"], row["kid_std"] = Q.kid_from_features(fr, fg, subset_size=kid_subset, seed=seed)
        row["n_real"] = len(fr)
        notes.append(f"FID/KID: {Q.INCEPTION_NAME}, bilinear 299x299; real {len(fr)} from {real}, generated {len(fg)}")
        if min(len(fr), len(fg)) < 2000:
            notes.append("FID is biased at N < 2000 per side: compare only at equal N, read KID next to it")
    else:
        notes.append("no --real set: FID/KID not computed")
    row["notes"] = " | ".join(notes)
    row["seconds"] = round(time.time() - t0, 2)
    append_row(results_dir, row)
    return row
