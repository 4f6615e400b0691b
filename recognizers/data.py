"""Training data for recognizers: sources -> labelled samples -> split -> DataLoader.

Sources (several may be mixed, by ``--data`` repeated):

* a manifest written by ``mfrbench align`` (aligned crops) or ``mfrbench generate`` (masked
  crops; ``kind == "masked"`` in ``manifest.json``): its ``ok`` rows, ``identity`` and
  ``out_path`` columns;
* a plain folder ``<identity>/<image>`` of aligned 112x112 crops (read as unmasked);
* an insightface RecordIO set (a folder with ``train.rec`` / ``train.idx``, or the ``.rec`` file):
  ``faces_webface_112x112``, ``faces_emore``, the kit's ``celeba-rec``; read as unmasked, images
  decoded from the ``.rec`` file on demand (:mod:`mfrbench.recordio`), identities named by class id.

Identities are matched by their label string across sources (a masked copy of CelebA keeps
CelebA's identities) and remapped to contiguous ints ``0..C-1`` in sorted order. Whole
identities are held out for validation (open-set: the classifier never sees them).

Randomness is a pure function of ``(seed, epoch, index)``: batch order comes from the
sampler's per-epoch seed and each image's augmentation from its own generator, so a run is
reproducible whatever the worker count and resumes exactly mid-epoch.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from mfrbench.errors import MfrbenchError, SkipImage
from mfrbench.generate import UNMASKED, GeneratorIdentity, identity_from_meta
from mfrbench.imageio import is_image_name, read_bytes
from mfrbench.manifest import MANIFEST_CSV, read_manifest, read_manifest_meta
from mfrbench.recordio import RecordFile, find_recordio, open_recordset

log = logging.getLogger(__name__)
SIZE = 112


@dataclass(frozen=True)
class Sample:
    path: str
    identity: str
    masked: bool
    offset: int = -1          # byte offset of the record when ``path`` is a RecordIO ``.rec`` file

    @property
    def key(self) -> tuple[str, int]:
        return self.path, self.offset


@dataclass
class Source:
    """One ``--data`` argument after reading: its samples and what it is."""

    spec: str
    kind: str                 # aligned | masked | folder | ...
    identity: GeneratorIdentity  # the generator that made it (family/variant "none" for unmasked data)
    samples: list[Sample]
    missing: int = 0          # rows whose image file does not exist (skipped)

    @property
    def generator(self) -> str:
        """The generator's variant (``mfgan-no-inv``, ...; ``none`` for unmasked data)."""
        return self.identity.variant


@dataclass
class TrainData:
    """Train and validation samples with contiguous train labels, plus a summary for the log."""

    train: list[Sample]
    train_labels: np.ndarray                       # (N,) int64 in 0..num_classes-1
    classes: list[str]                             # label -> identity string
    val: list[Sample]
    val_labels: np.ndarray                         # (M,) int64 identity index among val identities
    sources: list[Source]
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def identity(self) -> GeneratorIdentity:
        """The generators of all sources, joined deterministically (:meth:`GeneratorIdentity.join`)."""
        return GeneratorIdentity.join(s.identity for s in self.sources)

    @property
    def generator(self) -> str:
        return self.identity.variant


# ----------------------------------------------------------------------------- sources
def _generator_of(meta: dict, spec: str | os.PathLike) -> GeneratorIdentity:
    """The one generator record a masked manifest carries (``mfrbench.generate``); unmasked for other kinds."""
    return identity_from_meta(meta, spec)


