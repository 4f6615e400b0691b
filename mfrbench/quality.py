"""``mfrbench quality``: image quality of a generated masked set, one results row.

Steps (:func:`run_quality`): read the generated set and its generator identity
(:func:`load_generated`) -> pick the non-mask region (:func:`nonmask_rule`) -> load input/output
pairs in batches (:func:`iter_pairs`) -> SSIM/PSNR on the non-mask region and the identity cosine
per batch (:func:`score_pairs`) -> FID/KID against real masked faces (:func:`fid_kid`) -> one row
(:func:`quality_row`) appended to the results store.

The non-mask region is defined the same way for every generator, so their SSIM/PSNR compare:
the generator's own mask where it has one (generator identity ``maps == "exact"``, e.g. ``mtf``),
otherwise one common Seg model given by the caller (``mfrbench quality --seg RUN``), never the
"pixels that changed" map (that map counts any damage outside the mask as mask).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from mfrbench import __version__
from mfrbench.errors import MfrbenchError, SkipImage
from mfrbench.generate import GeneratorIdentity, read_generator_identity

#: Generated images uint8 (B, H, W, 3) -> keep maps bool (B, H, W), True on non-mask pixels.
NonMaskFn = Callable[[np.ndarray], np.ndarray]

EXACT_MAPS = "exact-maps"


# --------------------------------------------------------------------------- inputs
def load_generated(generated: str | os.PathLike, limit: int | None) -> tuple[GeneratorIdentity, Path, pd.DataFrame]:
    """(generator identity, manifest folder, ok rows) of a masked manifest written by ``mfrbench generate``."""
    from mfrbench.manifest import read_manifest, resolve_manifest_path

    ident = read_generator_identity(generated)
    base = resolve_manifest_path(generated).parent
    df = read_manifest(generated, status="ok")
    if limit:
        df = df.head(limit)
    if df.empty:
        raise MfrbenchError(f"{generated} has no ok rows")
    return ident, base, df


@dataclass(frozen=True)
class NonMaskRule:
    """Where the non-mask pixels come from: the manifest's exact maps, or ``fn`` on the outputs."""

    source: str                      # the row's ``nonmask_source``: "exact-maps" or "seg:<run>"
    fn: NonMaskFn | None = None      # None: read the manifest's ``map_out_path`` (1 = mask)
    notes: tuple[str, ...] = ()


def nonmask_rule(ident: GeneratorIdentity, df: pd.DataFrame, generated: str | os.PathLike,
                 nonmask_fn: NonMaskFn | None, nonmask_source: str | None) -> NonMaskRule:
    """The generator's exact maps when it has them, else the common Seg callable; else a one-line error.

    A map estimated from the output (``maps`` ``diff`` / ``seg``) is never used: a "changed pixels"
    map counts damage outside the mask as mask, and each generator's own Seg estimate differs.
    """
    if ident.maps == "exact":
        if "map_out_path" not in df.columns:
            raise MfrbenchError(f"{generated} has no map_out_path column: SSIM/PSNR need the generator's mask maps")
        notes = (f"--seg {nonmask_source or ''} not used: {ident.variant} has exact mask maps",) \
            if nonmask_fn is not None else ()
        return NonMaskRule(EXACT_MAPS, None, notes)
    if nonmask_fn is None:
        raise MfrbenchError(f"{generated}: the {ident.variant} mask maps are estimated from its output "
                            f"(maps={ident.maps or 'unknown'!r}), not its exact mask: pass --seg RUN (one Seg model "
                            "for every generator) to measure SSIM/PSNR")
    return NonMaskRule(nonmask_source or "seg", nonmask_fn)


@dataclass
class PairBatch:
    """Same-size input/output pairs of one batch (uint8 (H, W, 3) each) and their keep maps."""

    src: list[np.ndarray]
    out: list[np.ndarray]
    keep: list[np.ndarray] = field(default_factory=list)
    skipped: int = 0                 # outputs whose input crop was not stored at the same size


def _keep_maps(outs: list[np.ndarray], fn: NonMaskFn) -> list[np.ndarray]:
    """``fn`` on a batch (one call when the outputs share a size), checked to give (H, W) maps."""
    groups = [np.stack(outs)] if len({o.shape for o in outs}) == 1 else [o[None] for o in outs]
    keep = []
    for g in groups:
        k = np.asarray(fn(g))
        if k.shape != g.shape[:3]:
            raise ValueError(f"Expected nonmask_fn to return keep maps of shape {g.shape[:3]}, but got {k.shape}")
        keep.extend(k.astype(bool))
    return keep


