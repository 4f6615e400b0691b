"""``Seg``: the mask segmentation U-Net (MFGAN paper Sec. III-C) and the shared aux-module training.

Paper: Xiong et al. (MFGAN) use "a pre-trained U-Net" (Ronneberger et al., MICCAI 2015,
https://arxiv.org/abs/1505.04597) trained "for 20K steps with SGD on the segmentation version of
RMFRD"; that data is not available. Here ``Seg`` is trained on ``mtf`` output, whose mask maps
are exact labels by construction, plus unmasked aligned crops (all-zero maps) so it learns to say
"no mask". Architecture: a 4-level U-Net (two 3x3 conv-BN-ReLU per level, max-pool down,
bilinear up + skip concat), ``base`` channels at full resolution, one logit per pixel.

Convention: **1 = mask pixel** everywhere in this code base (the paper's ``S_F`` is the
complement, 1 = non-mask; IAMGAN/MFGAN take ``1 - Seg``). Differences from the paper, on
purpose: Adam instead of SGD (converges in the few thousand CPU steps we can afford), BCE + soft
Dice loss (masks cover a third of the crop), flips + brightness/contrast jitter (mtf masks are
clean; real photos are not).

Data (:func:`load_aux_data`): one or more ``mfrbench generate --method mtf`` output folders
(manifest columns ``wearing``, ``covers_<part>`` and the mask map path) and optional unmasked
aligned manifests. Held-out split: by identity when the rows have identities, else by source image.

Real photos (issue 14, :func:`load_real_data`; ``--real-masked``, ``--real-faces``): the judges of every
generated face must hold on real faces, which mtf alone does not teach (Det called most unmasked real
RMFRD crops ``incorrect``). Real masked photos carry only the labels we know: a mask is worn
(:data:`PRESENT`: correct *or* incorrect, not which), face and eyes visible (a face mask does not
reach the eyes), nose / mouth / chin unknown (their losses are masked out, not guessed), and no pixel
map. Seg therefore gets no pixel loss on them, only a weak image-level term (:func:`mask_present_loss`):
the mean logit of the ``seg_real_topk`` (5 %) most mask-like pixels must say "mask", a multiple-instance
"at least this much of the crop is mask" that any worn mask satisfies (the template's nose-mouth box
alone is 8.4 % of an aligned crop), which neither draws the mask's outline for Seg nor trains on the
Seg-correct rule the read-outs score. Real unmasked faces are class ``none`` with an all-zero map and
every part visible (all of them known). Real photos are held out by a hash of their key
(:func:`mfrbench.generators.gan.data.held_out_keys`, share ``real_holdout``), never trained on, and
read out apart from the mtf validation with the GAN read-out's own
:func:`~mfrbench.generators.gan.readout.judge_on_real`.

Also here: :data:`AUX_MODULES` (``seg``, ``det``) and :func:`train_aux`, the loop both share. A
run is a :class:`mfrbench.runs.RunDir` of kind ``seg`` / ``det`` (``config.json``,
``checkpoints/last.pt``, ``metrics.json``); its config is resolved by :mod:`mfrbench.config`
(defaults -> ``AUX_PROFILES`` -> YAML -> ``--set`` -> options) and it resumes exactly.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mfrbench.config import Resolved, from_dict, pick_profile, resolve
from mfrbench.errors import MfrbenchError
from mfrbench.generators._blocks import ConvNormAct, norm_layer
from mfrbench.registry import Registry
from mfrbench.runs import RunDir, choose_device, load_checkpoint, set_threads

log = logging.getLogger(__name__)

PARTS = ("face", "eyes", "nose", "mouth", "chin")
WEARING = ("correct", "incorrect", "none")
#: mtf wearing modes -> the three classes Det predicts.
WEARING_CLASS = {"correct": "correct", "nose-out": "incorrect", "mouth-nose-out": "incorrect", "chin": "incorrect",
                 "incorrect": "incorrect", "none": "none", "": "none"}
#: Wearing label of a real masked photo: a mask is worn (``correct`` or ``incorrect``), which one is not known.
PRESENT = -1
#: Parts whose visibility a real masked photo does not tell (a mask may sit below the nose or on the chin).
REAL_MASKED_UNKNOWN = ("nose", "mouth", "chin")


# ------------------------------------------------------------------------------------- network


class UNet(nn.Module):
    """U-Net: ``levels`` resolutions, ``base * 2**i`` channels at level i; (B, 3, S, S) -> (B, 1, S, S) logits."""

    def __init__(self, base: int = 16, levels: int = 4, in_ch: int = 3) -> None:
        super().__init__()
        nf = norm_layer("batch")
        ch = [base * 2 ** i for i in range(levels)]
        self.downs = nn.ModuleList()
        prev = in_ch
        for c in ch:
            self.downs.append(nn.Sequential(ConvNormAct(prev, c, nf), ConvNormAct(c, c, nf)))
            prev = c
        self.ups = nn.ModuleList()
        for c_skip in reversed(ch[:-1]):
            self.ups.append(nn.Sequential(ConvNormAct(prev + c_skip, c_skip, nf), ConvNormAct(c_skip, c_skip, nf)))
            prev = c_skip
        self.head = nn.Conv2d(prev, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, down in enumerate(self.downs):
            x = down(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = up(torch.cat([x, skip], 1))  # (B, C + C_skip, H, W)
        return self.head(x)


# ------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class AuxConfig:
    module: str = "seg"
    size: int = 112
    base: int = 16                # width of the first level (Seg) / first conv (Det)
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_frac: float = 0.2
    seed: int = 0
    eval_every: int = 500         # held-out evaluation (and a checkpoint) every N steps
    max_images: int | None = None
    real_holdout: float = 0.25    # share of each real input never trained on (= train-gen cpu's holdout_masks)
    real_min_face_px: int = 40    # real photos: drop faces narrower than this (= train-gen's min_face_px)
    seg_real_topk: float = 0.05   # Seg on real masked photos: top-k share of "mask" pixels (0: no loss on them)
    augment: str = "basic"        # "basic" (flips, brightness/contrast) or "real" (+ real_photo_augment)

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise MfrbenchError(f"Expected augment in {AUGMENTS}, but got {self.augment!r}")


AUX_PROFILES = {
    "smoke": dict(steps=6, batch_size=4, base=8, eval_every=6, size=64),
    "cpu": dict(steps=1500, batch_size=16, eval_every=250),
    "paper": dict(steps=20_000, batch_size=16, eval_every=1000),   # the paper's 20K steps for U-Net
}

#: Resume policy of a Seg/Det run (:class:`mfrbench.runs.RunDir`): the evaluation cadence may change,
#: the step total may grow (it sets the cosine schedule, so it stays in the hash); nothing else.
AUX_RUN_CONTROL = ("aux.eval_every",)
AUX_EXTENDABLE = ("aux.steps",)


# --------------------------------------------------------------------------------------- data


@dataclass
class AuxData:
    """Images (N, 3, S, S) uint8, mask maps (N, S, S) uint8, part visibility (N, P) float, wearing (N,) int.

    Real photos carry only some labels: ``map_known`` (N,) bool is False where the map is no label (real
    masked photos), ``part_known`` (N, P) bool says which visibility labels are, and a wearing label of
    :data:`PRESENT` means "a mask is worn, how is unknown". ``source`` (N,) names each row's input kind
    (``mtf``, ``faces``, ``real_masked``, ``real_faces``) so real photos are read out on their own.
    """

    images: torch.Tensor
    maps: torch.Tensor
    parts: torch.Tensor
    wearing: torch.Tensor
    groups: np.ndarray     # split groups (identity or source key)
    keys: list[str]
    map_known: torch.Tensor | None = None     # default: every label known, source "mtf"
    part_known: torch.Tensor | None = None
    source: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        self.map_known = torch.ones(n, dtype=torch.bool) if self.map_known is None else self.map_known
        self.part_known = torch.ones(self.parts.shape, dtype=torch.bool) if self.part_known is None \
            else self.part_known
        self.source = np.full(n, "mtf") if self.source is None else self.source

    def subset(self, idx: np.ndarray) -> "AuxData":
        idx = np.asarray(idx, dtype=np.int64)
        t = torch.as_tensor(idx)
        return AuxData(self.images[t], self.maps[t], self.parts[t], self.wearing[t], self.groups[idx],
                       [self.keys[i] for i in idx], self.map_known[t], self.part_known[t], self.source[idx])

    @staticmethod
    def cat(parts: Sequence["AuxData"]) -> "AuxData":
        """The rows of ``parts`` (at least one, all at one size) in order."""
        return AuxData(*(torch.cat([getattr(p, f) for p in parts]) for f in ("images", "maps", "parts", "wearing")),
                       np.concatenate([p.groups.astype(str) for p in parts]), [k for p in parts for k in p.keys],
                       torch.cat([p.map_known for p in parts]), torch.cat([p.part_known for p in parts]),
                       np.concatenate([p.source.astype(str) for p in parts]))

    def labels(self, idx: np.ndarray, maps: torch.Tensor, device: torch.device) -> "AuxBatch":
        """The labels of rows ``idx`` on ``device``, with ``maps`` (already augmented like the images)."""
        t = torch.as_tensor(idx)
        return AuxBatch(maps, self.parts[t].to(device), self.wearing[t].to(device), self.map_known[t].to(device),
                        self.part_known[t].to(device))

    def hwc(self) -> np.ndarray:
        """The images as uint8 (N, S, S, 3) (what the read-outs' judges take)."""
        return self.images.permute(0, 2, 3, 1).numpy()

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class AuxBatch:
    """One step's labels on the device: what :class:`AuxModule`'s ``loss`` reads (see :class:`AuxData`)."""

    maps: torch.Tensor
    parts: torch.Tensor
    wearing: torch.Tensor
    map_known: torch.Tensor
    part_known: torch.Tensor


def _map_column(df) -> str | None:
    for c in ("map_out_path", "mask_path", "mask_map_path", "mask_out_path"):
        if c in df.columns:
            return c
    cands = [c for c in df.columns if "mask" in c and c.endswith("path")]
    return cands[0] if cands else None


def load_aux_data(masked: list[str], unmasked: list[str] = (), *, size: int = 112,
                  max_images: int | None = None) -> AuxData:
    """Read mtf outputs (masked, with maps and part labels) and unmasked aligned manifests (class ``none``)."""
    import cv2

    from mfrbench.imageio import load_rgb
    from mfrbench.manifest import read_manifest

    imgs, maps, parts, wear, groups, keys, source = [], [], [], [], [], [], []

    def resize(a: np.ndarray, interp: int) -> np.ndarray:
        return a if a.shape[0] == size and a.shape[1] == size else cv2.resize(a, (size, size), interpolation=interp)

    for spec in masked:
        df = read_manifest(spec, status="ok")
        col = _map_column(df)
        if col is None:
            raise MfrbenchError(f"{spec}: no mask map column in the manifest (expected mtf output with mask maps)")
        if "wearing" not in df.columns:
            raise MfrbenchError(f"{spec}: no `wearing` column (expected `mfrbench generate --method mtf` output)")
        root = Path(spec) if Path(spec).is_dir() else Path(spec).parent
        df = df.iloc[:max_images] if max_images else df
        for _, r in df.iterrows():
            imgs.append(resize(load_rgb(r["abs_out_path"], min_side=1), cv2.INTER_AREA))
            m = load_rgb(root / r[col], min_side=1)[..., 0]
            maps.append(resize((m > 0).astype(np.uint8), cv2.INTER_NEAREST))
            vis = [1.0] + [0.0 if _truthy(r.get(f"covers_{p}", False)) else 1.0 for p in PARTS[1:]]
            parts.append(vis)
            wear.append(WEARING.index(WEARING_CLASS.get(str(r["wearing"]), "incorrect")))
            groups.append(str(r.get("identity") or r.get("key")))
            keys.append(f"{spec}:{r['key']}")
            source.append("mtf")
    for spec in unmasked:
        df = read_manifest(spec, status="ok")
        df = df.iloc[:max_images] if max_images else df
        for _, r in df.iterrows():
            imgs.append(resize(load_rgb(r["abs_out_path"], min_side=1), cv2.INTER_AREA))
            maps.append(np.zeros((size, size), np.uint8))
            parts.append([1.0] * len(PARTS))
            wear.append(WEARING.index("none"))
            groups.append(str(r.get("identity") or r.get("key")))
            keys.append(f"{spec}:{r['key']}")
            source.append("faces")
    if not imgs:
        raise MfrbenchError("no training images: pass at least one mtf output folder with --data")
    return AuxData(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous(),
                   torch.from_numpy(np.stack(maps)), torch.tensor(parts, dtype=torch.float32),
                   torch.tensor(wear, dtype=torch.long), np.array(groups), keys, source=np.array(source))


def load_real_data(spec: str, cache: Path, *, masked: bool, cfg: AuxConfig, progress: bool = True
                   ) -> tuple[AuxData, AuxData, dict[str, list[str]]]:
    """One real input (``--real-masked`` / ``--real-faces``) as (train rows, held-out rows, its split by key).

    Read by the GAN runs' own loader (:func:`mfrbench.generators.gan.data.load_domain`: an aligned
    manifest, a RecordIO set, a dataset name, or a folder of photos aligned once with YuNet into
    ``cache``), so a folder gives the crops and keys ``train-gen --masks`` gets, and held out by
    :meth:`~mfrbench.generators.gan.data.DomainData.split` (a hash of the key below ``real_holdout``), the
    rule of train-gen's ``holdout_masks``: at the same share (the ``cpu`` profiles' 0.25) the photos a GAN
    run keeps for KID/FID and its judges' read-out are photos Seg and Det never saw either.
    """
    from mfrbench.generators.gan.data import load_domain

    name = "real_masked" if masked else "real_faces"
    dom = load_domain(name, spec, cache, size=cfg.size, limit=cfg.max_images, masked=masked,
                      min_face_px=cfg.real_min_face_px, progress=progress)
    kept, held = dom.split(cfg.real_holdout)
    held = held if held is not None else kept.subset([])
    rows = [_real_rows(d, spec, name) for d in (kept, held)]
    return rows[0], rows[1], {"train": list(kept.keys), "heldout": list(held.keys)}


def _real_rows(dom: Any, spec: str, source: str) -> AuxData:
    """Rows of real crops (:class:`~mfrbench.generators.gan.data.DomainData`) with only the labels they have."""
    n, size = len(dom), dom.images.shape[-1]
    masked = source == "real_masked"
    part_known = torch.ones(n, len(PARTS), dtype=torch.bool)
    if masked:
        part_known[:, [PARTS.index(p) for p in REAL_MASKED_UNKNOWN]] = False
    keys = [f"{spec}:{k}" for k in dom.keys]
    return AuxData(dom.images, torch.zeros(n, size, size, dtype=torch.uint8), torch.ones(n, len(PARTS)),
                   torch.full((n,), PRESENT if masked else WEARING.index("none"), dtype=torch.long),
                   np.array(keys, dtype=str), keys, torch.full((n,), not masked, dtype=torch.bool), part_known,
                   np.full(n, source))


def _truthy(v: Any) -> bool:
    return v is True or str(v).strip().lower() in ("true", "1", "yes")


def split_groups(groups: np.ndarray, val_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/held-out indices with no group (identity / source image) on both sides."""
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(len(uniq) * val_frac))) if len(uniq) > 1 else 0
    val_groups = set(rng.choice(uniq, size=n_val, replace=False).tolist())
    is_val = np.array([g in val_groups for g in groups])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


AUGMENTS = ("basic", "real")


def augment(x: torch.Tensor, maps: torch.Tensor, rng: np.random.Generator, kind: str = "basic"
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips and brightness/contrast jitter; ``kind="real"`` adds :func:`real_photo_augment` after them.

    ``x`` (B, 3, S, S) in [-1, 1], ``maps`` (B, S, S). ``basic`` draws exactly what it always drew, so
    runs made before ``real`` existed repeat."""
    b = x.shape[0]
    flip = torch.as_tensor(rng.random(b) < 0.5)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    maps = torch.where(flip[:, None, None], maps.flip(-1), maps)
    gain = torch.as_tensor(rng.uniform(0.7, 1.3, (b, 1, 1, 1)), dtype=x.dtype)
    bias = torch.as_tensor(rng.uniform(-0.2, 0.2, (b, 1, 1, 1)), dtype=x.dtype)
    x = (x * gain + bias).clamp(-1, 1)
    if kind == "real":
        x, maps = real_photo_augment(x, maps, rng)
    return x, maps


def real_photo_augment(x: torch.Tensor, maps: torch.Tensor, rng: np.random.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """What separates a real aligned photo from an mtf overlay on a clean CelebA crop, drawn per image.

    The judges read real photos aligned by a detector that is often off on a masked face (rotated,
    shifted, too close or too far), taken at low resolution, blurred and compressed, with masks in
    colours the mtf palette lacks. Domain randomisation (Tobin et al., IROS 2017) of those factors:
    a random similarity transform (rotation +-20 deg, scale 0.85-1.2, shift +-8 %) of image and map
    alike; per-channel gains 0.75-1.25 and a saturation change 0.5-1.5; with p = 0.5 a down-up
    resampling to 25-100 % of the side (low-resolution photos); with p = 0.5 a Gaussian blur (sigma
    0.3-1.5 px at 112); with p = 0.3 pixel noise (sigma up to 0.06)."""
    from torchvision.transforms.functional import gaussian_blur

    b, _, s, _ = x.shape
    ang = np.deg2rad(rng.uniform(-20, 20, b))
    scale = rng.uniform(0.85, 1.2, b)
    shift = rng.uniform(-0.08, 0.08, (b, 2)) * 2
    cos, sin = np.cos(ang) / scale, np.sin(ang) / scale
    theta = torch.as_tensor(np.stack([np.stack([cos, -sin, shift[:, 0]], 1), np.stack([sin, cos, shift[:, 1]], 1)], 1),
                            dtype=x.dtype, device=x.device)                          # (B, 2, 3) output -> input
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    m = F.grid_sample(maps[:, None].to(x.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    maps = m[:, 0].to(maps.dtype)
    ch_gain = torch.as_tensor(rng.uniform(0.75, 1.25, (b, 3, 1, 1)), dtype=x.dtype, device=x.device)
    sat = torch.as_tensor(rng.uniform(0.5, 1.5, (b, 1, 1, 1)), dtype=x.dtype, device=x.device)
    grey = x.mean(1, keepdim=True)
    x = ((grey + (x - grey) * sat) * ch_gain).clamp(-1, 1)
    low, blur, noise = rng.random(b) < 0.5, rng.random(b) < 0.5, rng.random(b) < 0.3
    side, sigma, amp = rng.uniform(0.25, 1.0, b), rng.uniform(0.3, 1.5, b), rng.uniform(0.0, 0.06, b)
    out = []
    for i in range(b):
        xi = x[i:i + 1]
        if low[i]:
            k = max(8, int(round(s * side[i])))
            xi = F.interpolate(F.interpolate(xi, size=(k, k), mode="bilinear", align_corners=False, antialias=True),
                               size=(s, s), mode="bilinear", align_corners=False)
        if blur[i]:
            sd = float(sigma[i]) * s / 112
            xi = gaussian_blur(xi, [2 * max(1, int(np.ceil(3 * sd))) + 1] * 2, [sd, sd])
        out.append(xi)
    x = torch.cat(out)
    if noise.any():
        n = torch.as_tensor(rng.standard_normal(x.shape) * (amp * noise)[:, None, None, None], dtype=x.dtype,
                            device=x.device)
        x = x + n
    return x.clamp(-1, 1), maps


def to_float(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    return images_u8.to(device).float().div_(127.5).sub_(1.0)


# ----------------------------------------------------------------------------------- Seg module


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice over the images that have a mask (BCE alone teaches the empty ones: on an empty
    target Dice is ~1 whatever the prediction, which only adds noise)."""
    has = target.sum((1, 2, 3)) > 0
    if not has.any():
        return logits.sum() * 0.0
    p, t = torch.sigmoid(logits[has]), target[has]
    inter = (p * t).sum((1, 2, 3))
    return (1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + t.sum((1, 2, 3)) + 1)).mean()


def iou_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """IoU of binary maps (N, H, W): ``global`` (summed over all pixels) and ``mean`` over images with a mask.

    Images whose target and prediction are both empty count as IoU 1 in ``mean_all``.
    """
    pred, target = pred.astype(bool), target.astype(bool)
    inter = (pred & target).sum((1, 2)).astype(np.float64)
    union = (pred | target).sum((1, 2)).astype(np.float64)
    per = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    has = target.any((1, 2))
    return {"iou_global": float(inter.sum() / max(union.sum(), 1)),
            "iou_mean_masked": float(per[has].mean()) if has.any() else float("nan"),
            "iou_mean_all": float(per.mean()),
            "empty_correct": float((~pred[~has].any((1, 2))).mean()) if (~has).any() else float("nan")}


class Seg:
    """A trained U-Net: ``predict`` maps images in [-1, 1] (B, 3, H, W) to uint8 mask maps (B, H, W), 1 = mask."""

    def __init__(self, net: UNet, size: int, device: torch.device, threshold: float = 0.5) -> None:
        self.net, self.size, self.device, self.threshold = net.eval(), size, device, threshold

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> mask probabilities (B, 1, H, W); differentiable w.r.t. ``x``."""
        h, w = x.shape[-2:]
        xi = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False) \
            if (h, w) != (self.size, self.size) else x
        p = torch.sigmoid(self.net(xi.to(self.device)))
        if (h, w) != (self.size, self.size):
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        return p

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> np.ndarray:
        return (self.probs(x)[:, 0] >= self.threshold).to(torch.uint8).cpu().numpy()

    @torch.no_grad()
    def predict_uint8(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """uint8 (B, H, W, 3) -> uint8 (B, H, W) maps."""
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).permute(0, 3, 1, 2).float() / 127.5 - 1
            out.append(self.predict(x.to(self.device)))
        return np.concatenate(out)


def _seg_build(cfg: AuxConfig) -> nn.Module:
    return UNet(base=cfg.base)


def mask_present_loss(logits: torch.Tensor, topk: float) -> torch.Tensor:
    """Image-level "a mask is here" for crops with no pixel label: BCE of the mean logit of the ``topk``
    share of most mask-like pixels against 1 (top-k pooling of multiple-instance learning: a positive
    image has at least that many positive pixels). It says nothing about where the mask ends."""
    flat = logits.flatten(1)
    k = max(1, int(round(topk * flat.shape[1])))
    pooled = flat.topk(k, dim=1).values.mean(1)
    return F.binary_cross_entropy_with_logits(pooled, torch.ones_like(pooled))


def _seg_loss(net: nn.Module, x: torch.Tensor, b: AuxBatch, cfg: AuxConfig) -> dict[str, torch.Tensor]:
    """BCE + soft Dice on the rows whose map is a label; rows without one (real masked photos) only
    :func:`mask_present_loss` (``present``), unless ``seg_real_topk`` is 0."""
    logits = net(x)
    t = b.maps[:, None].float()
    k = b.map_known
    terms = {"bce": F.binary_cross_entropy_with_logits(logits[k], t[k]) if k.any() else logits.sum() * 0.0,
             "dice": dice_loss(logits[k], t[k])}
    if cfg.seg_real_topk > 0 and not k.all():
        terms["present"] = mask_present_loss(logits[~k], cfg.seg_real_topk)
    return terms


@torch.no_grad()
def _seg_eval(net: nn.Module, data: AuxData, device: torch.device, batch: int = 32) -> dict[str, float]:
    net.eval()
    preds = []
    for i in range(0, len(data), batch):
        x = to_float(data.images[i:i + batch], device)
        preds.append((net(x)[:, 0] > 0).cpu().numpy())
    net.train()
    return iou_scores(np.concatenate(preds), data.maps.numpy())


@dataclass(frozen=True)
class AuxModule:
    """A trainable helper: ``build(cfg)``, ``loss(net, x, batch: AuxBatch, cfg) -> named terms`` (summed),
    ``evaluate(net, val, device) -> metrics`` on the mtf validation."""

    name: str
    build: Callable[[AuxConfig], nn.Module]
    loss: Callable[..., dict[str, torch.Tensor]]
    evaluate: Callable[..., dict[str, float]]
    key_metric: str


#: Helper networks trainable with ``mfrbench train-aux --module NAME``.
AUX_MODULES: Registry[AuxModule] = Registry("aux module")
AUX_MODULES.register(lambda: AuxModule("seg", _seg_build, _seg_loss, _seg_eval, "iou_global"), name="seg")


# -------------------------------------------------------------------------------- shared loop


def aux_run_dir(out: str | os.PathLike, module: str) -> RunDir:
    """The run folder of a ``seg`` / ``det`` training run, with its resume policy."""
    return RunDir(out, kind=module, run_control=AUX_RUN_CONTROL, extendable=AUX_EXTENDABLE)


def resolve_aux_config(module: str, *, profile: str | None = None, config_file: str | os.PathLike | None = None,
                       sets: Iterable[str] = (), overrides: dict | None = None) -> Resolved[AuxConfig]:
    """Defaults -> ``profile`` -> YAML ``config_file`` -> ``--set`` -> ``overrides`` (``None`` = not given)."""
    return resolve(AuxConfig, profile=pick_profile(AUX_PROFILES, profile), file=config_file, sets=sets,
                   options=overrides, fixed={"module": module}, where=f"{module} config")


def cosine_lr(step: int, total: int, lr: float) -> float:
    """Cosine decay from ``lr`` at step 0 towards 0 at ``total`` (``CosineAnnealingLR``'s closed form).

    A pure function of the step, so a resumed (or extended) run needs no scheduler state.

    >>> [round(cosine_lr(s, 4, 1.0), 3) for s in (0, 1, 2, 4)]
    [1.0, 0.854, 0.5, 0.0]
    """
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def train_aux(module: str, masked: Sequence[str] = (), out: str | os.PathLike = "runs/aux", *,
              unmasked: Sequence[str] = (), real_masked: Sequence[str] = (), real_faces: Sequence[str] = (),
              profile: str | None = None, config_file: str | os.PathLike | None = None,
              sets: Iterable[str] = (), overrides: dict | None = None, resume: bool = False,
              device: str | None = None, threads: int | None = None, progress: bool = True) -> dict:
    """Train ``Seg`` or ``Det`` on mtf outputs (+ unmasked crops, + real photos) into the run folder ``out``.

    ``real_masked`` / ``real_faces``: real photos with a mask / without (anything ``train-gen --masks``
    takes: a folder, an aligned manifest, a RecordIO set, a dataset name), trained on with only the labels
    they have and held out by key (:func:`load_real_data`; the module docstring says why).

    Writes ``config.json``, ``checkpoints/last.pt`` (network, optimizer, step; at every held-out
    evaluation and at the end), ``metrics.json`` and, with real inputs, ``real_split.json`` (each real
    input's trained and held-out keys). ``resume`` continues from the last checkpoint: ``--steps`` may
    grow and ``eval_every`` change; other options must match the run.

    Returns:
        The held-out metrics on the mtf validation (IoU for ``seg``; per-part and wearing accuracy for
        ``det``), ``real`` (:func:`~mfrbench.generators.gan.readout.judge_on_real` on the held-out real
        masked photos and real unmasked faces: those of ``real_faces`` and the ``unmasked`` rows of the
        validation), the image counts, ``seconds`` and ``checkpoint`` (the path written).
    """
    spec = AUX_MODULES.get(module)()
    resolved = resolve_aux_config(spec.name, profile=profile, config_file=config_file, sets=sets, overrides=overrides)
    if not masked and not resume:
        raise MfrbenchError("no training images: pass at least one mtf output folder with --data")
    _check_real_inputs("--real-masked", real_masked)
    _check_real_inputs("--real-faces", real_faces)
    request = {"aux": resolved.config, "masked": [_abs(p) for p in masked], "unmasked": [_abs(p) for p in unmasked]}
    request.update({k: [_abs_spec(p) for p in v] for k, v in (("real_masked", real_masked), ("real_faces", real_faces))
                    if v})  # only when given: a run without real photos keeps the config it had
    given = {f"aux.{k}" for k in resolved.given} | {k for k in request if k != "aux" and request[k]}
    run_dir = aux_run_dir(out, spec.name)
    config = run_dir.begin(request, resume=resume, given=given)
    cfg: AuxConfig = config["aux"]
    set_threads(threads)
    dev = choose_device(device)
    split = load_splits(config, cfg, run_dir.path / "data", progress)
    if split.real_split:
        run_dir.write_json("real_split.json", {"rule": "sha1(key) below real_holdout (gan.data.held_out_keys)",
                                               "real_holdout": cfg.real_holdout, "inputs": split.real_split})
    train, val = split.train, split.val
    torch.manual_seed(cfg.seed)
    net = spec.build(cfg).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = 0, []
    if run_dir.last_checkpoint() is not None:
        ck = run_dir.load_checkpoint(map_location=dev)
        net.load_state_dict(ck["state"])
        opt.load_state_dict(ck["optimizer"])
        start, history = int(ck["step"]), list(ck["info"].get("history", []))
    counts = split.counts()
    t0 = time.perf_counter()

    def save(step: int) -> Path:
        return run_dir.save_checkpoint({"state": net.state_dict(), "optimizer": opt.state_dict(), "step": step},
                                       info={**counts, "history": history})

    ckpt = run_dir.last_checkpoint()
    bar = _aux_steps(start, cfg, module, progress)
    for step in bar:
        terms = _aux_step(spec, net, opt, train, cfg, step, dev)
        bar.set_postfix({k: f"{v:.3f}" for k, v in terms.items()}, refresh=False)
        done = step + 1
        if (done % cfg.eval_every == 0 or done == cfg.steps) and len(val):
            history.append({"step": done, **spec.evaluate(net, val, dev)})
        if done % cfg.eval_every == 0 or done == cfg.steps:
            ckpt = save(done)
    if ckpt is None:  # nothing to train (steps already reached) and no checkpoint: keep the untrained state
        ckpt = save(start)
    metrics = {"module": module, **counts, "seconds": round(time.perf_counter() - t0, 1),
               "heldout": history[-1] if history else {}, "history": history,
               "real": read_real(module, net, cfg, dev, split), "checkpoint": str(ckpt),
               "config_hash": run_dir.config_hash}
    run_dir.write_json("metrics.json", metrics)
    return metrics


@dataclass
class AuxSplit:
    """What a run trains on and what it holds out: the mtf validation and the real photos, apart."""

    train: AuxData
    val: AuxData            # mtf + unmasked rows held out by identity (the mtf validation)
    real_masked: AuxData    # held-out real masked photos
    real_faces: AuxData     # held-out real unmasked faces: of ``real_faces`` inputs and the unmasked rows of ``val``
    real_split: dict        # kind (real_masked, real_faces) -> input -> {"train": keys, "heldout": keys}

    def counts(self) -> dict[str, int]:
        return {"train_images": len(self.train), "heldout_images": len(self.val),
                "train_real_masked": int((self.train.source == "real_masked").sum()),
                "train_real_faces": int((self.train.source == "real_faces").sum()),
                "heldout_real_masked": len(self.real_masked), "heldout_real_faces": len(self.real_faces)}


def load_splits(config: dict, cfg: AuxConfig, cache: Path, progress: bool = True) -> AuxSplit:
    """A run's data: mtf + unmasked rows split by identity (:func:`split_groups`), each real input by key."""
    data = load_aux_data(config["masked"], config["unmasked"], size=cfg.size, max_images=cfg.max_images)
    tr_idx, va_idx = split_groups(data.groups, cfg.val_frac, cfg.seed)
    val, empty = data.subset(va_idx), data.subset([])
    train = [data.subset(tr_idx)]
    held = {"real_masked": [empty], "real_faces": [empty, val.subset(np.flatnonzero(val.source == "faces"))]}
    real_split: dict[str, dict] = {}
    for kind in ("real_masked", "real_faces"):
        for i, spec in enumerate(config.get(kind, [])):
            kept, out, keys = load_real_data(spec, cache / f"{kind}_{i}", masked=kind == "real_masked", cfg=cfg,
                                             progress=progress)
            real_split.setdefault(kind, {})[spec] = keys
            train.append(kept)
            held[kind].append(out)
    return AuxSplit(AuxData.cat(train), val, AuxData.cat(held["real_masked"]), AuxData.cat(held["real_faces"]),
                    real_split)


def read_real(module: str, net: nn.Module, cfg: AuxConfig, dev: torch.device, split: AuxSplit) -> dict:
    """The held-out real photos read by the network being trained, with the GAN read-out's
    :func:`~mfrbench.generators.gan.readout.judge_on_real` (one definition of "holds on real photos")."""
    if not len(split.real_masked) and not len(split.real_faces):
        return {}
    from mfrbench.generators.gan.readout import judge_on_real

    if module == "seg":
        seg, det = Seg(net, cfg.size, dev), None
    else:
        from mfrbench.generators.parts import Det

        seg, det = None, Det(net, cfg.size, dev)
    try:
        return judge_on_real(seg, det, split.real_masked.hwc(), split.real_faces.hwc())
    finally:
        net.train()


def _check_real_inputs(option: str, specs: Sequence[str]) -> None:
    """Fail before the run folder is made: each real input must exist or name a dataset."""
    from mfrbench.datasets import DATASETS

    for spec in specs:
        if not Path(spec).exists() and spec not in DATASETS:
            raise MfrbenchError(f"{option} {spec}: no such folder or file, and not a dataset name "
                                f"({', '.join(DATASETS.names())})")


def _abs(path: str | os.PathLike) -> str:
    return str(Path(path).resolve())


def _abs_spec(spec: str | os.PathLike) -> str:
    """A path made absolute; a dataset name (no such path) kept as it is."""
    from mfrbench.datasets import DATASETS

    return str(spec) if str(spec) in DATASETS and not Path(spec).exists() else _abs(spec)


def _aux_steps(start: int, cfg: AuxConfig, module: str, progress: bool):
    from tqdm import tqdm

    return tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"train {module}", unit="step",
                disable=not progress, dynamic_ncols=True, mininterval=1.0)


def _aux_step(spec: AuxModule, net: nn.Module, opt: torch.optim.Optimizer, train: AuxData, cfg: AuxConfig,
              step: int, dev: torch.device) -> dict[str, float]:
    """One optimisation step; batch, augmentation and lr are pure functions of ``(seed, step)`` (exact resume)."""
    for group in opt.param_groups:
        group["lr"] = cosine_lr(step, cfg.steps, cfg.lr)
    rng = np.random.default_rng([cfg.seed, step])
    idx = rng.integers(len(train), size=cfg.batch_size)
    x, maps = augment(to_float(train.images[idx], dev), train.maps[idx].to(dev), rng, cfg.augment)
    terms = spec.loss(net, x, train.labels(idx, maps, dev), cfg)
    opt.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    opt.step()
    return {k: float(v.detach()) for k, v in terms.items()}


def save_aux_model(run: str | os.PathLike, net: nn.Module, cfg: AuxConfig) -> Path:
    """Write a ready network as a ``seg`` / ``det`` run folder (tests, imported weights)."""
    run_dir = aux_run_dir(run, cfg.module)
    run_dir.begin({"aux": cfg, "masked": [], "unmasked": []})
    return run_dir.save_checkpoint({"state": net.state_dict(), "step": 0})


def load_aux(run_dir: str | os.PathLike, module: str, device: torch.device | str = "cpu"
             ) -> tuple[nn.Module, AuxConfig]:
    """A trained ``seg`` / ``det`` network (eval mode, on ``device``) and its config.

    ``run_dir`` is a run folder of ``train-aux`` or one of its checkpoint files.
    """
    try:
        ck = load_checkpoint(run_dir, map_location=device)
    except MfrbenchError as err:
        raise MfrbenchError(f"{err} (train one with `mfrbench train-aux --module {module}`)") from None
    if ck.get("kind") != module:
        raise MfrbenchError(f"{ck['path']} holds a {ck.get('kind', 'unknown')} model, not {module}")
    cfg = from_dict(AuxConfig, ck["config"]["aux"], where=f"{ck['path']} config")
    net = AUX_MODULES.get(module)().build(cfg)
    net.load_state_dict(ck["state"])
    return net.to(device).eval(), cfg


def load_seg(run_dir: str | os.PathLike, device: torch.device | str = "cpu") -> Seg:
    """A trained ``Seg`` from its run folder (``mfrbench train-aux --module seg``)."""
    net, cfg = load_aux(run_dir, "seg", device)
    for p in net.parameters():
        p.requires_grad_(False)
    return Seg(net, cfg.size, torch.device(device))


# ----------------------------------------------------------------------------- folder inference


def predict_folder(inputs: str | os.PathLike, out_dir: str | os.PathLike, fn: Callable[[np.ndarray, Path], Any], *,
                   align: bool = True, size: int = 112, progress: bool = True) -> tuple[list[Path], list[dict]]:
    """Run ``fn(crop_uint8, path)`` on every image under ``inputs``, aligned with YuNet when ``align``.

    Returns (paths, rows) where row has ``file``, ``aligned`` (whether a face was found) and ``M``
    (the 2x3 crop transform, or None when the whole image was used).
    """
    from tqdm import tqdm

    from mfrbench.align import norm_crop
    from mfrbench.datasets import walk_images
    from mfrbench.errors import SkipImage
    from mfrbench.faces import DETECTORS, pick_main_face
    from mfrbench.imageio import load_rgb, printable_name

    root = Path(inputs)
    if not root.is_dir():
        raise MfrbenchError(f"--input {root} is not a folder of images")
    det = DETECTORS.create("yunet") if align else None
    paths, rows = [], []
    for p in tqdm(list(walk_images(root)), desc="images", unit="img", disable=not progress, dynamic_ncols=True):
        row = {"file": printable_name(p.relative_to(root).as_posix()), "path": p, "aligned": False, "M": None,
               "status": "ok", "reason": ""}  # issue 12: a name that is not UTF-8 is shown (and written) as \xNN
        try:
            rgb = load_rgb(p, min_side=8)
        except SkipImage as skip:
            row.update(status="skipped", reason=skip.reason)
            rows.append(row)
            paths.append(p)
            continue
        face = pick_main_face(det.detect(rgb), rgb.shape) if det else None
        if face is not None:
            crop, M = norm_crop(rgb, face.lmk5, size)
            row.update(aligned=True, M=M)
        else:
            import cv2

            crop = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        row["result"] = fn(crop, p)
        row["shape"] = rgb.shape[:2]
        rows.append(row)
        paths.append(p)
    return paths, rows


def overlay(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 0, 0)) -> np.ndarray:
    """``rgb`` with mask pixels tinted half-way to ``color`` (for preview grids)."""
    out = rgb.astype(np.float32)
    m = mask.astype(bool)
    out[m] = 0.5 * out[m] + 0.5 * np.array(color, np.float32)
    return out.round().astype(np.uint8)


def segment_folder(checkpoint: str, inputs: str, out: str, *, align: bool = True, device: str | None = None,
                   progress: bool = True, grid: int = 32) -> dict:
    """``mfrbench segment``: one PNG per image (same size as the input, 1 = mask pixel).

    A map is named after the input's whole relative path, with ``.png`` added unless it already ends so
    (``p1/a.jpg`` -> ``p1/a.jpg.png``, ``p1/a.png`` -> ``p1/a.png``: :func:`mfrbench.imageio.output_rel`), so
    inputs that differ only in extension keep one map each.

    Also writes ``OUT/grid.png``: the first ``grid`` images with their predicted mask tinted red.
    ``grid.png`` is not a map's name unless an input is called ``grid.png`` or ``grid``.
    """
    import cv2

    dev = choose_device(device)
    seg = load_seg(checkpoint, dev)

    def fn(crop: np.ndarray, p: Path) -> np.ndarray:
        x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
        return seg.probs(x.to(dev))[0, 0].cpu().numpy()  # (S, S) probabilities

    _, rows = predict_folder(inputs, out, fn, align=align, size=112, progress=progress)
    out_dir = Path(out)
    n_ok = 0
    previews = []
    for row in rows:
        if row["status"] != "ok":
            continue
        h, w = row["shape"]
        prob = row.pop("result")
        if row["M"] is not None:  # crop frame -> image frame
            full = cv2.warpAffine(prob, row["M"], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        else:
            full = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        mask = (full >= seg.threshold).astype(np.uint8)
        from mfrbench.errors import SkipImage
        from mfrbench.imageio import output_rel, safe_output_path

        try:  # issue 12: a.jpg and a.png get a.jpg.png and a.png, not one a.png
            dest = safe_output_path(out_dir, output_rel(row["file"], ".png", folder=""))
        except SkipImage as skip:
            row.update(status="skipped", reason=skip.reason)
            continue
        row["out"] = dest.relative_to(out_dir.resolve()).as_posix()
        _save_gray_png(dest, mask)
        n_ok += 1
        if len(previews) < grid:
            from mfrbench.imageio import load_rgb

            previews.append(overlay(load_rgb(row["path"], min_side=1), mask))
    skipped = [r for r in rows if r["status"] != "ok"]
    grid_path = None
    if previews:
        from mfrbench.imageio import save_image
        from mfrbench.viz import image_grid

        grid_path = out_dir / "grid.png"
        save_image(grid_path, image_grid(previews, cols=8, size=112))
    return {"images": len(rows), "written": n_ok, "grid": str(grid_path) if grid_path else None,
            "aligned": sum(bool(r["aligned"]) for r in rows),
            "skipped": [(r["file"], r["reason"]) for r in skipped], "out": str(out_dir)}


def _save_gray_png(path: Path, arr: np.ndarray) -> None:
    import cv2

    from mfrbench.imageio import atomic_write_bytes

    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise MfrbenchError(f"could not encode {path}")
    atomic_write_bytes(path, buf.tobytes())


# Det registers itself in AUX_MODULES on import; keep this at the bottom (parts imports this module).
def _load_parts() -> None:
    import importlib

    importlib.import_module("mfrbench.generators.parts")


_load_parts()
