"""The read-outs every GAN run writes at its end (issue 14): ``RUN/quality.json`` and ``RUN/quality_grid.png``.

On a fixed set of faces (``n_faces``, 16) under ``n_refs`` (4) references whose mask colours differ
(farthest-point choice in the mean colour of each masked photo's mask region), all at the crop's own
resolution (112 px), judged by **one common Seg model** (``train.readout_seg``, default the run's own
Seg) and Det (``train.readout_det``):

* **correctness**: ``seg_correct`` = share of outputs whose Seg map covers >= 80 % of the nose-mouth
  box and <= 5 % of the eye band (:func:`face_boxes`, from the ArcFace 5-point template);
  ``det_correct_wearing`` = share Det's wearing head calls ``correct``; each with a 95 % CI that resamples
  the faces (``seg_correct_ci``, ``det_correct_wearing_ci``: one face's outputs under the references are
  not independent), so two runs' shares can be compared;
* **fidelity**: non-mask SSIM / PSNR with the evaluator's definitions (:mod:`mfrbench.quality`'s
  :func:`~mfrbench.quality.nonmask_ssim_psnr`, i.e. :mod:`mfrbench.metrics.quality`), outside the
  generator's exact map (a compositing generator's alpha) or, for a plain generator, the common Seg's
  map of the output; measured twice for a compositing run: ``full`` (composited at 112 px) and
  ``train`` (composited at the training size, then upsampled: what a plain generator does);
* **realism**: KID (mean, std over subsets) and FID of N generated faces against the N held-out real
  masked photos (``train.holdout_masks``: never trained on), next to ``mtf`` on the same N faces, at
  equal N (Inception features of :mod:`mfrbench.metrics.quality`; FID at N < 2000 is biased, read KID);
* **the judges on real photos** (``judge_on_real``): Seg's and Det's verdicts on the held-out real
  masked photos and on real unmasked faces (and Seg on ``mtf``), so a low or high share above can be
  read against how the same judge sees real faces;
* **style** (reference-guided families): per channel, the Pearson correlation across references
  between the mean colour of the reference's mask region (common Seg) and of the generated mask
  region (mean over the faces), and ``style_diversity`` = mean L1 (``[-1, 1]`` units) between the
  outputs of two references.

Grid: column 0 = the reference (blank in the first row), row 0 = the input faces, then one row per
reference (a family without style codes gives the same output in every row).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mfrbench.generators.gan.composite import CompositeGenerator
from mfrbench.generators.gan.data import DomainData, to_uint8
from mfrbench.generators.gan.generator import translate_crops
from mfrbench.runs import atomic_write_text

log = logging.getLogger(__name__)

#: Seg-correct thresholds: share of the nose-mouth box covered, share of the eye band covered.
NOSE_MOUTH_MIN, EYE_BAND_MAX = 0.80, 0.05


def face_boxes(size: int) -> dict[str, tuple[int, int, int, int]]:
    """``(y0, y1, x0, x1)`` of the nose-mouth box and the eye band on an aligned ``size`` crop (ArcFace template).

    Nose-mouth box: from 8 px (at 112) above the nose tip to 5 px below the mouth corners, between the
    mouth corners. Eye band: 8 px above to 6 px below the eye centres, 12 px beyond each eye.
    """
    from mfrbench.align import ARCFACE_TEMPLATE

    r = size / 112.0
    t = ARCFACE_TEMPLATE * r
    eye_y = float(t[:2, 1].mean())
    mouth_y = float(t[3:, 1].mean())
    return {"nose_mouth": (int(t[2, 1] - 8 * r), int(np.ceil(mouth_y + 5 * r)), int(t[3, 0]), int(np.ceil(t[4, 0]))),
            "eye_band": (int(eye_y - 8 * r), int(np.ceil(eye_y + 6 * r)), int(t[0, 0] - 12 * r),
                         int(np.ceil(t[1, 0] + 12 * r)))}


def seg_coverage(maps: np.ndarray) -> dict[str, np.ndarray]:
    """Per image, the share of the nose-mouth box and of the eye band that ``maps`` (B, H, W) bool call mask."""
    boxes = face_boxes(maps.shape[-1])
    out = {k: maps[:, y0:y1, x0:x1].reshape(len(maps), -1).mean(1) for k, (y0, y1, x0, x1) in boxes.items()}
    out["correct"] = (out["nose_mouth"] >= NOSE_MOUTH_MIN) & (out["eye_band"] <= EYE_BAND_MAX)
    return out


def mask_colour(images: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Mean RGB (0-1) of the mask pixels of uint8 ``images`` (B, H, W, 3) under ``maps`` (B, H, W); NaN if none."""
    m = maps.astype(np.float64)[..., None]
    n = m.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (images.astype(np.float64) / 255.0 * m).sum((1, 2)) / n


