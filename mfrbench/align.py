"""ArcFace-style alignment: 5 landmarks -> similarity transform -> 112x112 crop.

The transform is fitted by **least squares over all five points** (Umeyama 1991, as
insightface's ``norm_crop`` does), not by OpenCV's ``estimateAffinePartial2D`` with its default
RANSAC, which keeps only 2-4 of the 5 points on most faces and costs measurable accuracy
(``../shared/reference/metrics.md``).

The library entry points are :func:`norm_crop` (one image) and :func:`align_dataset` (a whole
dataset into an aligned set + manifest; the ``mfrbench align`` command).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfrbench.datasets import Dataset, FaceRecord
from mfrbench.errors import MfrbenchError, SkipImage
from mfrbench.imageio import content_hash, decode_rgb, output_rel, read_bytes, safe_output_path, save_image

#: insightface's ArcFace 5-point template for 112x112 crops (image-left eye first).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, shift) mapping src -> dst.

    Returns:
        (2, 3) matrix ``M`` with ``dst ~= src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[1, 1] = -1  # no reflections
    R = U @ D @ Vt
    var_s = (s_c ** 2).sum() / len(src)
    scale = (S * np.diag(D)).sum() / var_s
    t = mu_d - scale * R @ mu_s
    return np.hstack([scale * R, t[:, None]]).astype(np.float32)


def template_for(size: int = 112) -> np.ndarray:
    """The ArcFace 5-point template of a ``size`` x ``size`` crop, placed as insightface's ``norm_crop`` places it.

    insightface (``python-package/insightface/utils/face_align.py``, ``estimate_norm``): a size divisible by
    112 scales the 112-px template by ``size / 112``; one divisible by 128 scales it by ``size / 128`` and
    shifts it right by ``8 * size / 128`` (at 128 px: the 112-px crop's face at the same scale, with 8 px
    more on each side and 16 px more below). Other sizes (insightface refuses them) scale by ``size / 112``.
    So 224 is the 112 crop enlarged, while 128 and 256 show more around the same face.
    """
    if size % 112 == 0 or size % 128 != 0:
        return ARCFACE_TEMPLATE * np.float32(size / 112.0)
    t = ARCFACE_TEMPLATE * np.float32(size / 128.0)
    t[:, 0] += np.float32(8.0 * size / 128.0)
    return t


def estimate_norm(lmk5: np.ndarray, size: int = 112) -> np.ndarray:
    return umeyama_similarity(np.asarray(lmk5, np.float32).reshape(5, 2), template_for(size))


def transform_points(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float32).reshape(-1, 2)
    return pts @ M[:, :2].T + M[:, 2]


def norm_crop(rgb: np.ndarray, lmk5: np.ndarray, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``rgb`` so its 5 landmarks land on the ArcFace template; return (crop, M)."""
    import cv2

    M = estimate_norm(lmk5, size)
    crop = cv2.warpAffine(rgb, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)
    return crop, M


@dataclass(frozen=True)
class AlignConfig:
    detector: str = "yunet"
    landmarker: str = "auto"        # pfld | mediapipe | none | auto
    landmarks: str = "auto"         # auto: use annotated landmarks when the dataset has them
    score_threshold: float = 0.6
    size: int = 112
    ext: str = ".jpg"
    quality: int = 95
    min_side: int = 32
    model_pack: str = ""            # --detector insightface: the user's insightface model pack folder

    def __post_init__(self) -> None:
        check_face_options(self.detector, self.landmarker, self.score_threshold)
        if self.detector == "insightface" and not self.model_pack:
            raise MfrbenchError("--detector insightface needs --model-pack DIR (a folder holding the pack's "
                                "det_*.onnx, e.g. ~/.insightface/models/buffalo_l)")
        if self.size < 16:
            raise MfrbenchError(f"--size must be at least 16 px (the ArcFace template needs room), got {self.size}")
        if not 1 <= self.quality <= 100:
            raise MfrbenchError(f"Expected a JPEG quality in 1..100, but got {self.quality}")


def check_face_options(detector: str, landmarker: str, score_threshold: float) -> None:
    """Refuse, before any image is read, a detector or landmark model that is not registered and a score
    threshold outside [0, 1] (a detector score is a probability): one line listing what is valid."""
    from mfrbench.faces import DETECTORS, LANDMARKERS

    DETECTORS.get(detector)  # UnknownNameError: "Unknown face detector 'x'. Available: ..."
    if landmarker != "auto" and landmarker not in LANDMARKERS:
        raise MfrbenchError(f"Unknown landmark model {landmarker!r}. Available: auto, {', '.join(LANDMARKERS.names())}")
    if not 0.0 <= score_threshold <= 1.0:
        raise MfrbenchError(f"--score-threshold must be in [0, 1] (a detector score), got {score_threshold}")


