"""The dataset generation driver every mask generator uses, the generator contract, and the identity it records.

A generator turns faces into masked faces. Every backend implements :meth:`MaskGenerator.generate`
on a batch; the dataset-level driver here (reading a dataset or aligned manifest, workers, manifest
rows, mask maps, resume) is shared, so a backend file holds only its method. The core never names a
backend: :func:`generate_dataset` takes a :class:`MaskGenerator` instance or a picklable zero-argument
factory that builds one (the CLI builds it from the registry in ``mfrbench.generators``).

Conventions (all backends):

* images are ``uint8`` RGB arrays ``(B, H, W, 3)``; GAN backends convert to ``[-1, 1]`` tensors
  internally;
* landmarks are iBUG-68 ``(B, 68, 2)`` in the same pixel frame as the images (or ``None`` for
  backends that do not need them);
* the output is the masked images (same shape), the binary mask maps ``(B, H, W)`` ``uint8``
  (1 = mask pixel) and one ``dict`` of manifest columns per image (mask type, wearing mode, ...).
  A backend that cannot mask one image of a batch puts ``{"skip": "code: detail"}`` in that
  image's ``info`` (its image and map are ignored); the driver records it as a skipped row and
  the rest of the batch goes on. Raising fails the batch, which the driver then retries image
  by image.

A generator's identity (:class:`GeneratorIdentity`, from :meth:`MaskGenerator.identity`) is written
once, by :func:`generate_dataset`, into the masked manifest's ``manifest.json`` under ``"generator"``.
Every reader (``train-fr``, ``eval``, ``quality``, ``report``) takes it from there with
:func:`read_generator_identity`; nobody guesses the generator from a name, a method string or a
substring.
"""

from __future__ import annotations

import abc
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Union

import numpy as np

from mfrbench.config import config_hash
from mfrbench.errors import MfrbenchError, SkipImage
from mfrbench.seeds import SEED_VERSION, batch_rng, image_rng  # noqa: F401 - re-exported (generators.base)

#: Families a masked set can come from; ``none`` marks unmasked (real) data.
FAMILIES = ("mtf", "cyclegan", "iamgan", "mfgan", "none")
#: How a masked set's mask maps were made: the generator's own mask, or estimated from its output.
MAPS = ("exact", "seg", "diff", "")