def read_source(spec: str | os.PathLike) -> Source:
    """Read one ``--data`` argument: a manifest (dir or CSV) or a ``<identity>/<image>`` folder."""
    p = Path(spec)
    rec = find_recordio(p)
    if rec is not None:
        rs = open_recordset(rec)
        path = os.path.abspath(rec)
        rows = [Sample(path, str(int(lab)), False, int(off)) for off, lab in zip(rs.offsets, rs.labels)]
        return Source(str(spec), "recordio", UNMASKED, rows)
    if (p.is_file() and p.suffix == ".csv") or (p / MANIFEST_CSV).is_file():
        meta = read_manifest_meta(p)
        df = read_manifest(p, status="ok")
        kind = str(meta.get("kind", "aligned"))
        masked_col = df["is_masked"].tolist() if "is_masked" in df.columns else [False] * len(df)
        rows = [Sample(os.path.abspath(path), str(ident), kind == "masked" or bool(m))
                for path, ident, m in zip(df["abs_out_path"], df["identity"], masked_col)]
        no_identity = sum(1 for r in rows if not r.identity)
        if no_identity:
            log.warning("%s: %d rows without identity skipped", spec, no_identity)
            rows = [r for r in rows if r.identity]
        gen = _generator_of(meta, spec)
    elif p.is_dir():
        kind, gen = "folder", UNMASKED
        rows = [Sample(os.path.abspath(f), d.name, False) for d in sorted(p.iterdir()) if d.is_dir()
                for f in sorted(d.iterdir()) if is_image_name(f)]
    else:
        raise MfrbenchError(f"--data {spec}: not a manifest (no {MANIFEST_CSV}) "
                            "nor a folder of <identity>/<image> crops nor a RecordIO set (train.rec + train.idx)")
    present = [r for r in rows if os.path.isfile(r.path)]
    return Source(str(spec), kind, gen, present, missing=len(rows) - len(present))


def mix_by_mask_ratio(samples: list[Sample], ratio: float | None, seed: int) -> list[Sample]:
    """Subsample one group so masked / all == ``ratio`` (deterministic); ``None`` keeps everything."""
    if ratio is None:
        return samples
    masked = [s for s in samples if s.masked]
    plain = [s for s in samples if not s.masked]
    if ratio > 0 and not masked:
        raise MfrbenchError(f"--mask-ratio {ratio} needs masked images, but no --data source is masked")
    if ratio < 1 and not plain:
        raise MfrbenchError(f"--mask-ratio {ratio} needs unmasked images, but every --data source is masked")
    rng = np.random.default_rng([seed, 7])
    if ratio >= 1:
        return masked
    if ratio <= 0:
        return plain
    if len(masked) / (len(masked) + len(plain)) > ratio:
        keep, fixed, n = masked, plain, round(ratio * len(plain) / (1 - ratio))
    else:
        keep, fixed, n = plain, masked, round(len(masked) * (1 - ratio) / ratio)
    chosen = sorted(rng.choice(len(keep), size=min(n, len(keep)), replace=False).tolist())
    return sorted(fixed + [keep[i] for i in chosen], key=lambda s: (s.identity, s.path, s.offset))


