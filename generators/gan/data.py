"""The two training domains in memory (*Face*, *Mask*) and the batch of each step.

:func:`load_domain` accepts an aligned manifest (``mfrbench align`` output), an insightface RecordIO
set of aligned crops (``train.rec`` or its folder, e.g. ``../shared/data/celeba-rec``), a folder of
photos or a dataset adapter name; folders/datasets are detected and aligned once with YuNet into
``RUN/data/<domain>/`` (a cached manifest, resumable). Crops are held in memory as ``uint8`` at the
training size; :meth:`DomainData.crops` reads chosen crops back at their stored resolution (the
read-outs composite at the crop's own size). :meth:`DomainData.split` holds out a fixed share of a
domain (the real masked photos that KID/FID compare with are never trained on).
:func:`step_batch` makes the batch of step ``n`` a pure function of ``(seed, n)``, which is what
makes a resumed run replay exactly.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from mfrbench.errors import MfrbenchError

if TYPE_CHECKING:
    from mfrbench.generators.gan.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class GANBatch:
    """One step's real images of both domains."""

    faces: torch.Tensor     # (B, 3, S, S) in [-1, 1], domain Face
    masks: torch.Tensor     # (B, 3, S, S) in [-1, 1], domain Mask
    face_idx: np.ndarray | None = None    # which face crops (and flipped or not): per-face data of a family
    face_flips: np.ndarray | None = None


@dataclass
class DomainData:
    """Aligned crops of one domain, in memory: ``images`` uint8 (N, 3, S, S); ``keys`` per crop."""

    name: str
    images: torch.Tensor
    keys: list[str]
    source: str
    #: indices -> uint8 (n, H, W, 3) crops at their stored resolution (None: only the training size exists)
    reader: Callable[[Sequence[int]], np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    def crops(self, idx: Sequence[int]) -> np.ndarray:
        """uint8 ``(n, H, W, 3)`` crops ``idx`` at their stored resolution (the training size without a reader)."""
        idx = [int(i) for i in idx]
        if self.reader is not None:
            return self.reader(idx)
        return self.images[torch.as_tensor(idx, dtype=torch.long)].permute(0, 2, 3, 1).numpy()

    def subset(self, idx: Sequence[int]) -> "DomainData":
        idx = np.asarray(idx, dtype=np.int64)
        reader = None
        if self.reader is not None:
            parent = self.reader
            reader = lambda sub: parent([int(idx[i]) for i in sub])  # noqa: E731
        return DomainData(self.name, self.images[torch.as_tensor(idx)], [self.keys[i] for i in idx], self.source,
                          reader)

    def split(self, holdout: float) -> tuple["DomainData", "DomainData | None"]:
        """``(kept, held_out)``: a crop is held out when a hash of its key falls below ``holdout`` (stable
        under any order, limit or seed); ``holdout=0`` keeps everything (``held_out`` is None)."""
        if holdout <= 0:
            return self, None
        is_held = held_out_keys(self.keys, holdout)
        held = np.flatnonzero(is_held)
        kept = np.flatnonzero(~is_held)
        if not len(held) or not len(kept):
            hint = (" (these crops may already be a training split made by this rule: pass the whole set)"
                    if not len(held) and len(self) >= 20 else " (pass more photos, or set the hold-out share to 0)")
            raise MfrbenchError(f"domain {self.name}: holding out {holdout:.0%} of {len(self)} crops leaves "
                                f"{len(kept)} to train on and {len(held)} held out{hint}")
        return self.subset(kept), self.subset(held)

    def batch(self, idx: np.ndarray, flips: np.ndarray, device: torch.device) -> torch.Tensor:
        x = self.images[torch.as_tensor(idx)].to(device).float().div_(127.5).sub_(1.0)  # (B, 3, S, S)
        if flips.any():
            f = torch.as_tensor(flips, device=device)
            x[f] = x[f].flip(-1)
        return x


def to_tensor_images(crops: list[np.ndarray], size: int) -> torch.Tensor:
    """uint8 HWC crops -> uint8 (N, 3, size, size) (area-resized when needed)."""
    import cv2

    out = np.stack([c if c.shape[0] == size else
                    cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA if c.shape[0] > size else cv2.INTER_CUBIC)
                    for c in crops])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S)


def recordio_path(spec: str | os.PathLike) -> Path | None:
    """The ``train.rec`` that ``spec`` names (the file, or a folder with ``train.rec`` and no manifest), else None."""
    from mfrbench.recordio import find_recordio

    p = Path(spec)
    return None if (p.is_dir() and (p / "manifest.csv").is_file()) else find_recordio(p)


def read_recordio_crops(rec: Path, limit: int | None = None) -> tuple[list[str], Callable[[Sequence[int]], np.ndarray]]:
    """Image records of an insightface RecordIO set (:mod:`mfrbench.recordio`): ``(keys, reader)``, where
    ``reader(idx)`` decodes those crops as uint8 RGB ``(n, H, W, 3)``. Keys are ``rec/<record position>``."""
    import io

    from PIL import Image

    from mfrbench.recordio import RecordFile, open_recordset

    rs = open_recordset(rec)
    offsets = rs.offsets[:limit] if limit is not None else rs.offsets
    f = RecordFile(rs.rec)

    def reader(ix: Sequence[int]) -> np.ndarray:
        return np.stack([np.asarray(Image.open(io.BytesIO(f.record(int(offsets[i])).image)).convert("RGB"))
                         for i in ix])

    return [f"rec/{i}" for i in range(len(offsets))], reader