def iter_pairs(df: pd.DataFrame, base: Path, rule: NonMaskRule, *, batch: int = 32, progress: bool = True
               ) -> Iterator[PairBatch]:
    """Input/output pairs with their non-mask keep maps, ``batch`` manifest rows at a time."""
    from PIL import Image
    from tqdm import tqdm

    from mfrbench.imageio import load_rgb

    records = df.to_dict("records")
    bar = tqdm(total=len(records), desc="ssim/psnr", unit="img", disable=not progress, dynamic_ncols=True)
    for i in range(0, len(records), batch):
        b = PairBatch([], [])
        maps = []
        for r in records[i:i + batch]:
            src = load_rgb(r["src_path"], min_side=1)
            out = load_rgb(r["abs_out_path"], min_side=1)
            if src.shape != out.shape:
                b.skipped += 1  # raw photo aligned on the fly: the input crop was not stored
                continue
            b.src.append(src)
            b.out.append(out)
            if rule.fn is None:
                maps.append(np.asarray(Image.open(base / r["map_out_path"])) == 0)
        if b.out:
            b.keep = maps if rule.fn is None else _keep_maps(b.out, rule.fn)
        bar.update(len(records[i:i + batch]))
        yield b
    bar.close()


# --------------------------------------------------------------------------- scores
@dataclass
class PairScores:
    """Per-image SSIM/PSNR (non-mask) and identity cosines, accumulated over batches."""

    ssim: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    cos: list[float] = field(default_factory=list)
    skipped: int = 0


def nonmask_ssim_psnr(b: PairBatch, scores: PairScores) -> None:
    """Add each pair's non-mask SSIM and PSNR (:mod:`mfrbench.metrics.quality`) to ``scores``."""
    from mfrbench.metrics.quality import non_mask_ssim_psnr

    for src, out, keep in zip(b.src, b.out, b.keep):
        s, p = non_mask_ssim_psnr(src, out, keep)
        scores.ssim.append(s)
        scores.psnr.append(p)
    scores.skipped += b.skipped


def identity_cosine(b: PairBatch, model: Any, scores: PairScores) -> None:
    """Add the cosine of the embedder's input and output embeddings (112x112 aligned pairs only)."""
    from mfrbench.metrics.verification import similarity

    idx = [i for i, s in enumerate(b.src) if s.shape == (112, 112, 3)]
    if model is None or not idx:
        return
    a = model.embed(np.stack([b.src[i] for i in idx]))
    o = model.embed(np.stack([b.out[i] for i in idx]))
    scores.cos.extend(np.asarray(similarity(a, o, metric="cosine"), np.float64).tolist())


def score_pairs(df: pd.DataFrame, base: Path, rule: NonMaskRule, model: Any, *, progress: bool = True
                ) -> PairScores:
    """Stream the pairs once: non-mask SSIM/PSNR and identity cosine per batch."""
    scores = PairScores()
    for b in iter_pairs(df, base, rule, progress=progress):
        nonmask_ssim_psnr(b, scores)
        identity_cosine(b, model, scores)
    return scores


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


def _features(model, paths: list[str], desc: str, progress: bool, batch: int = 16,
              skipped: list[str] | None = None) -> np.ndarray:
    """Inception features of the readable images of ``paths``; each unreadable one's skip code goes to ``skipped``."""
    from tqdm import tqdm

    from mfrbench.imageio import load_rgb
    from mfrbench.metrics.quality import inception_features

    skipped = [] if skipped is None else skipped
    out = []
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, dynamic_ncols=True, mininterval=0.5)
    for i in range(0, len(paths), batch):
        imgs = []
        for p in paths[i:i + batch]:
            try:
                imgs.append(load_rgb(p, min_side=1))
            except SkipImage as skip:  # issue 12: a FIFO or a corrupt photo in --real is left out and counted
                skipped.append(skip.code)
        if not imgs:
            bar.update(len(paths[i:i + batch]))
            continue
        # Same size per batch for the network: each image goes to 299x299 anyway.
        feats = [inception_features(model, im[None]) for im in imgs] if len({im.shape for im in imgs}) > 1 \
            else [inception_features(model, np.stack(imgs))]
        out.append(np.concatenate(feats))
        bar.update(len(paths[i:i + batch]))
    bar.close()
    if not out:
        raise MfrbenchError(f"none of the {len(paths)} {desc} images could be read ({', '.join(sorted(set(skipped)))})")
    return np.concatenate(out)


def fid_kid(real: str | os.PathLike, generated_paths: list[str], *, real_limit: int | None, kid_subset: int,
            seed: int, progress: bool) -> tuple[dict, list[str]]:
    """FID and KID of the generated images against ``real`` (standard Inception-v3 features): (columns, notes)."""
    from mfrbench.metrics import quality as Q

    inc = Q.load_inception()
    unread: list[str] = []
    fr = _features(inc, _real_images(real, real_limit), "inception (real)", progress, skipped=unread)
    fg = _features(inc, generated_paths, "inception (generated)", progress)
    kid, kid_std = Q.kid_from_features(fr, fg, subset_size=kid_subset, seed=seed)
    cols = {"fid": Q.fid_from_features(fr, fg), "kid": kid, "kid_std": kid_std, "n_real": len(fr)}
    notes = [f"FID/KID: {Q.INCEPTION_NAME}, {Q.FID_RESIZE}; real {len(fr)} from {real}, generated {len(fg)}"]
    if unread:
        notes.append(f"{len(unread)} real images unreadable and left out ("
                     + ", ".join(f"{c}={n}" for c, n in sorted(Counter(unread).items())) + ")")
    if min(len(fr), len(fg)) < 2000:
        notes.append("FID is biased at N < 2000 per side: compare only at equal N, read KID next to it")
    return cols, notes