def split_identities(samples: list[Sample], val_identities: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out whole identities (with >= 2 images, so each has a gallery and a probe image)."""
    counts = Counter(s.identity for s in samples)
    eligible = sorted(i for i, n in counts.items() if n >= 2)
    n_val = int(val_identities) if val_identities >= 1 else round(val_identities * len(counts))
    most = min(len(eligible), max(len(counts) - 2, 0))  # keep >= 2 training identities
    if val_identities >= 1 and n_val > most:  # issue 12: a count the data cannot give is a mistake, not clamped
        raise MfrbenchError(f"--val-identities {n_val} is more than the data can hold out: {len(counts)} identities, "
                            f"{len(eligible)} with 2+ images, 2 kept for training; give at most {most} or a "
                            "fraction (< 1)")
    n_val = min(n_val, most)
    rng = np.random.default_rng([seed, 11])
    held = set(rng.permutation(eligible)[:n_val].tolist()) if n_val > 0 else set()
    return [s for s in samples if s.identity not in held], [s for s in samples if s.identity in held]


def build_train_data(specs: Sequence[str], *, mask_ratio: float | None = None, val_identities: float = 0.2,
                     seed: int = 0, metric_loss: bool = False) -> TrainData:
    """Read, mix, split and label the training data; raise a one-line error on unusable input."""
    if not specs:
        raise MfrbenchError("no --data given: pass an aligned/masked manifest folder or an <identity>/<image> folder")
    sources = [read_source(s) for s in specs]
    notes = []
    for src in sources:
        if src.missing:
            notes.append(f"{src.spec}: skipped {src.missing} rows whose image file is missing")
    samples = sorted({s.key: s for src in sources for s in src.samples}.values(),
                     key=lambda s: (s.identity, s.path, s.offset))
    if not samples:
        raise MfrbenchError(f"empty dataset: no readable images in {', '.join(specs)}")
    samples = mix_by_mask_ratio(samples, mask_ratio, seed)
    train, val = split_identities(samples, val_identities, seed)
    if metric_loss:
        counts = Counter(s.identity for s in train)
        singles = {i for i, n in counts.items() if n < 2}
        if singles:
            notes.append(f"triplet: excluded {len(singles)} identities with a single image "
                         f"({sum(counts[i] for i in singles)} images)")
            train = [s for s in train if s.identity not in singles]
    classes = sorted({s.identity for s in train})
    if len(classes) < 2:
        raise MfrbenchError(f"need at least 2 training identities, but the data has {len(classes)} "
                            f"({len(train)} images{' after holding out validation identities' if val else ''})")
    index = {c: i for i, c in enumerate(classes)}
    val_index = {c: i for i, c in enumerate(sorted({s.identity for s in val}))}
    return TrainData(train, np.array([index[s.identity] for s in train], np.int64), classes,
                     val, np.array([val_index[s.identity] for s in val], np.int64), sources, notes)


# ----------------------------------------------------------------------------- images
def decode_crop(path: str, offset: int = -1, records: dict[str, RecordFile] | None = None) -> np.ndarray | None:
    """Read an aligned crop as ``(112, 112, 3)`` uint8 RGB; ``None`` when it cannot be decoded.

    ``offset >= 0``: ``path`` is a RecordIO file and the crop is its record at that byte offset
    (``records`` caches one open :class:`RecordFile` per file).
    """
    if offset >= 0:
        records = {} if records is None else records
        rf = records.get(path) or records.setdefault(path, RecordFile(path))
        buf = np.frombuffer(rf.record(offset).image, np.uint8)
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    else:
        # Bytes through mfrbench's reader, then decode (issue 12): cv2.imread blocks on a FIFO and crashes the
        # process on a file name that is not UTF-8; a header claiming too many pixels is unreadable, not fatal.
        try:
            buf = np.frombuffer(read_bytes(path), np.uint8)
            bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        except (SkipImage, cv2.error):
            bgr = None
    if bgr is None:
        return None
    if bgr.shape[:2] != (SIZE, SIZE):
        bgr = cv2.resize(bgr, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def augment(img: np.ndarray, rng: np.random.Generator, *, flip: bool, jitter: float, gray: float = 0.0
            ) -> np.ndarray:
    """Random horizontal flip, mild brightness / contrast / saturation jitter, and (with probability
    ``gray``) a grayscale copy in all three channels (uint8 in and out)."""
    if flip and rng.random() < 0.5:
        img = img[:, ::-1]
    if gray > 0 and rng.random() < gray:
        y = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        img = np.repeat(np.clip(y + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if jitter > 0:
        b, c, s = 1.0 + rng.uniform(-jitter, jitter, size=3)
        x = img.astype(np.float32) * b
        gray = x @ np.array([0.299, 0.587, 0.114], np.float32)          # (H, W)
        x = (x - gray.mean()) * c + gray.mean()
        x = gray[..., None] + (x - gray[..., None]) * s
        img = np.clip(x, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


class FaceImages(Dataset):
    """Decodes (and augments) crops in DataLoader workers; items are ``(uint8 (3,112,112), label)``.

    Indices are ``(index, epoch)`` pairs from the samplers below, so each image's augmentation
    comes from ``default_rng([seed, epoch, index])`` whichever worker loads it.
    """

    def __init__(self, samples: Sequence[Sample], labels: np.ndarray, *, train: bool, seed: int = 0,
                 flip: bool = True, jitter: float = 0.1, gray: float = 0.0,
                 augment: Callable[[np.ndarray, int, int, int], np.ndarray] | None = None) -> None:
        self.paths = [s.path for s in samples]
        self.offsets = np.array([s.offset for s in samples], np.int64)
        self.records: dict[str, RecordFile] = {}
        self.labels = np.asarray(labels, np.int64)
        self.train, self.seed, self.flip, self.jitter, self.gray = train, seed, flip, jitter, gray
        self.augment = augment      # e.g. MaskAugment: (img, seed, epoch, index) -> img, before flip/jitter

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int] | None:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        img = decode_crop(self.paths[index], int(self.offsets[index]), self.records)
        if img is None:
            return None
        if self.train:
            if self.augment is not None:
                img = self.augment(img, self.seed, epoch, index)
            img = augment(img, np.random.default_rng([self.seed, epoch, index]), flip=self.flip, jitter=self.jitter,
                          gray=self.gray)
        return torch.from_numpy(img).permute(2, 0, 1), int(self.labels[index])


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack good items; unreadable ones are dropped and counted (third element)."""
    good = [b for b in batch if b is not None]
    if not good:
        return torch.empty(0, 3, SIZE, SIZE, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), len(batch)
    return (torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good], dtype=torch.int64),
            len(batch) - len(good))