class Aligner:
    """Per-process alignment worker: owns its detector and landmark model."""

    def __init__(self, out_dir: str, cfg: dict) -> None:
        from mfrbench.faces import DETECTORS, create_landmarker

        self.cfg = AlignConfig(**cfg)
        self.out_dir = Path(out_dir)
        self._det = None
        self._det_factory = lambda: DETECTORS.create(self.cfg.detector, score_threshold=self.cfg.score_threshold,
                                                     model_pack=self.cfg.model_pack or None)
        self.lm = create_landmarker(self.cfg.landmarker)
        self.lm_name = getattr(self.lm, "name", "none")

    @property
    def det(self):
        if self._det is None:  # lazily: a fully annotated dataset never needs the detector
            self._det = self._det_factory()
        return self._det

    def __call__(self, rec: FaceRecord) -> dict:
        from mfrbench.faces import Face, bbox_from_points, pick_main_face
        from mfrbench.pipeline import base_row

        row = base_row(rec)
        out_rel = output_rel(rec.key, self.cfg.ext)
        out_abs = safe_output_path(self.out_dir, out_rel)  # an unsafe key is refused before any work
        data = read_bytes(rec.path)
        row["sha1"] = content_hash(data)
        rgb, mode = decode_rgb(data, min_side=self.cfg.min_side, name=rec.key)
        row.update(width=rgb.shape[1], height=rgb.shape[0], src_mode=mode)
        use_annot = self.cfg.landmarks in ("auto", "annotations") and rec.lmk5 is not None
        if self.cfg.landmarks == "annotations" and rec.lmk5 is None:
            raise SkipImage("no_annotation", "the dataset has no landmarks for this image")
        if use_annot:
            lmk5 = np.asarray(rec.lmk5, np.float32).reshape(5, 2)
            face = Face(bbox_from_points(lmk5), float("nan"), lmk5)
            row.update(lmk_source="annotation", n_faces=1)
        else:
            faces = self.det.detect(rgb)
            row["n_faces"] = len(faces)
            face = pick_main_face(faces, rgb.shape)
            if face is None:
                raise SkipImage("no_face", f"{self.cfg.detector} found no face above score {self.cfg.score_threshold}")
            row["lmk_source"] = f"detector:{self.cfg.detector}"
        if rec.lmk68 is not None and use_annot:
            face.lmk68 = np.asarray(rec.lmk68, np.float32).reshape(68, 2)
        elif self.lm is not None:
            face.lmk68 = self.lm.landmarks(rgb, face)
        crop, M = norm_crop(rgb, face.lmk5, self.cfg.size)
        save_image(out_abs, crop, quality=self.cfg.quality)
        row.update(
            status="ok", out_path=out_rel, score=round(face.score, 4) if face.score == face.score else "",
            bbox=np.round(face.bbox, 2).tolist(), lmk5=np.round(face.lmk5, 2).ravel().tolist(),
            lmk5_crop=np.round(transform_points(M, face.lmk5), 2).ravel().tolist(),
            landmarker=(self.lm_name if face.lmk68 is not None and not use_annot
                        else ("annotation" if face.lmk68 is not None else "")),
            lmk68=np.round(face.lmk68, 2).ravel().tolist() if face.lmk68 is not None else None,
            lmk68_crop=(np.round(transform_points(M, face.lmk68), 2).ravel().tolist()
                        if face.lmk68 is not None else None),
        )
        return row


def align_dataset(ds: Dataset, out_dir: str | os.PathLike, *, limit: int | None = None, workers: int = 1,
                  cfg: AlignConfig | None = None, resume: bool = True, dedupe: bool = True,
                  progress: bool = True, shard: "str | None" = None, engine: str = "local") -> dict:
    """Align every image of ``ds`` into ``out_dir/images/`` and write the manifest.

    ``shard``: ``"i/N"`` or a :class:`~mfrbench.shards.Shard`: only that shard's images
    (``mfrbench merge`` joins the shard folders). ``engine``: ``local`` or ``ray`` (same output).
    Returns the manifest metadata (``inputs``, ``ok``,
    ``skipped``, skip reasons, config).
    """
    from dataclasses import asdict

    from mfrbench.imageio import refuse_output_inside
    from mfrbench.pipeline import process_records

    refuse_output_inside(out_dir, ds.root)
    from mfrbench.shards import Shard

    shard = Shard.parse(shard)  # a bad --shard fails before any work
    cfg = cfg or AlignConfig()
    config = {"stage": "align", "dataset": ds.name, "root": str(ds.root), "limit": limit, "dedupe": dedupe,
              **{k: v for k, v in asdict(cfg).items() if k != "model_pack" or v}}  # runs without a pack resume
    total = limit if limit is not None else ds.count()
    return process_records(ds.records(limit), out_dir, kind="aligned", config=config, factory=Aligner,
                           factory_kwargs={"out_dir": str(out_dir), "cfg": asdict(cfg)}, workers=workers,
                           total=total, resume=resume, dedupe=dedupe, desc=f"align {ds.name}",
                           progress=progress, extra_meta={"dataset": ds.name, **ds.info}, shard=shard,
                           engine=engine)