# --------------------------------------------------------------------------- row
def quality_row(ident: GeneratorIdentity, base: Path, rule: NonMaskRule, scores: PairScores, model: Any) -> dict:
    """The quality row's columns and notes from the pair scores (FID/KID are added by the caller)."""
    from mfrbench.metrics.quality import SSIM_PSNR_PROTOCOL
    from mfrbench.results import new_eval_id, now_iso

    finite = [p for p in scores.psnr if np.isfinite(p)]
    row: dict[str, Any] = {"eval_id": new_eval_id(), "kind": "quality", "time": now_iso(), **ident.row(),
                           "quality_data": str(base), "ssim": float(np.nanmean(scores.ssim)),
                           "psnr": float(np.mean(finite)) if finite else float("inf"), "n_images": len(scores.ssim),
                           "quality_protocol": SSIM_PSNR_PROTOCOL, "nonmask_source": rule.source,
                           "tool_version": __version__}
    notes = [f"SSIM/PSNR: non-mask region from {rule.source}, mean over {len(scores.ssim)} images", *rule.notes]
    if scores.skipped:
        notes.append(f"{scores.skipped} images without a same-size input left out of SSIM/PSNR")
    if len(finite) < len(scores.psnr):
        notes.append(f"{len(scores.psnr) - len(finite)} images identical outside the mask (PSNR inf) left out of "
                     "the mean")
    if model is not None and scores.cos:
        row["identity_cos"] = float(np.mean(scores.cos))
        row["model"] = model.info.get("model", "")
        row["config_hash"] = model.info.get("config_hash", "")
        notes.append(f"identity: cosine of {model.info.get('model')} embeddings, input vs output, "
                     f"{len(scores.cos)} images")
    row["notes"] = notes
    return row


def run_quality(generated: str | os.PathLike, *, real: str | os.PathLike | None = None, model_spec: str | None = None,
                results_dir: str | os.PathLike = "results", limit: int | None = None, real_limit: int | None = None,
                kid_subset: int = 1000, seed: int = 0, progress: bool = True, model: Any = None,
                nonmask_fn: NonMaskFn | None = None, nonmask_source: str | None = None) -> dict:
    """SSIM/PSNR (non-mask area), FID/KID against ``real``, identity cosine; append a quality row.

    Args:
        generated: a masked manifest (``mfrbench generate`` output): masked image ``out_path``,
            mask map ``map_out_path`` (1 = mask), input ``src_path``, generator identity in ``manifest.json``.
        real: real masked faces for FID/KID (a folder of images or an aligned manifest; aligned
            crops give numbers comparable to aligned generated faces). ``None``: no FID/KID.
        model_spec: embedder for the identity cosine (``dlib``, a run dir or an .onnx file).
        nonmask_fn: the common non-mask estimate for generators without exact maps: generated
            images uint8 (B, H, W, 3) -> keep maps bool (B, H, W) (the CLI builds it from ``--seg RUN``).
            Ignored for generators with exact maps.
        nonmask_source: what ``nonmask_fn`` is, for the row (``seg:<run path>``).

    Raises:
        MfrbenchError: not a masked manifest, no identity record, or estimated maps and no ``nonmask_fn``.
    """
    from mfrbench.results import check_store

    check_store(results_dir)  # a damaged store or a --results file fails now, not after the measurement
    t0 = time.time()
    ident, base, df = load_generated(generated, limit)
    rule = nonmask_rule(ident, df, generated, nonmask_fn, nonmask_source)
    if model is None and model_spec:
        from mfrbench.embedders import load_model

        model = load_model(model_spec)
    scores = score_pairs(df, base, rule, model, progress=progress)
    if not scores.ssim:
        raise MfrbenchError(f"no generated image in {generated} has a stored input of the same size")
    row = quality_row(ident, base, rule, scores, model)
    if real is not None:
        cols, notes = fid_kid(real, df["abs_out_path"].tolist(), real_limit=real_limit, kid_subset=kid_subset,
                              seed=seed, progress=progress)
        row.update(cols)
        row["notes"] += notes
    else:
        row["notes"].append("no --real set: FID/KID not computed")
    row["notes"] = " | ".join(row["notes"])
    row["seconds"] = round(time.time() - t0, 2)
    from mfrbench.results import append_row

    append_row(results_dir, row)
    return row