def _fallback_box(size: int) -> np.ndarray:
    box = np.zeros((size, size), bool)
    box[int(0.58 * size):int(0.92 * size), int(0.22 * size):int(0.78 * size)] = True
    return box


def reference_colours(refs: np.ndarray, seg: Any) -> np.ndarray:
    """Mean mask-region colour (B, 3) of real masked crops: Seg's map, or the lower-central box when Seg finds < 1 %."""
    maps = seg.predict_uint8(refs).astype(bool)
    small = maps.reshape(len(maps), -1).mean(1) < 0.01
    maps[small] = _fallback_box(refs.shape[1])
    return mask_colour(refs, maps)


def pick_references(colours: np.ndarray, k: int) -> np.ndarray:
    """``k`` indices far apart in mask colour: start at the darkest mask, then add the farthest one each time."""
    ok = np.flatnonzero(np.isfinite(colours).all(1))
    chosen = [int(ok[np.argmin(colours[ok].sum(1))])]
    while len(chosen) < min(k, len(ok)):
        d = np.min(np.linalg.norm(colours[ok][:, None] - colours[chosen][None], axis=2), axis=1)
        chosen.append(int(ok[np.argmax(d)]))
    return np.array(chosen)


def _as_tensor(crops: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def generate(model: Any, faces: np.ndarray, ref: np.ndarray | None, *, resolution: str = "full",
             seg: Any = None, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The run's EMA ``G_M`` on uint8 crops ``faces`` (B, H, W, 3), in the style of ``ref`` (one crop or one per face).

    Returns:
        ``(outputs uint8 (B, H, W, 3), mask maps bool (B, H, W))``: the exact alpha map of a compositing
        generator, else ``seg`` on the output.
    """
    net = model.translator().eval()
    size = model.train_cfg.size
    outs, maps = [], []
    codes = None
    if ref is not None and hasattr(model, "ema_E"):
        r = _as_tensor(ref if ref.ndim == 4 else ref[None], model.device)
        r = torch.nn.functional.interpolate(r, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        codes = model.ema_E.net(r, model.domain_of(r))                             # (R, style_dim)
    for i in range(0, len(faces), batch):
        x = _as_tensor(faces[i:i + batch], model.device)
        args: tuple = ()
        if hasattr(model, "ema_E"):
            s = None if codes is None else (codes.expand(len(x), -1) if len(codes) == 1 else codes[i:i + len(x)])
            args = (s,)
        y, exact = translate_crops(net, x, size, args=args, resolution=resolution)
        y8 = to_uint8(y)
        outs.append(y8)
        maps.append(exact.cpu().numpy() if exact is not None else seg.predict_uint8(y8).astype(bool))
    return np.concatenate(outs), np.concatenate(maps)


def nonmask_scores(src: np.ndarray, out: np.ndarray, keep: np.ndarray) -> dict[str, float]:
    """Mean non-mask SSIM / PSNR with :mod:`mfrbench.quality`'s scorer (PSNR inf = identical, left out of the mean)."""
    from mfrbench.quality import PairBatch, PairScores, nonmask_ssim_psnr

    scores = PairScores()
    nonmask_ssim_psnr(PairBatch(list(src), list(out), list(keep)), scores)
    psnr = np.array(scores.psnr)
    fin = psnr[np.isfinite(psnr)]
    ssim = np.array(scores.ssim, np.float64)
    ssim = ssim[np.isfinite(ssim)]                   # NaN: no non-mask pixel to score (an all-mask output)
    return {"ssim": float(ssim.mean()) if len(ssim) else float("nan"),
            "psnr": float(fin.mean()) if len(fin) else float("inf"),
            "n_identical": int((~np.isfinite(psnr)).sum())}


def mtf_on_crops(crops: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """``mtf`` (``--mask-type mix --wearing correct``) on aligned crops: 68 points from the landmarker on the
    template face box. Returns ``(masked crops of the faces mtf could mask, number skipped)``."""
    from mfrbench.faces import create_landmarker, template_face
    from mfrbench.generate import image_rng
    from mfrbench.generators.base import create_generator

    lm = create_landmarker("auto")
    gen = create_generator("mtf", mask_type="mix", wearing="correct")
    face = template_face(crops.shape[1])
    out, skipped = [], 0
    for i, c in enumerate(crops):
        b = gen.generate(c[None], lm.landmarks(c, face)[None], rng=[image_rng(seed, f"readout/{i}")])
        if b.info and b.info[0].get("skip"):
            skipped += 1
            continue
        out.append(b.images[0])
    return (np.stack(out) if out else crops[:0]), skipped


def realism(gen: np.ndarray, mtf: np.ndarray, real: np.ndarray, seed: int) -> dict[str, Any]:
    """KID and FID of the generated and the mtf crops against the held-out real masked crops, at equal N."""
    from mfrbench.metrics import quality as Q

    inc = Q.load_inception()
    n = min(len(gen), len(mtf), len(real))
    feats = {k: np.concatenate([Q.inception_features(inc, v[i:i + 16]) for i in range(0, n, 16)])
             for k, v in (("real", real[:n]), ("gan", gen[:n]), ("mtf", mtf[:n]))}
    res: dict[str, Any] = {"n": n, "features": Q.INCEPTION_NAME, "resize": Q.FID_RESIZE}
    for k in ("gan", "mtf"):
        kid, kid_std = Q.kid_from_features(feats["real"], feats[k], subset_size=n, seed=seed)
        res[k] = {"kid": kid, "kid_std": kid_std, "fid": Q.fid_from_features(feats["real"], feats[k])}
    res["note"] = "FID is biased at N < 2000 per side: compare at equal N only, read KID next to it"
    return res


def style_scores(ref_colours: np.ndarray, outs: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> dict[str, Any]:
    """Colour correlation across references (per channel and mean) and diversity between references' outputs."""
    gen = np.stack([np.nanmean(mask_colour(o, m), 0) for o, m in zip(outs, maps)])     # (R, 3)
    corr, gain = [], []
    for ch in range(3):
        a, b = ref_colours[:, ch], gen[:, ch]
        ok = np.isfinite(a) & np.isfinite(b)
        corr.append(float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() >= 3 and a[ok].std() > 0 and b[ok].std() > 0
                    else float("nan"))
        # least-squares slope: how far the generated colour moves per unit of reference colour (1 = follows fully)
        gain.append(float(np.polyfit(a[ok], b[ok], 1)[0]) if ok.sum() >= 2 and a[ok].std() > 0 else float("nan"))
    pairs = [(i, j) for i in range(len(outs)) for j in range(i + 1, len(outs))]
    div = float(np.mean([np.abs(outs[i].astype(np.float64) - outs[j]).mean() / 127.5 for i, j in pairs])) \
        if pairs else float("nan")
    return {"colour_corr": dict(zip("rgb", corr)), "colour_corr_mean": float(np.nanmean(corr)) if
            np.isfinite(corr).any() else float("nan"), "colour_gain": dict(zip("rgb", gain)),
            "style_diversity": div,
            "ref_colour": ref_colours.round(4).tolist(), "gen_colour": gen.round(4).tolist()}


def save_grid(path: Path, faces: np.ndarray, refs: np.ndarray, rows: Sequence[np.ndarray], *, tile: int = 112) -> Path:
    from mfrbench.imageio import save_image
    from mfrbench.viz import image_grid

    blank = np.full_like(faces[:1], 255)
    tiles = [*blank, *faces]
    for r, out in zip(refs, rows):
        tiles += [r, *out]
    save_image(path, image_grid(tiles, cols=len(faces) + 1, size=tile))
    return path


def judge_on_real(seg: Any, det: Any, real_masked: np.ndarray, real_faces: np.ndarray) -> dict[str, Any]:
    """How the judges (Seg, Det) read *real* photos, next to their verdicts on generated ones.

    On real masked photos (held out from training) a judge that transfers should see the mask: Seg's
    ``seg_correct`` share and Det's wearing call (mostly ``correct``: RMFD photos are worn as people
    wear them, a few below the nose); on real unmasked faces, no mask: Seg's mask area near 0
    (``seg_any``: share of images with any pixel marked) and Det's ``none``. Shares per wearing class
    (correct, incorrect, none) and ``det_present`` (correct + incorrect). Either judge may be None
    (``train-aux`` trains one at a time and reads its own held-out real photos with this function)."""
    out: dict[str, Any] = {"n_masked": len(real_masked), "n_faces": len(real_faces)}
    for name, imgs in (("masked", real_masked), ("faces", real_faces)):
        if not len(imgs):
            continue
        if seg is not None:
            maps = seg.predict_uint8(imgs).astype(bool)
            cov = seg_coverage(maps)
            out[f"seg_correct_{name}"] = float(cov["correct"].mean())
            out[f"seg_area_{name}"] = float(maps.mean())
            out[f"seg_any_{name}"] = float(maps.reshape(len(maps), -1).any(1).mean())
        if det is not None:
            _, wear = det.predict(_as_tensor(imgs, det.device))
            calls = np.bincount(wear.argmax(1), minlength=3) / len(imgs)
            out[f"det_wearing_{name}"] = dict(zip(("correct", "incorrect", "none"), calls.round(4).tolist()))
            out[f"det_present_{name}"] = round(float(calls[0] + calls[1]), 4)
    return out


def _finite(v: Any) -> Any:
    """JSON-safe: NaN/inf floats become None (strict JSON has neither), numpy scalars plain numbers."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _face_ci(correct: np.ndarray, n_faces: int, seed: int) -> list[float]:
    """95 % CI of a share over the outputs, resampling the faces: output ``j`` is face ``j % n_faces`` under
    reference ``j // n_faces``, so one face's outputs under several references are not independent."""
    from mfrbench.metrics.bootstrap import bootstrap_mean_ci

    c = np.asarray(correct, dtype=np.float64).ravel()
    return [round(v, 4) for v in bootstrap_mean_ci(c, np.arange(len(c)) % n_faces, n_boot=1000, seed=seed)]


def run_readout(model: Any, faces: DomainData, masks: DomainData, held: DomainData | None, run_dir: Path, *,
                seg: Any, det: Any = None, seg_run: str | None = None, det_run: str | None = None,
                n_faces: int = 16, n_refs: int = 4, n_kid: int = 200, seed: int = 0) -> dict:
    """Compute and write ``RUN/quality.json`` + ``RUN/quality_grid.png`` (see the module docstring)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 14_14])
    face_idx = np.sort(rng.choice(len(faces), size=min(n_faces, len(faces)), replace=False))
    src = faces.crops(face_idx)
    bank = masks.crops(range(len(masks)))
    ref_idx = pick_references(reference_colours(bank, seg), n_refs)
    refs = bank[ref_idx]
    styled = hasattr(model, "ema_E")
    composite = isinstance(model.translator(), CompositeGenerator)
    outs, maps = [], []
    for k in range(len(refs)) if styled else range(1):
        o, m = generate(model, src, refs[k] if styled else None, seg=seg)
        outs.append(o)
        maps.append(m)
    all_out, all_map = np.concatenate(outs), np.concatenate(maps)
    seg_maps = seg.predict_uint8(all_out).astype(bool)                    # the common judge, on every output
    cov = seg_coverage(seg_maps)
    res: dict[str, Any] = {"method": model.train_cfg.method, "step": model.step, "n_faces": len(src),
                           "n_refs": len(refs) if styled else 1, "output": getattr(model.cfg, "output", "plain"),
                           "size_train": model.train_cfg.size, "size_out": int(src.shape[1]),
                           "seg_run": seg_run, "det_run": det_run,
                           "seg_correct": float(cov["correct"].mean()),
                           "seg_correct_ci": _face_ci(cov["correct"], len(src), seed),
                           "nose_mouth_cov": float(cov["nose_mouth"].mean()),
                           "eye_band_cov": float(cov["eye_band"].mean()),
                           "face_keys": [faces.keys[i] for i in face_idx], "ref_keys": [masks.keys[i] for i in ref_idx]}
    if det is not None:
        _, wear = det.predict(_as_tensor(all_out, det.device))
        res["det_correct_wearing"] = float((wear.argmax(1) == 0).mean())
        res["det_correct_wearing_ci"] = _face_ci(np.asarray(wear.argmax(1) == 0), len(src), seed)
    src_all = np.concatenate([src] * len(outs))
    keep = ~all_map if composite else ~seg_maps
    res["nonmask_source"] = "alpha" if composite else f"seg:{seg_run}"
    res["nonmask_full"] = nonmask_scores(src_all, all_out, keep)
    if composite:  # the same run composited at the training size, then upsampled (deliverable 2's comparison)
        o2, m2 = zip(*[generate(model, src, refs[k] if styled else None, resolution="train", seg=seg)
                       for k in (range(len(refs)) if styled else range(1))])
        res["nonmask_train"] = nonmask_scores(src_all, np.concatenate(o2), ~np.concatenate(m2))
    res["mask_area"] = float(all_map.mean())
    if styled:
        res["style"] = style_scores(reference_colours(refs, seg), outs, maps)
    if held is not None and len(held) >= 2:
        n = min(n_kid if n_kid > 0 else 16, len(held), len(faces))  # n_kid 0: no realism (a smoke run's KID
        kid_idx = rng.choice(len(faces), size=n, replace=False)       # of 3 photos says nothing), judges still read
        kf = faces.crops(kid_idx)
        real = held.crops(range(len(held)))
        mtf = kf[:0]
        if n_kid > 0:
            kref = bank[rng.integers(len(bank), size=n)] if styled else None
            gen = generate(model, kf, kref, seg=seg)[0]
            mtf, skipped = mtf_on_crops(kf, seed)
            res["realism"] = {**realism(gen, mtf, real, seed), "mtf_skipped": skipped, "n_held_out": len(held)}
        res["judge_on_real"] = judge_on_real(seg, det, real, kf)
        if len(mtf):
            cov_mtf = seg_coverage(seg.predict_uint8(mtf).astype(bool))
            res["judge_on_real"]["seg_correct_mtf"] = float(cov_mtf["correct"].mean())
    res["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(run_dir / "quality.json", json.dumps(_finite(res), indent=2) + "\n")
    save_grid(run_dir / "quality_grid.png", src, refs, outs if styled else outs * len(refs))
    log.info("read-out: seg_correct %.2f, ssim %.3f", res["seg_correct"], res["nonmask_full"]["ssim"])
    return res