@dataclass(frozen=True)
class GeneratorIdentity:
    """Which generator made a masked set, structured so readers match fields, never substrings.

    Attributes:
        family: ``mtf``, ``cyclegan``, ``iamgan``, ``mfgan``, or ``none`` for unmasked data.
        variant: the preset (``mtf``, ``cyclegan``, ``iamgan``, ``mfgan``, ``mfgan-no-inv``, ...);
            result rows call it ``generator``.
        config_hash: 12 hex digits: the GAN run's resolved-config hash (``mtf``: hash of its config).
        run: the GAN run folder ("" for ``mtf``).
        maps: ``exact`` (the map is the generator's own mask), ``seg`` / ``diff`` (estimated from the output).
    """

    family: str
    variant: str
    config_hash: str = ""
    run: str = ""
    maps: str = ""

    def __post_init__(self) -> None:
        if not self.family or not self.variant:
            raise ValueError(f"Expected a non-empty family and variant, but got {self.family!r} / {self.variant!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorIdentity":
        """Build from a manifest's ``"generator"`` record (unknown keys are ignored, missing ones empty)."""
        return cls(**{k: str(d.get(k) or "") for k in ("family", "variant", "config_hash", "run", "maps")})

    def row(self) -> dict:
        """The result-row columns this identity fills (``generator`` is the variant)."""
        return {"generator": self.variant, "generator_family": self.family, "generator_hash": self.config_hash}

    @classmethod
    def join(cls, identities: "Iterable[GeneratorIdentity]") -> "GeneratorIdentity":
        """The identity of data mixed from several sources (a recognizer trained on aligned + masked sets).

        Unmasked sources drop out; the distinct generated ones are sorted (variant, family, hash) and
        each field is joined with ``+`` in that order, so the result does not depend on the order of
        ``--data``. One generated source gives its own identity; none gives :data:`UNMASKED`.
        """
        gens = sorted({i for i in identities if i.family != "none"},
                      key=lambda i: (i.variant, i.family, i.config_hash, i.run, i.maps))
        if not gens:
            return UNMASKED
        if len(gens) == 1:
            return gens[0]
        return cls(**{f: "+".join(getattr(i, f) for i in gens) for f in ("family", "variant", "config_hash", "run",
                                                                         "maps")})


#: The identity of unmasked (real) training or evaluation data.
UNMASKED = GeneratorIdentity(family="none", variant="none")


def identity_from_meta(meta: dict, where: str | os.PathLike = "this manifest") -> GeneratorIdentity:
    """The generator identity of a manifest from its ``manifest.json`` metadata.

    A masked manifest gives its ``"generator"`` record; any other kind (aligned crops, real photos)
    is unmasked data: :data:`UNMASKED`.

    Raises:
        MfrbenchError: a masked manifest without the record (written before identities were recorded).
    """
    if meta.get("kind") != "masked":
        return UNMASKED
    rec = meta.get("generator")
    if not isinstance(rec, dict) or not rec.get("family") or not rec.get("variant"):
        raise MfrbenchError(f"{where} has no generator identity record (written by an older mfrbench): "
                            "regenerate it with `mfrbench generate`")
    return GeneratorIdentity.from_dict(rec)


def read_generator_identity(manifest_dir: str | os.PathLike) -> GeneratorIdentity:
    """The identity of the generator that made a masked manifest (``manifest.json`` ``"generator"``).

    Raises:
        MfrbenchError: the folder is not a masked manifest, or it was written before identities were
            recorded (regenerate it).
    """
    from mfrbench.manifest import read_manifest_meta

    meta = read_manifest_meta(manifest_dir)
    if meta.get("kind") != "masked":
        raise MfrbenchError(f"{manifest_dir} is a {meta.get('kind')!r} manifest, not a masked one "
                            "(the output folder of `mfrbench generate`)")
    return identity_from_meta(meta, manifest_dir)


# =========================================================================== contract
@dataclass
class GeneratedBatch:
    images: np.ndarray                 # (B, H, W, 3) uint8 RGB, masked faces
    mask_maps: np.ndarray              # (B, H, W) uint8, 1 = mask pixel
    info: list[dict] = field(default_factory=list)  # per image: extra manifest columns


class MaskGenerator(abc.ABC):
    """Turns faces into masked faces (see the module docstring for the array conventions).

    Class attributes the dataset driver (:func:`generate_dataset`) reads:

    * ``input_frame``: ``"aligned"`` (default; GANs trained on ArcFace crops): a raw dataset is
      detected and aligned to ``crop_size`` crops first, and the output is the masked crop;
      ``"any"`` (``mtf``): the generator works in the photo's own frame.
    * ``needs_landmarks``: the driver must supply 68 points (an image without them becomes a
      ``no_landmarks`` skipped row). When ``False`` landmarks are still passed if they are free
      (aligned manifests carry them), else ``None``.
    * ``wants_identities``: when ``True``, ``generate`` also receives ``identities=`` (one
      identity or ``None`` per image; MFGAN's per-identity reference choice).
    * ``per_image_rng``: when ``True``, ``rng`` is a *list* of B generators, one per image,
      each derived from (run seed, image key), so outputs do not depend on batching, worker
      count, order or resume. When ``False``, ``rng`` is one generator derived from the seed
      and the batch's keys.
    """

    name: str = "generator"
    input_frame: str = "aligned"
    needs_landmarks: bool = False
    per_image_rng: bool = False

    def config(self) -> dict:
        """JSON-serialisable settings that change outputs (stored in the manifest; a resumed
        run must match them)."""
        return {"name": self.name}

    def identity(self) -> GeneratorIdentity:
        """Which generator this is (written once into the masked manifest).

        The default suits a plugin with no presets and no run folder: family and variant are
        ``name``, the hash is that of :meth:`config`, the maps are of unknown origin. Built-in
        backends override it.
        """
        return GeneratorIdentity(family=self.name, variant=self.name, config_hash=config_hash(self.config()))

    @abc.abstractmethod
    def generate(self, images: np.ndarray, landmarks: np.ndarray | None, *,
                 rng: np.random.Generator) -> GeneratedBatch:
        """Mask a batch of faces. ``rng`` is the only source of randomness (reproducibility)."""


#: What :func:`generate_dataset` accepts: a generator, or a picklable zero-argument callable building one
#: (each worker process calls it once).
GeneratorSource = Union[MaskGenerator, Callable[[], MaskGenerator]]


def build_generator(source: GeneratorSource) -> MaskGenerator:
    """The generator itself, or what the zero-argument factory ``source`` builds."""
    if isinstance(source, MaskGenerator):
        return source
    if not callable(source):
        raise MfrbenchError(f"Expected a MaskGenerator or a zero-argument factory, but got {type(source).__name__} "
                            "(give a registered name to mfrbench.generators.base.generate_dataset instead)")
    gen = source()
    if not isinstance(gen, MaskGenerator):
        raise MfrbenchError(f"Expected the generator factory to build a MaskGenerator, but it built "
                            f"{type(gen).__name__}")
    return gen


# =========================================================================== dataset driver
@dataclass(frozen=True)
class GenerateConfig:
    """Driver settings that change outputs (stored in the manifest config)."""

    ext: str = ".jpg"               # masked image format (.jpg or .png); mask maps are always PNG
    quality: int = 95
    detector: str = "yunet"         # in-the-wild input only
    landmarker: str = "auto"        # in-the-wild input only: pfld | mediapipe | auto
    score_threshold: float = 0.6
    det_max_side: int = 320         # first detection pass on a <= 320 px copy (4x cheaper than 640) ...
    det_retry_side: int = 640       # ... and a second pass at 640 px when it finds no face
    min_side: int = 32
    crop_size: int = 112            # crop size for input_frame='aligned' generators on raw photos

    def __post_init__(self) -> None:
        from mfrbench.align import check_face_options

        check_face_options(self.detector, self.landmarker, self.score_threshold)
        if self.crop_size < 16:
            raise MfrbenchError(f"Expected a crop size of at least 16 px, but got {self.crop_size}")


def fast_decode(data: bytes, *, min_side: int = 32, name: str = "image") -> np.ndarray:
    """:func:`~mfrbench.imageio.decode_rgb`, with OpenCV's 2x faster decoder for complete JPEGs.

    OpenCV is used only for a JPEG that ends with its end-of-image marker (a truncated file
    must fail, and OpenCV would return its decoded top half); it applies EXIF orientation like
    ``decode_rgb``. Anything else, or anything OpenCV refuses, goes through ``decode_rgb``,
    which turns odd files into RGB or into a ``SkipImage``.
    """
    import cv2

    from mfrbench.imageio import decode_rgb

    if data[:3] == b"\xff\xd8\xff" and data.rstrip(b"\x00\r\n ")[-2:] == b"\xff\xd9":
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is not None and bgr.ndim == 3:
            if min(bgr.shape[:2]) < min_side:
                raise SkipImage("too_small", f"{name} is {bgr.shape[1]}x{bgr.shape[0]}, below {min_side} px")
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return decode_rgb(data, min_side=min_side, name=name)[0]


class GenerateWorker:
    """Per-process worker of :func:`generate_dataset`: reads, finds landmarks, masks, writes.

    Called by :func:`mfrbench.pipeline.process_records` with batches of records
    (:meth:`process_batch`); every record comes back as exactly one manifest row.
    """

    def __init__(self, out_dir: str, generator: GeneratorSource, seed: int, cfg: dict, from_manifest: bool) -> None:
        self.out_dir = Path(out_dir)
        self.gen = build_generator(generator)
        self.variant = self.gen.identity().variant
        self.cfg = GenerateConfig(**cfg)
        self.seed = int(seed)
        self.from_manifest = from_manifest
        self._det = None
        self._lm: object = False  # False = not built yet (None = no 68-point model available)

    # ------------------------------------------------------------------ models (in the wild)
    def _detect(self, rgb: np.ndarray) -> list:
        """Faces from a fast pass on a small copy; a full pass only when it finds none."""
        from mfrbench.faces import DETECTORS

        if self._det is None:
            def make(side: int, pad: bool):
                return DETECTORS.create(self.cfg.detector, score_threshold=self.cfg.score_threshold,
                                        max_side=side, pad_retry=pad)

            # The fast pass is only for generators that place masks with the 68 points in the photo
            # frame: on a 320 px copy YuNet's 5 points move by ~0.12 inter-ocular distances (median,
            # CelebA), too much for the ArcFace alignment that aligned-frame generators need.
            use_fast = self.cfg.det_max_side < self.cfg.det_retry_side and self.gen.input_frame == "any"
            fast = make(self.cfg.det_max_side, False) if use_fast else None
            self._det = (fast, make(self.cfg.det_retry_side, True))
        fast, full = self._det
        faces = fast.detect(rgb) if fast is not None else []
        if not faces:
            faces = full.detect(rgb)
        return faces

    @property
    def lm(self):
        if self._lm is False:
            from mfrbench.faces import create_landmarker

            self._lm = create_landmarker(self.cfg.landmarker)
        return self._lm

    # ------------------------------------------------------------------ one input
    def _prepare(self, rec, row: dict) -> tuple[np.ndarray, np.ndarray | None]:
        from mfrbench.imageio import content_hash, output_rel, read_bytes, safe_output_path

        safe_output_path(self.out_dir, output_rel(rec.key, self.cfg.ext))  # an unsafe key is refused before any work
        data = read_bytes(rec.path)
        row["sha1"] = content_hash(data)
        rgb = fast_decode(data, min_side=self.cfg.min_side, name=rec.key)
        lmk68 = np.asarray(rec.lmk68, np.float32).reshape(68, 2) if rec.lmk68 is not None else None
        if self.from_manifest:
            row["frame"] = "aligned"
            if lmk68 is None and self.gen.needs_landmarks:
                raise SkipImage("no_landmarks", "the aligned manifest has no lmk68_crop for this image "
                                                "(realign without --landmarker none)")
            return rgb, lmk68
        lmk5 = np.asarray(rec.lmk5, np.float32).reshape(5, 2) if rec.lmk5 is not None else None
        want68 = self.gen.needs_landmarks
        if lmk68 is not None and (lmk5 is not None or self.gen.input_frame == "any"):
            row["lmk_source"] = "annotation"
        else:
            from mfrbench.faces import pick_main_face

            faces = self._detect(rgb)
            face = pick_main_face(faces, rgb.shape)
            if face is None:
                raise SkipImage("no_face", f"{self.cfg.detector} found no face above score {self.cfg.score_threshold}")
            row.update(lmk_source=f"detector:{self.cfg.detector}", n_faces=len(faces),
                       bbox=np.round(face.bbox, 2).tolist(), score=round(face.score, 4))
            lmk5 = face.lmk5
            if want68:
                if self.lm is None:
                    raise SkipImage("no_landmarks", "no 68-point landmark model available (see `mfrbench doctor`)")
                lmk68 = self.lm.landmarks(rgb, face)
                row["landmarker"] = getattr(self.lm, "name", "")
        if self.gen.input_frame == "any":
            row["frame"] = "photo"
            return rgb, lmk68
        from mfrbench.align import norm_crop, transform_points

        if lmk5 is None:
            from mfrbench.synthetic import five_from_68

            lmk5 = five_from_68(lmk68)
        crop, M = norm_crop(rgb, lmk5, self.cfg.crop_size)
        row["frame"] = "aligned"
        return crop, (transform_points(M, lmk68) if lmk68 is not None else None)

    # ------------------------------------------------------------------ batches
    def __call__(self, rec) -> dict:
        return self.process_batch([rec])[0]

    def process_batch(self, recs: list) -> list[dict]:
        from mfrbench.pipeline import base_row

        rows: list[dict] = []
        ready: list[tuple[int, np.ndarray, np.ndarray | None]] = []
        for i, rec in enumerate(recs):
            row = base_row(rec)
            rows.append(row)
            try:
                img, lmk = self._prepare(rec, row)
            except SkipImage as skip:
                row["reason"] = skip.reason
                continue
            except Exception as err:  # one bad image must not lose the batch
                row["reason"] = f"error: {type(err).__name__}: {err}"
                continue
            ready.append((i, img, lmk))
        groups: dict[tuple, list] = {}
        for item in ready:  # images of one size (and landmark availability) form one generator batch
            groups.setdefault((item[1].shape, item[2] is None), []).append(item)
        for items in groups.values():
            self._generate(recs, rows, items)
        return rows

    def _generate(self, recs: list, rows: list[dict], items: list) -> None:

        keys = [recs[i].key for i, _, _ in items]
        images = np.stack([img for _, img, _ in items])                        # (B, H, W, 3)
        lmks = None if items[0][2] is None else np.stack([lm for _, _, lm in items])  # (B, 68, 2)
        rng = [image_rng(self.seed, k) for k in keys] if self.gen.per_image_rng else batch_rng(self.seed, keys)
        try:
            extra = {"identities": [recs[i].identity for i, _, _ in items]} \
                if getattr(self.gen, "wants_identities", False) else {}
            out = self.gen.generate(images, lmks, rng=rng, **extra)
            if out.images.shape != images.shape or out.mask_maps.shape != images.shape[:3]:
                raise ValueError(f"generator returned images {out.images.shape} / maps {out.mask_maps.shape} "
                                 f"for input {images.shape}")
        except Exception as err:
            if len(items) > 1:  # find the one image that failed; the rest still get masked
                for item in items:
                    self._generate(recs, rows, [item])
                return
            rows[items[0][0]]["reason"] = err.reason if isinstance(err, SkipImage) \
                else f"error: {type(err).__name__}: {err}"
            return
        infos = out.info if len(out.info) == len(items) else [{} for _ in items]
        for j, (i, _img, lmk) in enumerate(items):
            if infos[j].get("skip"):
                rows[i]["reason"] = str(infos[j]["skip"])
                continue
            try:
                self._write(recs[i], rows[i], out.images[j], out.mask_maps[j], infos[j], lmk)
            except SkipImage as skip:
                rows[i]["reason"] = skip.reason

    def _write(self, rec, row: dict, image: np.ndarray, mask_map: np.ndarray, info: dict,
               lmk: np.ndarray | None) -> None:
        import cv2

        from mfrbench.imageio import atomic_write_bytes, output_rel, safe_output_path, sibling_rel

        out_rel = output_rel(rec.key, self.cfg.ext)
        map_rel = sibling_rel(out_rel, "maps", ".png")
        out_abs, map_abs = safe_output_path(self.out_dir, out_rel), safe_output_path(self.out_dir, map_rel)
        params = [cv2.IMWRITE_JPEG_QUALITY, self.cfg.quality] if self.cfg.ext.lower() in (".jpg", ".jpeg") else []
        # cvtColor instead of a reversed-channel copy: the same bytes, without numpy's slow strided copy.
        ok1, img_buf = cv2.imencode(self.cfg.ext, cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR), params)
        m = (np.asarray(mask_map) > 0).astype(np.uint8)
        ok2, map_buf = cv2.imencode(".png", m, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not (ok1 and ok2):
            raise OSError(f"could not encode the outputs of {rec.key}")
        atomic_write_bytes(out_abs, img_buf.tobytes())
        atomic_write_bytes(map_abs, map_buf.tobytes())
        row.update(status="ok", out_path=out_rel, map_out_path=map_rel, width=int(image.shape[1]),
                   height=int(image.shape[0]), generator=self.variant, seed=self.seed, **info)
        row["lmk68"] = np.round(lmk, 2).ravel().tolist() if lmk is not None else None


def _manifest_records(manifest: "str | os.PathLike", limit: int | None):
    """Stream the ok rows of an aligned manifest as records (landmarks in the crop frame).

    Returns ``(records iterator, number of ok rows, manifest metadata)``. The CSV is read in
    chunks and only the needed columns are decoded, so a 200k-row manifest neither fills
    memory with landmark lists nor spends minutes decoding JSON columns it does not use.
    """
    import pandas as pd

    from mfrbench.datasets import FaceRecord
    from mfrbench.manifest import check_row_count, damage_named, read_manifest_meta, resolve_manifest_path

    meta = read_manifest_meta(manifest)
    if meta.get("kind") != "aligned":
        raise MfrbenchError(f"{manifest} is a {meta.get('kind')!r} manifest; --manifest takes the output "
                            "folder of `mfrbench align`")
    csv = resolve_manifest_path(manifest)
    with damage_named(csv):
        header = pd.read_csv(csv, nrows=0).columns
    want = [c for c in ("key", "identity", "is_masked", "source", "out_path", "status", "lmk5_crop", "lmk68_crop")
            if c in header]
    with damage_named(csv):
        status = pd.read_csv(csv, usecols=["status"], keep_default_na=False)["status"]
    check_row_count(csv, len(status))
    n_ok = int((status == "ok").sum())
    total = n_ok if limit is None else min(n_ok, limit)

    def tup(v: str):
        return tuple(float(x) for x in json.loads(v)) if isinstance(v, str) and v else None

    def gen():
        n = 0
        with damage_named(csv):  # a garbled landmark cell: one line naming the file, not a traceback
            for chunk in pd.read_csv(csv, usecols=want, chunksize=4096, keep_default_na=False,
                                     dtype={"key": str, "identity": str, "out_path": str}):
                for r in chunk[chunk["status"] == "ok"].to_dict("records"):
                    if n == total:
                        return
                    n += 1
                    yield FaceRecord(path=str(csv.parent / r["out_path"]), identity=r.get("identity") or None,
                                     is_masked=str(r.get("is_masked", "")).lower() == "true",
                                     source=r.get("source", ""), key=r["key"], lmk5=tup(r.get("lmk5_crop")),
                                     lmk68=tup(r.get("lmk68_crop")))

    return gen(), total, meta


def generate_dataset(generator: GeneratorSource, out_dir: "str | os.PathLike", *, dataset=None,
                     manifest: "str | os.PathLike | None" = None, limit: int | None = None, workers: int = 1,
                     seed: int = 0, batch_size: int | None = None, resume: bool = True, progress: bool = True,
                     config_extra: dict | None = None, cfg: GenerateConfig | None = None,
                     dedupe: bool = True, shard: "str | None" = None, engine: str = "local") -> dict:
    """Mask a whole dataset into ``out_dir``; return the manifest metadata (counts, config).

    Args:
        generator: a :class:`MaskGenerator` instance (pickled to the workers when ``workers > 1``)
            or a picklable zero-argument factory (each worker process builds its own; a GAN is then
            loaded once per process instead of pickled). The CLI and
            ``mfrbench.generators.base.generate_dataset`` build the factory from a registered name.
        out_dir: output folder: ``images/<name>`` (masked; ``<name>`` is the key, with ``ext`` added when its
            own extension differs: :func:`mfrbench.imageio.output_rel`), ``maps/`` (the same name ending
            ``.png``: the mask map, ``uint8``, 1 = mask pixel, same size), ``manifest.csv`` / ``manifest.json``.
        dataset: a :class:`~mfrbench.datasets.Dataset` of raw photos (faces are detected with
            YuNet and 68 points found with ``create_landmarker('auto')``, unless the dataset
            ships them), or ``None`` when ``manifest`` is given.
        manifest: an aligned manifest folder (``mfrbench align``): its crops and ``lmk68_crop``
            are used directly, no detection (the fast path). Takes precedence over ``dataset``.
        limit: process only the first N inputs.
        workers: parallel processes; outputs are byte-identical for any value.
        seed: run seed; image ``key``'s randomness is ``image_rng(seed, key)`` (:mod:`mfrbench.seeds`; the
            scheme's version is written into ``manifest.json`` as ``seed_version``).
        batch_size: records per worker task and generator call (default 32 for manifests,
            8 for photos).
        resume: continue an interrupted run in ``out_dir`` (the config must match).
        config_extra: extra JSON-able entries stored in (and checked against) the run config.
        cfg: driver settings (output format, detector, landmarker), see :class:`GenerateConfig`.
        dedupe: of inputs with the same bytes, all but the smallest key become ``duplicate`` skipped rows.
        shard: ``"i/N"`` or a :class:`~mfrbench.shards.Shard`: mask only that shard's inputs into
            ``out_dir``, a shard folder that ``mfrbench merge`` joins with the others.
        engine: ``local`` (a pool of ``workers`` processes) or ``ray`` (``workers`` Ray actors,
            :mod:`mfrbench.ray_engine`); the output is the same.

    ``manifest.json`` gets ``"generator"``: the generator's :class:`GeneratorIdentity` as a dict
    (read it back with :func:`read_generator_identity`).

    Manifest rows (``kind='masked'``): the core columns plus ``map_out_path``, ``frame``
    (``photo`` or ``aligned``), ``width``, ``height``, ``generator`` (the identity's variant), ``seed``, ``lmk68``
    (landmarks in the output frame) and the generator's info columns (``mtf``: ``mask_type``,
    ``template``, ``color``, ``texture``, ``wearing``, ``anchors``, ``yaw_bin``, ``yaw_deg``,
    ``covers_eyes/nose/mouth/chin``, ``covered_parts``).
    """
    from mfrbench.pipeline import process_records
    from mfrbench.shards import Shard

    shard = Shard.parse(shard)  # a bad --shard fails before any work
    cfg = cfg or GenerateConfig()
    if cfg.ext.lower() not in (".jpg", ".jpeg", ".png"):
        raise MfrbenchError(f"Expected an output format .jpg or .png, but got {cfg.ext!r}")
    probe = build_generator(generator)
    gen_config = probe.config()
    ident = probe.identity()
    # The identity (a GAN's run folder and config hash) is part of the config: resuming a run with
    # another checkpoint into the same folder must be refused, not silently mixed.
    config = {"stage": "generate", "generator": gen_config, "identity": ident.to_dict(), "seed": seed,
              "seed_version": SEED_VERSION, "limit": limit, "dedupe": dedupe, **asdict(cfg), **(config_extra or {})}
    extra_meta: dict = {"generator": ident.to_dict(), "seed_version": SEED_VERSION}  # mfrbench.seeds
    if manifest is not None:
        it, total, src_meta = _manifest_records(manifest, limit)
        config.update(input="aligned_manifest", manifest=str(Path(manifest).resolve()))
        extra_meta.update(input="aligned_manifest", dataset=(src_meta.get("config") or {}).get("dataset", ""),
                          aligned_skipped=src_meta.get("skipped"))
        name = extra_meta["dataset"] or "aligned"
    elif dataset is not None:
        from mfrbench.imageio import refuse_output_inside

        refuse_output_inside(out_dir, dataset.root)
        config.update(input="photos", dataset=dataset.name, root=str(dataset.root))
        extra_meta.update(input="photos", dataset=dataset.name, **dataset.info)
        total = limit if limit is not None else dataset.count()
        it = dataset.records(limit)
        name = dataset.name
    else:
        raise MfrbenchError("generate_dataset needs a dataset or an aligned manifest")
    if batch_size is None:
        batch_size = 32 if manifest is not None else 8
    # One process: reuse the instance built above. Several: each worker builds (or unpickles) its own.
    worker_gen = probe if workers <= 1 else generator
    return process_records(it, out_dir, kind="masked", config=config, factory=GenerateWorker,
                           factory_kwargs={"out_dir": str(out_dir), "generator": worker_gen, "seed": seed,
                                           "cfg": asdict(cfg), "from_manifest": manifest is not None},
                           seed=seed, workers=workers, total=total, resume=resume, dedupe=dedupe,
                           desc=f"{ident.variant} {name}", progress=progress,
                           extra_meta=extra_meta, chunk=batch_size, shard=shard, engine=engine)


def save_sample_grid(out_dir: "str | os.PathLike", out_png: "str | os.PathLike | None" = None, *, n: int = 8,
                     seed: int = 0, size: int = 128) -> Path | None:
    """Save ``n`` sampled rows of a masked manifest as (input | masked | mask map) triplets."""
    from mfrbench.imageio import load_rgb, save_image
    from mfrbench.manifest import read_manifest
    from mfrbench.viz import image_grid

    out_dir = Path(out_dir)
    df = read_manifest(out_dir, status="ok")
    if df.empty:
        return None
    df = df.sample(min(n, len(df)), random_state=seed).sort_index()
    tiles = []
    for r in df.to_dict("records"):
        masked = load_rgb(r["abs_out_path"], min_side=1)
        src = load_rgb(r["src_path"], min_side=1)
        if r.get("frame") == "aligned" and src.shape != masked.shape:
            src = np.zeros_like(masked)  # raw photo aligned on the fly: no stored input crop
        from PIL import Image

        m = np.asarray(Image.open(out_dir / r["map_out_path"]))
        tiles += [src, masked, np.repeat((m * 255).astype(np.uint8)[..., None], 3, 2)]
    out_png = Path(out_png) if out_png else out_dir / "grid.png"
    save_image(out_png, image_grid(tiles, cols=6, size=size))
    return out_png
