"""Shared GAN training core: the backend contract, losses, image pool, EMA, data, and the fit loop.

The contract (in the spirit of CycleGAN's ``BaseModel``, made explicit; style.md examples 4 and 7)
------------------------------------------------------------------------------------------------
A GAN family is one subclass of :class:`TrainableGAN` in one file (``cyclegan.py``,
``iamgan.py``, ``mfgan.py``) and implements exactly three things:

``build()``
    create the networks and optimizers (``self.opt[name] = self.adam(params)``) and any
    :class:`ImagePool` in ``self.pools``. Called once from ``__init__``.
``train_step(batch: GANBatch, rng: np.random.Generator) -> dict[str, float]``
    one optimisation step on a batch of real faces (domain *Face*) and real masked faces
    (domain *Mask*); returns the **named loss terms** for logging (the progress bar, the
    ``losses.csv`` log). ``rng`` is the step's only source of randomness (the image pool); it
    is derived from ``(seed, step)``, so a resumed run replays exactly.
``networks() -> dict[str, nn.Module]``
    every network to checkpoint, by name (e.g. ``G_M, G_F, D_M, D_F, G_M_ema``).

Everything else is shared and needs nothing more from the family: :func:`fit` (the loop: LR
schedule, tqdm with per-term losses, sample grids every ``sample_every`` steps, atomic
checkpoints with the resolved config every ``ckpt_every`` steps, exact resume),
:meth:`TrainableGAN.state_dict` (networks + optimizers + pools + step), :meth:`translate`
(the EMA face->mask generator used for samples and generation; override ``translator()`` if
``G_M`` is not named ``G_M``) and :meth:`sample_rows` (rows of the sample grid; override to add
rows, e.g. MFGAN's reference styles).

Conventions: images are ``(B, 3, S, S)`` float tensors in ``[-1, 1]``; *Face* -> *Mask* is the
forward direction (``G_M``), *Mask* -> *Face* the cycle (``G_F``); ``D_M`` judges masked faces,
``D_F`` unmasked ones (names of the MFGAN paper). Losses: LSGAN (:func:`lsgan_loss`), L1 cycle and
identity (:func:`l1`). Optimisers: Adam, betas ``(0.5, 0.999)``, lr constant for the first
``decay_start`` fraction of the steps then linearly to 0 (:func:`linear_decay_lr`).

Configuration: :class:`TrainConfig` (the loop and data) + the family's own frozen model-config
dataclass; :func:`resolve_config` merges profile -> user overrides, rejects unknown keys, and the
result is written as ``config.json`` in the run folder and inside every checkpoint. Profiles:
``smoke`` (seconds, for CI), ``cpu`` (an honest small run on 2 cores: 64 px, tens of minutes),
``paper`` (MFGAN paper schedule: batch 1, 450K steps, 256 px; a GPU job).

Data (:func:`load_domain`): an aligned manifest (``mfrbench align`` output), a folder of photos
or a dataset adapter name; folders/datasets are detected and aligned once with YuNet into
``RUN/data/<domain>/`` (a cached manifest, resumable). Crops are held in memory as ``uint8``.
"""

from __future__ import annotations

import abc
import copy
import csv
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mfrbench.errors import MfrbenchError
from mfrbench.generate import GeneratorIdentity, hash_config
from mfrbench.generators.base import GeneratedBatch, MaskGenerator
from mfrbench.registry import LazyRegistry, Registry

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"

# ----------------------------------------------------------------------------------------- losses


def lsgan_loss(pred: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017): MSE of the patch logits to 1 (real) or 0 (fake)."""
    target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
    return F.mse_loss(pred, target)


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (cycle-consistency and identity losses)."""
    return (a - b).abs().mean()