def _aligned_manifest(spec: str, cache: Path, *, masked: bool, limit: int | None, align_size: int,
                      progress: bool) -> Path:
    """Resolve ``spec`` (manifest dir/CSV | image folder | dataset name) to an aligned manifest dir."""
    from mfrbench.align import AlignConfig, align_dataset
    from mfrbench.datasets import DATASETS, create_dataset

    p = Path(spec)
    if p.is_file() and p.suffix == ".csv":
        return p.parent
    if p.is_dir() and (p / "manifest.csv").is_file():
        return p
    if p.is_dir():  # any tree of photos, walked recursively (identity folders are not needed here)
        from mfrbench.datasets import Dataset, FaceRecord, walk_images

        root = p.resolve()
        ds = Dataset("folder", root, lambda: (FaceRecord(str(f), None, masked, "folder", f.relative_to(root).as_posix())
                                              for f in walk_images(root)))
    elif spec in DATASETS:
        ds = create_dataset(spec)
    elif not p.exists():  # issue 12: say so, not "no face was found"
        raise MfrbenchError(f"{spec} does not exist: give an aligned manifest folder, an image folder or a dataset "
                            f"name ({', '.join(DATASETS.names())})")
    else:
        raise MfrbenchError(f"{spec} is neither an aligned manifest, an image folder nor a dataset name")
    cfg = AlignConfig(landmarker="none", size=align_size, ext=".png")
    log.info("aligning %s into %s (cached for later runs)", spec, cache)
    meta = align_dataset(ds, cache, limit=limit, cfg=cfg, workers=1, resume=True, progress=progress)
    if not meta["ok"]:
        raise MfrbenchError(f"no face was found in any image of {spec}")
    return cache


def load_domain(name: str, spec: str | os.PathLike, cache: Path, *, size: int, limit: int | None = None,
                masked: bool = False, min_face_px: int = 0, progress: bool = True) -> DomainData:
    """Load one domain's aligned crops (aligning a folder/dataset once into ``cache``).

    ``limit`` caps the number of *input* images aligned and of crops kept; faces whose detected
    box is narrower than ``min_face_px`` are dropped (they upsample to blur).
    """
    from mfrbench.imageio import load_rgb
    from mfrbench.manifest import read_manifest

    rec = recordio_path(spec)
    if rec is not None:  # aligned crops already (insightface layout): nothing to detect or align
        keys, reader = read_recordio_crops(rec, limit)
        crops = reader(range(len(keys)))
        return DomainData(name, to_tensor_images(list(crops), size), keys, str(rec), reader)
    mdir = _aligned_manifest(str(spec), cache, masked=masked, limit=limit, align_size=max(112, size),
                             progress=progress)
    df = read_manifest(mdir, status="ok")
    if min_face_px and "bbox" in df.columns:
        w = df["bbox"].map(lambda b: (b[2] - b[0]) if isinstance(b, list) and len(b) == 4 else np.inf)
        df = df[w >= min_face_px]
    if limit is not None:
        df = df.iloc[:limit]
    if df.empty:
        raise MfrbenchError(f"domain {name}: no usable aligned crops in {mdir}")
    paths = list(df["abs_out_path"])
    crops = [load_rgb(p, min_side=1) for p in paths]
    return DomainData(name, to_tensor_images(crops, size), list(df["key"]), str(mdir),
                      lambda ix: np.stack([load_rgb(paths[i], min_side=1) for i in ix]))


def fixed_sample_batch(faces: DomainData, masks: DomainData, n: int, device: torch.device, seed: int) -> GANBatch:
    """The batch every sample grid of a run shows (the same images at every step, no flips)."""
    rng = np.random.default_rng([seed, 999_999_999])
    fi = rng.choice(len(faces), size=min(n, len(faces)), replace=False)
    mi = rng.choice(len(masks), size=min(n, len(masks)), replace=False)
    k = min(len(fi), len(mi))
    z = np.zeros(k, bool)
    return GANBatch(faces.batch(fi[:k], z, device), masks.batch(mi[:k], z, device))


def step_batch(faces: DomainData, masks: DomainData, step: int, train: "TrainConfig",
               device: torch.device) -> tuple[GANBatch, np.random.Generator]:
    """The batch of step ``step`` and the step's RNG, both a pure function of ``(seed, step)``."""
    rng = np.random.default_rng([train.seed, step])
    b = train.batch_size
    fi, mi = rng.integers(len(faces), size=b), rng.integers(len(masks), size=b)
    ff = rng.random(b) < 0.5 if train.flip else np.zeros(b, bool)
    mf = rng.random(b) < 0.5 if train.flip else np.zeros(b, bool)
    return GANBatch(faces.batch(fi, ff, device), masks.batch(mi, mf, device), fi, ff), rng


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` in ``[-1, 1]`` -> ``(B, H, W, 3)`` uint8 (samples, read-outs, generated images)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def held_out_keys(keys: Sequence[str], share: float) -> np.ndarray:
    """Which keys the hold-out rule keeps out of training: a hash of the key below ``share``.

    One rule for every consumer (the GAN runs' split, ``mfrbench reproduce``'s quality stage), so
    FID/KID are always measured on photos no generator was trained on."""
    u = np.array([int(hashlib.sha1(k.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for k in keys])
    return u < share if len(u) else np.zeros(0, bool)