# ----------------------------------------------------------------------------- samplers
class EpochBatchSampler(Sampler):
    """Shuffled batches for one process: torch's ``DistributedSampler`` (seed + epoch) cut into
    local batches of ``batch_size // world`` and tagged with the epoch; ``start`` skips batches
    already trained on (mid-epoch resume) without loading them."""

    def __init__(self, n: int, batch_size: int, *, seed: int, rank: int = 0, world: int = 1) -> None:
        self.local = batch_size // world
        if self.local < 1:
            raise MfrbenchError(f"--batch-size {batch_size} is smaller than the {world} processes")
        self.dist = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                       drop_last=True)
        self.epoch, self.start = 0, 0
        if len(self) == 0:
            raise MfrbenchError(f"{n} training images make no full batch of {batch_size}; lower --batch-size")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start
        self.dist.set_epoch(epoch)

    def __len__(self) -> int:
        return self.dist.num_samples // self.local

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        idx = list(self.dist)
        for b in range(self.start, len(self)):
            yield [(i, self.epoch) for i in idx[b * self.local:(b + 1) * self.local]]


class PKBatchSampler(Sampler):
    """P identities x K images per batch (metric losses), identical sequence on every rank; rank r
    takes every world-th local batch. Identities with fewer than K images are sampled with
    replacement; those with a single image must be excluded before (see ``build_train_data``)."""

    def __init__(self, labels: np.ndarray, batch_size: int, k: int, *, seed: int, rank: int = 0,
                 world: int = 1) -> None:
        self.local = batch_size // world
        if self.local % k or self.local < 2 * k:
            raise MfrbenchError(f"P x K batches: the per-process batch {self.local} must be a multiple of "
                                f"--images-per-identity {k} with at least 2 identities")
        self.p, self.k, self.seed, self.rank, self.world = self.local // k, k, seed, rank, world
        groups = defaultdict(list)
        for i, lab in enumerate(labels):
            groups[int(lab)].append(i)
        self.groups = [np.array(groups[c]) for c in sorted(groups)]
        if len(self.groups) < self.p:
            raise MfrbenchError(f"P x K batches need {self.p} identities per batch, but the data has "
                                f"{len(self.groups)}; lower --batch-size or raise --images-per-identity")
        self.steps = len(labels) // batch_size
        if self.steps == 0:
            raise MfrbenchError(f"{len(labels)} training images make no full batch of {batch_size}")
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch, 3])
        queue: list[int] = []
        for b in range(self.steps * self.world):
            while len(queue) < self.p:
                queue.extend(rng.permutation(len(self.groups)).tolist())
            ids, queue = queue[:self.p], queue[self.p:]
            batch = [int(i) for c in ids for i in rng.choice(self.groups[c], self.k, len(self.groups[c]) < self.k)]
            if b % self.world == self.rank and b // self.world >= self.start:
                yield [(i, self.epoch) for i in batch]


def make_loader(dataset: FaceImages, batch_sampler: Sampler | None = None, *, workers: int,
                batch_size: int = 64, pin_memory: bool = False) -> DataLoader:
    """A loader over ``dataset``; ``batch_sampler=None`` means sequential (evaluation) batches.

    ``pin_memory`` when the batches go to a CUDA device (pinned pages are wasted on a CPU run).
    """
    kw = dict(num_workers=workers, collate_fn=collate, pin_memory=pin_memory, persistent_workers=workers > 0)
    if workers > 0:
        kw["prefetch_factor"] = 2
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **kw)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, **kw)