def set_requires_grad(nets: Iterable[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def linear_decay_lr(step: int, total: int, lr: float, decay_start: float) -> float:
    """CycleGAN's schedule: ``lr`` until ``decay_start * total`` steps, then linearly to 0 at ``total``.

    >>> [round(linear_decay_lr(s, 10, 1.0, 0.5), 2) for s in (0, 5, 6, 9)]
    [1.0, 1.0, 0.8, 0.2]
    """
    start = int(decay_start * total)
    if step < start or total <= start:
        return lr
    return lr * max(0.0, 1.0 - (step - start) / (total - start))


# ---------------------------------------------------------------------------------- pool and EMA


class ImagePool:
    """History of generated images for the discriminator (Shrivastava et al. 2017, CycleGAN ``ImagePool``).

    Until full, each image is stored and returned; afterwards, with probability 1/2 a stored image
    is returned (and replaced by the new one), else the new one. Randomness comes from ``rng``.
    """

    def __init__(self, size: int = 50) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img[None]
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif rng.random() > 0.5:
                i = int(rng.integers(len(self.images)))
                out.append(self.images[i].clone())
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        return {"size": self.size, "images": torch.cat(self.images, 0).cpu() if self.images else torch.empty(0)}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.size = int(state["size"])
        self.images = [x[None].to(device) for x in state["images"]]


class EMA:
    """Exponential moving average of a network's weights, for sampling (StarGAN v2 ``moving_average``).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` so short runs are not stuck near init.
    """

    def __init__(self, net: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.net = copy.deepcopy(net).eval()
        set_requires_grad([self.net], False)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for pe, p in zip(self.net.parameters(), net.parameters()):
            pe.lerp_(p.detach(), 1 - d)
        for be, b in zip(self.net.buffers(), net.buffers()):
            be.copy_(b)


# ----------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TrainConfig:
    """The loop and the data, shared by every GAN family (model hyper-parameters live in the family's config)."""

    method: str = "cyclegan"
    size: int = 128                 # training resolution (64 | 128 | 256)
    steps: int = 10_000
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    decay_start: float = 0.5        # fraction of the steps after which the LR decays linearly to 0
    ema_decay: float = 0.999
    sample_every: int = 500
    ckpt_every: int = 1000
    log_every: int = 10
    seed: int = 0
    max_faces: int | None = None    # use at most N crops of each domain (None: all)
    max_masks: int | None = None
    min_face_px: int = 40           # drop detected faces narrower than this (tiny crowd faces)
    flip: bool = True               # random horizontal flips
    amp: bool = False               # bf16 autocast on CUDA
    n_sample: int = 8               # images per sample-grid row


PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # Seconds on 2 cores, on real data: proves the whole path (data, steps, samples, checkpoint).
    "smoke": {"train": dict(size=64, steps=4, batch_size=2, sample_every=4, ckpt_every=2, log_every=1,
                            max_faces=16, max_masks=16, n_sample=4),
              "model": dict(ngf=8, ndf=8, n_blocks=2, pool_size=4)},
    # An honest small run on a 2-core CPU: 64 px, narrow nets (ngf 24), 1.5K steps of batch 2, no identity
    # term (it costs two more generator passes per step); about 1 s/step on one free core.
    "cpu": {"train": dict(size=64, steps=1500, batch_size=2, sample_every=150, ckpt_every=150, log_every=10,
                          decay_start=0.6),
            "model": dict(ngf=24, ndf=32, n_blocks=6, lambda_identity=0.0)},
    # The MFGAN paper's schedule (Sec. IV-A): batch 1, 450K steps; CycleGAN's 256 px, 9 blocks.
    "paper": {"train": dict(size=256, steps=450_000, batch_size=1, sample_every=5000, ckpt_every=10_000,
                            log_every=100, decay_start=0.5),
              "model": dict(ngf=64, ndf=64, n_blocks=9)},
}


def _check_keys(cls: type, data: dict, where: str) -> None:
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise MfrbenchError(f"Unknown {where} keys {sorted(unknown)}; valid: {sorted(f.name for f in fields(cls))}")


def resolve_config(method: str, profile: str | None = None, *, train: dict | None = None,
                   model: dict | None = None) -> tuple[TrainConfig, Any]:
    """Profile defaults -> explicit overrides (``None`` values ignored) -> frozen configs.

    Returns:
        ``(train_cfg, model_cfg)``; ``model_cfg`` is the family's own dataclass.
    """
    spec = _method(method)
    prof = PROFILES.get(profile or "", None)
    if profile and prof is None:
        raise MfrbenchError(f"Unknown profile {profile!r}. Available: {', '.join(PROFILES)}")
    t = {**(prof or {}).get("train", {}), **{k: v for k, v in (train or {}).items() if v is not None}}
    model_cls = spec.config_cls
    m = {k: v for k, v in (prof or {}).get("model", {}).items() if k in {f.name for f in fields(model_cls)}}
    m.update({k: v for k, v in (model or {}).items() if v is not None})
    _check_keys(TrainConfig, t, "train config")
    _check_keys(model_cls, m, f"{method} config")
    tc = TrainConfig(**{**t, "method": spec.name})
    if tc.size % 4:
        raise MfrbenchError(f"Expected --size divisible by 4 (64, 128, 256), but got {tc.size}")
    return tc, model_cls(**m)


# ----------------------------------------------------------------------------------------- data


@dataclass
class GANBatch:
    faces: torch.Tensor     # (B, 3, S, S) in [-1, 1], domain Face
    masks: torch.Tensor     # (B, 3, S, S) in [-1, 1], domain Mask


@dataclass
class DomainData:
    """Aligned crops of one domain, in memory: ``images`` uint8 (N, 3, S, S); ``keys`` per crop."""

    name: str
    images: torch.Tensor
    keys: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.images)

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
    crops = [load_rgb(p, min_side=1) for p in df["abs_out_path"]]
    return DomainData(name, to_tensor_images(crops, size), list(df["key"]), str(mdir))


# ------------------------------------------------------------------------------------- contract


class TrainableGAN(abc.ABC):
    """A GAN family: see the module docstring for the contract (``build``, ``train_step``, ``networks``)."""

    def __init__(self, cfg: Any, train: TrainConfig, device: torch.device | str = "cpu") -> None:
        self.cfg, self.train_cfg, self.device = cfg, train, torch.device(device)
        self.opt: dict[str, torch.optim.Optimizer] = {}
        self.pools: dict[str, ImagePool] = {}
        self.step = 0
        self.build()
        for net in self.networks().values():
            net.to(self.device)

    # ---- to implement
    @abc.abstractmethod
    def build(self) -> None:
        """Create networks, ``self.opt`` optimizers and ``self.pools``."""

    @abc.abstractmethod
    def train_step(self, batch: GANBatch, rng: np.random.Generator) -> dict[str, float]:
        """One optimisation step; returns the named loss terms."""

    @abc.abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """Networks to checkpoint, by name."""

    # ---- optional hook
    def prepare(self, faces: "DomainData", masks: "DomainData", run_dir: Path) -> None:
        """Called by :func:`fit` before the first step (also on resume) with both domains and the run
        folder: dataset-level setup a family needs (MFGAN: style-domain clustering, stage read-outs).
        Must be deterministic; state it creates belongs in ``networks()`` buffers. Default: nothing."""

    # ---- shared helpers
    def adam(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        t = self.train_cfg
        return torch.optim.Adam(params, lr=t.lr, betas=(t.beta1, t.beta2))

    def set_lr(self, lr: float) -> None:
        for opt in self.opt.values():
            for g in opt.param_groups:
                g["lr"] = lr

    def autocast(self):
        on = self.train_cfg.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=on)

    def translator(self) -> nn.Module:
        """The face -> mask generator used for samples and generation (EMA weights when present)."""
        nets = self.networks()
        return nets.get("G_M_ema", nets["G_M"])

    @torch.no_grad()
    def translate(self, faces: torch.Tensor) -> torch.Tensor:
        return self.translator()(faces.to(self.device)).float().clamp(-1, 1)

    @torch.no_grad()
    def sample_rows(self, batch: GANBatch) -> list[torch.Tensor]:
        """Rows of the sample grid: real faces, G_M (EMA) on them, real masks, G_F on them."""
        nets = self.networks()
        rows = [batch.faces, self.translate(batch.faces), batch.masks]
        if "G_F" in nets:
            rows.append(nets["G_F"](batch.masks).float().clamp(-1, 1))
        return rows

    def state_dict(self) -> dict:
        return {"step": self.step,
                "networks": {k: v.state_dict() for k, v in self.networks().items()},
                "optimizers": {k: v.state_dict() for k, v in self.opt.items()},
                "pools": {k: v.state_dict() for k, v in self.pools.items()}}

    def load_state_dict(self, state: dict) -> None:
        nets = self.networks()
        missing = set(nets) - set(state["networks"])
        if missing:
            raise MfrbenchError(f"checkpoint lacks networks {sorted(missing)}")
        for k, net in nets.items():
            net.load_state_dict(state["networks"][k])
        for k, opt in self.opt.items():
            if k in state.get("optimizers", {}):
                opt.load_state_dict(state["optimizers"][k])
        for k, pool in self.pools.items():
            if k in state.get("pools", {}):
                pool.load_state_dict(state["pools"][k], self.device)
        self.step = int(state["step"])


@dataclass(frozen=True)
class GANMethod:
    name: str
    cls: type[TrainableGAN]
    config_cls: type


#: GAN families trainable with ``mfrbench train-gen --method NAME``.
#: Modules whose import registers the built-in GAN methods (imported on first lookup).
BUILTIN_METHOD_MODULES = ("mfrbench.generators.cyclegan", "mfrbench.generators.iamgan", "mfrbench.generators.mfgan")
GAN_METHODS: Registry[GANMethod] = LazyRegistry("GAN method", BUILTIN_METHOD_MODULES)


def register_gan_method(name: str, config_cls: type) -> Callable[[type[TrainableGAN]], type[TrainableGAN]]:
    """Class decorator: ``@register_gan_method("cyclegan", CycleGANConfig)``."""

    def deco(cls: type[TrainableGAN]) -> type[TrainableGAN]:
        spec = GANMethod(name, cls, config_cls)
        GAN_METHODS.register(lambda: spec, name=name)
        return cls

    return deco


def _method(name: str) -> GANMethod:
    return GAN_METHODS.get(name)()


def build_gan(train: TrainConfig, model_cfg: Any, device: torch.device | str = "cpu") -> TrainableGAN:
    torch.manual_seed(train.seed)
    return _method(train.method).cls(model_cfg, train, device)


# --------------------------------------------------------------------------------- checkpoints


def config_dict(train: TrainConfig, model_cfg: Any, extra: dict | None = None) -> dict:
    return {"method": train.method, "train": dataclasses.asdict(train), "model": dataclasses.asdict(model_cfg),
            **(extra or {})}


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    from mfrbench.imageio import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


def save_checkpoint(model: TrainableGAN, run_dir: Path, config: dict) -> Path:
    """Write ``checkpoint.pt`` (state + resolved config) and ``config.json`` atomically."""
    path = run_dir / CHECKPOINT
    atomic_torch_save({"config": config, "state": model.state_dict()}, path)
    atomic_write_text(run_dir / CONFIG, json.dumps(config, indent=2, default=str) + "\n")
    return path


def load_checkpoint(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    p = Path(run_dir)
    path = p / CHECKPOINT if p.is_dir() else p
    if not path.is_file():
        raise MfrbenchError(f"no GAN checkpoint at {path} (train one with `mfrbench train-gen`)")
    return torch.load(path, map_location=map_location, weights_only=True)


def configs_from_dict(config: dict) -> tuple[TrainConfig, Any]:
    spec = _method(config["method"])
    return TrainConfig(**config["train"]), spec.config_cls(**config["model"])


def load_gan(run_dir: str | os.PathLike, device: torch.device | str = "cpu") -> TrainableGAN:
    """Rebuild a trained GAN from its run folder (networks, optimizers, pools, step)."""
    ck = load_checkpoint(run_dir, map_location=device)
    train, model_cfg = configs_from_dict(ck["config"])
    model = build_gan(train, model_cfg, device)
    model.load_state_dict(ck["state"])
    return model


def run_config_hash(run_dir: str | os.PathLike, model: TrainableGAN | None = None) -> str:
    """12 hex digits identifying a GAN run: the ``config_hash`` its ``config.json`` records, else the hash of
    that resolved ``config.json`` (else of ``model``'s configs when the folder has none)."""
    p = Path(run_dir)
    f = (p if p.is_dir() else p.parent) / CONFIG
    if f.is_file():
        saved = json.loads(f.read_text())
        return str(saved.get("config_hash") or hash_config(saved))
    if model is None:
        raise MfrbenchError(f"no {CONFIG} in {f.parent}: not a GAN run folder")
    return hash_config(config_dict(model.train_cfg, model.cfg))


# ------------------------------------------------------------------------------------------- fit


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def save_sample_grid(model: TrainableGAN, batch: GANBatch, path: Path) -> Path:
    from mfrbench.imageio import save_image
    from mfrbench.viz import image_grid

    rows = model.sample_rows(batch)
    n = rows[0].shape[0]
    tiles = [img for row in rows for img in _to_uint8(row)]
    save_image(path, image_grid(tiles, cols=n, size=max(64, model.train_cfg.size)))
    return path


def fixed_sample_batch(faces: DomainData, masks: DomainData, n: int, device: torch.device, seed: int) -> GANBatch:
    rng = np.random.default_rng([seed, 999_999_999])
    fi = rng.choice(len(faces), size=min(n, len(faces)), replace=False)
    mi = rng.choice(len(masks), size=min(n, len(masks)), replace=False)
    k = min(len(fi), len(mi))
    z = np.zeros(k, bool)
    return GANBatch(faces.batch(fi[:k], z, device), masks.batch(mi[:k], z, device))


def step_batch(faces: DomainData, masks: DomainData, step: int, train: TrainConfig,
               device: torch.device) -> tuple[GANBatch, np.random.Generator]:
    """The batch of step ``step`` and the step's RNG, both a pure function of ``(seed, step)``."""
    rng = np.random.default_rng([train.seed, step])
    b = train.batch_size
    fi, mi = rng.integers(len(faces), size=b), rng.integers(len(masks), size=b)
    ff = rng.random(b) < 0.5 if train.flip else np.zeros(b, bool)
    mf = rng.random(b) < 0.5 if train.flip else np.zeros(b, bool)
    return GANBatch(faces.batch(fi, ff, device), masks.batch(mi, mf, device)), rng


class _LossLog:
    """Append-only ``losses.csv``; on resume rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        self.rows: list[dict] = []
        if path.is_file() and resume_step:
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        self.keys: list[str] = list(self.rows[0].keys()) if self.rows else []

    def add(self, step: int, losses: dict[str, float], lr: float) -> None:
        row = {"step": step, "lr": f"{lr:.6g}", **{k: f"{v:.5f}" for k, v in losses.items()}}
        # a family may add loss terms mid-run (MFGAN's stages): the header grows, earlier rows leave them blank
        self.keys += [k for k in row if k not in self.keys]
        self.rows.append(row)

    def flush(self) -> None:
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.keys or ["step"], extrasaction="ignore")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


def fit(model: TrainableGAN, faces: DomainData, masks: DomainData, run_dir: str | os.PathLike, *,
        config: dict, progress: bool = True, callbacks: Iterable[Callable[..., None]] = ()) -> dict:
    """Train ``model`` from ``model.step`` to ``train.steps``; samples, checkpoints and losses go to ``run_dir``.

    Returns a summary: steps done, seconds, the mean of each loss term over the last 10% of steps,
    and the paths of the checkpoint and the last sample grid.
    """
    from tqdm import tqdm

    t = model.train_cfg
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    losses_log = _LossLog(run_dir / "losses.csv", model.step)
    fixed = fixed_sample_batch(faces, masks, t.n_sample, model.device, t.seed)
    model.prepare(faces, masks, run_dir)
    start, t0 = model.step, time.perf_counter()
    recent: dict[str, list[float]] = {}
    last_grid = None
    bar = tqdm(total=t.steps, initial=start, desc=f"train {t.method}", unit="step", disable=not progress,
               dynamic_ncols=True, mininterval=1.0)
    try:
        for step in range(start, t.steps):
            lr = linear_decay_lr(step, t.steps, t.lr, t.decay_start)
            model.set_lr(lr)
            batch, rng = step_batch(faces, masks, step, t, model.device)
            losses = model.train_step(batch, rng)
            model.step = step + 1
            for k, v in losses.items():
                recent.setdefault(k, []).append(v)
            if model.step % t.log_every == 0 or model.step == t.steps:
                losses_log.add(model.step, losses, lr)
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
            bar.update(1)
            for cb in callbacks:
                cb(step=model.step, losses=losses, model=model)
            if model.step % t.sample_every == 0 or model.step == t.steps:
                last_grid = save_sample_grid(model, fixed, run_dir / "samples" / f"step_{model.step:07d}.png")
            if model.step % t.ckpt_every == 0 or model.step == t.steps:
                losses_log.flush()
                save_checkpoint(model, run_dir, config)
    finally:
        bar.close()
    tail = max(1, (t.steps - start) // 10)
    summary = {"steps": model.step, "steps_this_run": model.step - start,
               "seconds": round(time.perf_counter() - t0, 2),
               "final_losses": {k: round(float(np.mean(v[-tail:])), 4) for k, v in recent.items()},
               "checkpoint": str(run_dir / CHECKPOINT), "samples": str(last_grid) if last_grid else None,
               "faces": len(faces), "masks": len(masks)}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def train_gan(method: str, faces: str, masks: str, out: str | os.PathLike, *, profile: str | None = None,
              train_overrides: dict | None = None, model_overrides: dict | None = None, resume: bool = False,
              device: str | None = None, threads: int | None = None, progress: bool = True) -> dict:
    """Library entry point of ``mfrbench train-gen``: resolve config, load both domains, fit, checkpoint."""
    run_dir = Path(out)
    if (run_dir / CHECKPOINT).is_file() and not resume:
        raise MfrbenchError(f"{run_dir} already holds a checkpoint: pass --resume to continue it or pick a new --out")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if threads:
        torch.set_num_threads(threads)
    if resume and (run_dir / CHECKPOINT).is_file():
        ck = load_checkpoint(run_dir, map_location=dev)
        train, model_cfg = configs_from_dict(ck["config"])
        if train_overrides and train_overrides.get("steps"):
            train = dataclasses.replace(train, steps=int(train_overrides["steps"]))
        state = ck["state"]
        config = {**ck["config"], "train": dataclasses.asdict(train)}
    else:
        train, model_cfg = resolve_config(method, profile, train=train_overrides, model=model_overrides)
        state = None
        config = config_dict(train, model_cfg, {"profile": profile, "faces": str(faces), "masks": str(masks)})
    model = build_gan(train, model_cfg, dev)  # before the data: a bad model config fails in a second
    face_data = load_domain("faces", config.get("faces", faces), run_dir / "data" / "faces", size=train.size,
                            limit=train.max_faces, masked=False, min_face_px=0, progress=progress)
    mask_data = load_domain("masks", config.get("masks", masks), run_dir / "data" / "masks", size=train.size,
                            limit=train.max_masks, masked=True, min_face_px=train.min_face_px, progress=progress)
    if state is not None:
        model.load_state_dict(state)
    config["data"] = {"faces": len(face_data), "masks": len(mask_data)}
    atomic_write_text(run_dir / CONFIG, json.dumps(config, indent=2, default=str) + "\n")
    summary = fit(model, face_data, mask_data, run_dir, config=config, progress=progress)
    summary["device"] = str(dev)
    return summary


# ------------------------------------------------------------------------------------ generation


class GANMaskGenerator(MaskGenerator):
    """A trained GAN run as a :class:`~mfrbench.generators.base.MaskGenerator` (batched; GPU when present).

    ``generate`` resizes the aligned crops to the training size, runs the EMA face -> mask
    generator, and resizes back. The mask map comes from the segmentation U-Net ``Seg``
    (``seg_checkpoint``, or the one an IAMGAN run was trained with); without one it is estimated
    from the pixel change (``|out - in|`` above ``diff_threshold``, smoothed) and labelled
    ``mask_map_source=diff`` in the manifest row.

    Identity (:meth:`identity`): family = ``family`` (``None``: the run's method, as for cyclegan and
    iamgan, which have no presets), variant = the run's method (the preset), config hash = hash of the
    run's resolved ``config.json``.
    """

    family: str | None = None

    def __init__(self, model: TrainableGAN, *, run_dir: str, seg=None, device: torch.device | None = None,
                 batch_size: int = 32, diff_threshold: float = 0.12, seg_run: str | None = None) -> None:
        self.model, self.run_dir, self.seg, self.seg_run = model, run_dir, seg, seg_run
        self.name = model.train_cfg.method
        self.size = model.train_cfg.size
        self.batch_size, self.diff_threshold = batch_size, diff_threshold
        self.device = model.device
        self.net = model.translator().eval()

    def _maps(self) -> str:
        return "seg" if self.seg is not None else "diff"

    def identity(self) -> GeneratorIdentity:
        method = self.model.train_cfg.method
        return GeneratorIdentity(family=self.family or method, variant=method,
                                 config_hash=run_config_hash(self.run_dir, self.model),
                                 run=str(Path(self.run_dir).resolve()), maps=self._maps())

    def config(self) -> dict:
        return {"name": self.name, **self.identity().to_dict(), "seg_run": self.seg_run,
                "diff_threshold": self.diff_threshold if self.seg is None else None}

    @classmethod
    def from_run(cls, checkpoint: str | None, *, expect: str | None = None, seg_checkpoint: str | None = None,
                 device: str | None = None, batch_size: int = 32, **_ignored) -> "GANMaskGenerator":
        if not checkpoint:
            raise MfrbenchError(f"the {expect or 'GAN'} generator needs --checkpoint RUN_DIR "
                                f"(a run folder written by `mfrbench train-gen --method {expect or 'cyclegan'}`)")
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = load_gan(checkpoint, dev)
        if expect and model.train_cfg.method != expect:
            raise MfrbenchError(f"{checkpoint} is a {model.train_cfg.method} run, not {expect}")
        seg_ck = seg_checkpoint or getattr(model.cfg, "seg_checkpoint", None)
        seg = None
        if seg_ck:
            from mfrbench.generators.seg import load_seg

            seg = load_seg(seg_ck, dev)
        return cls(model, run_dir=str(checkpoint), seg=seg, batch_size=batch_size,
                   seg_run=str(Path(seg_ck).resolve()) if seg_ck else None)

    @torch.no_grad()
    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> same, through G at the training size."""
        h, w = x.shape[-2:]
        xi = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True) \
            if (h, w) != (self.size, self.size) else x
        y = self.net(xi).float().clamp(-1, 1)
        if (h, w) != (self.size, self.size):
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False).clamp(-1, 1)
        return y

    def generate(self, images: np.ndarray, landmarks: np.ndarray | None = None, *, rng: np.random.Generator):
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"Expected uint8 images of shape (B, H, W, 3), but got {images.dtype} {images.shape}")
        outs, maps = [], []
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(images[i:i + self.batch_size]).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
            y = self._run(x)
            if self.seg is not None:
                m = self.seg.predict(y)                                     # (B, H, W) uint8
            else:
                d = (y - x).abs().mean(1, keepdim=True)                     # (B, 1, H, W)
                d = F.avg_pool2d(d, 5, 1, 2)
                m = (d[:, 0] > self.diff_threshold * 2).to(torch.uint8).cpu().numpy()
            outs.append(_to_uint8(y))
            maps.append(m)
        info = [{"mask_type": f"{self.name}", "wearing": "", "gan_run": self.run_dir, "mask_map_source": self._maps()}
                for _ in range(len(images))]
        return GeneratedBatch(np.concatenate(outs), np.concatenate(maps), info)
