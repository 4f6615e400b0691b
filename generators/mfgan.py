"""MFGAN: three-stage CycleGAN-based masked-face generation (correctness, authenticity, type diversity).

Paper: Xiong, Zhong, Guo, Wang, Zhang, "MFGAN: A Novel CycleGAN-Based Network for Masked Face
Generation", SEKE 2022, DOI 10.18293/SEKE2022-016 (``../shared/reference/mfgan-paper.txt``, §III, §IV-A).
No public code exists; this is a first implementation. Building blocks are the shared CycleGAN
ones (``_blocks.py``: ResNet generator, PatchGAN, AdaIN), the style encoder follows StarGAN v2's
``StyleEncoder`` (Choi et al. 2020) with iResNet ResStages (Duta et al. 2020), and the training
contract/loop is ``generators/gan/`` (LSGAN, image pool, EMA, Adam, linear decay, exact resume).

Networks (names of the paper):
    ``G_M``  face -> masked face, CycleGAN ResNet generator whose up-sampling blocks use AdaIN on a
             style code ``s`` (§IV-A); ``G_F`` masked -> face (plain CycleGAN generator);
    ``D_M``  PatchGAN with one extra stride-1 conv layer (§IV-A "adds a convolution layer in
             discriminator"); ``D_F`` plain PatchGAN;
    ``E``    mask style encoder (§III-D): stem conv, two ResStages (start, middle, end pre-activation
             ResBlocks each), global average pooling, one linear head per style domain (K heads).
Frozen helpers loaded from their own runs: ``Det`` (facial-part visibility, §III-B) and ``Seg``
(mask segmentation, §III-C), both from ``generators/parts.py`` / ``generators/seg.py``.

Schedule (§III-A, Fig. 4), by global step: stage 1 ``lambda_cor * L_GAN(G_M, D_M) + L_GAN(G_F, D_F)
+ lambda * L_cyc`` (eq. 2); stage 2 adds ``mu * L_inv`` (eq. 4); stage 3 adds ``E``,
``lambda_sty * L_sty - lambda_ds * L_ds`` (eq. 7). Presets ``mfgan-no-cor`` / ``-no-inv`` /
``-no-sty`` switch one module off (Table III) and keep the schedule.

Gaps the paper leaves open and how they are filled (also in the README, "MFGAN: our reading"):

* **Style code before stage 3.** ``E`` enters in stage 3; before it ``G_M`` is conditioned on one
  learned constant code (``G_M.default_style``), which is also what generation without a reference uses.
* **Style domains (K).** The real masked photos carry no style labels. A domain is a k-means
  cluster (K = ``n_domains``) of colour/texture statistics of the mask region that ``Seg``
  predicts (mean and std of R, G, B and mean gradient magnitude, standardised); a photo with
  almost no predicted mask pixels uses the lower-central box where a mask sits on an aligned
  crop. The domain of any image is its nearest centroid, so it is computed on the fly and needs
  no per-image bookkeeping; centroids are buffers of ``domains`` and are checkpointed.
* **Det's XOR.** ``Det(f, G_M(f))`` compares the parts seen on the output with those correct
  wearing predicts from the input (visible and not covered by a correct mask); see
  :func:`mfgan_losses.visibility_disagreement`. ``lambda_cor`` is per sample and is stored in
  the image pool next to its image (an extra channel), so D's pooled fakes keep their own factor.
* **Where lambda_cor applies** (``cor_apply``, default ``both``): eq. (2) is the objective both
  players share, so it weighs D's fake term *and* G's adversarial term; ``d_fake`` follows the
  prose (the discriminator's loss only) and ``g`` the generator only.
* **Identity loss**: eqs. (2)-(7) have none, so ``lambda_identity`` defaults to 0 (CycleGAN's is
  available). ``L_inv`` is a mean over pixels (``mu`` does not depend on resolution).
* **L_inv's mask map** (``inv_region``): eq. (3) takes ``S_F`` from Seg on ``G_M(f)``, so a mask
  part Seg misses (a faint or dark one) is pulled back to the face by Seg's error. ``alpha``
  (compositing output only; not the paper's, which has no alpha) takes it from the generator's own
  exact map, ``A <= seg_threshold``: the test of whether Seg steers ``L_inv`` (docs/generators.md).
* **L_ds** follows StarGAN v2: the second output is detached and ``lambda_ds`` decays linearly to
  0 over stage 3 (``ds_decay``). ``E`` is trained by the generator's optimiser, as in StarGAN v2.
* **L_sty's target code is detached** (:func:`mfgan_losses.style_reconstruction_loss`): ``E``
  learns to recover ``s = E(m, y)`` from ``G_M(f, s)``, but cannot lower ``L_sty`` by moving the
  target, e.g. by collapsing every code to a constant once ``lambda_ds`` has decayed. StarGAN v2's
  reference-guided step never updates the target's encoder on this loss either.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mfrbench.errors import MfrbenchError
from mfrbench.generate import GeneratedBatch
from mfrbench.generators import mfgan_losses as L
from mfrbench.generators._blocks import (
    AdaINUpBlock,
    PatchDiscriminator,
    ResnetGenerator,
    ResStage,
    init_weights,
    norm_layer,
)
from mfrbench.generators.base import register_generator
from mfrbench.generators.cyclegan import CycleGAN, CycleGANConfig, CycleStep, StyleCodes
from mfrbench.generators.gan.checkpoint import load_gan
from mfrbench.generators.gan.composite import check_mask_source
from mfrbench.generators.gan.contract import GAN_METHODS, GANMethod
from mfrbench.generators.gan.data import GANBatch, load_domain, to_uint8
from mfrbench.generators.gan.generator import GANMaskGenerator, translate_crops
from mfrbench.generators.gan.pool_ema import EMA, set_requires_grad
from mfrbench.metrics.quality import non_mask_ssim_psnr  # the evaluator's SSIM/PSNR: one definition
from mfrbench.runs import atomic_write_text, choose_device

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------- networks


class StyleGenerator(ResnetGenerator):
    """``G_M``: the CycleGAN ResNet generator with AdaIN(s) in its up-sampling blocks.

    ``forward(x, s=None)``: ``s`` is ``(B, style_dim)``; ``None`` uses the learned constant
    :attr:`default_style` (stages 1-2, and generation without a reference).
    """

    def __init__(self, style_dim: int = 64, **kw: Any) -> None:
        self._style_dim = style_dim       # read by make_up, which the parent's __init__ calls
        super().__init__(**kw)
        self.default_style = nn.Parameter(torch.zeros(1, style_dim))

    def make_up(self, cin: int, cout: int, norm: Any) -> nn.Module:
        return AdaINUpBlock(cin, cout, self._style_dim, self.upsample)

    def decode(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for up in self.ups:
            h = up(h, s)
        return self.head(h)

    def forward(self, x: torch.Tensor, s: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if s is None:
            s = self.default_style.expand(x.shape[0], -1)
        return self.decode(self.encode(x), s)


class StyleEncoder(nn.Module):
    """``E``: shared trunk (stem + two ResStages) and one linear head per style domain (§III-D).

    ``forward(x, y)`` -> ``(B, style_dim)``: the code of image ``i`` from head ``y[i]``
    (StarGAN v2 ``StyleEncoder``). :meth:`all_heads` returns ``(B, K, style_dim)``.
    """

    def __init__(self, style_dim: int = 64, n_domains: int = 4, dim: int = 32, n_middle: int = 1,
                 norm: str = "instance") -> None:
        super().__init__()
        nf = norm_layer(norm)
        # stride-2 stem: the trunk then works at 1/2, 1/4, 1/8 of the input (cheap at 256 px)
        self.stem = nn.Conv2d(3, dim, 3, 2, 1)
        self.trunk = nn.Sequential(ResStage(dim, dim * 2, stride=2, n_middle=n_middle, norm=nf),
                                   ResStage(dim * 2, dim * 4, stride=2, n_middle=n_middle, norm=nf))
        self.heads = nn.ModuleList([nn.Linear(dim * 4, style_dim) for _ in range(n_domains)])
        init_weights(self)

    def all_heads(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(self.stem(x)).mean((2, 3))                     # (B, 4 * dim)
        return torch.stack([head(h) for head in self.heads], dim=1)   # (B, K, style_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.all_heads(x)
        return out[torch.arange(x.shape[0], device=x.device), y]      # (B, style_dim)


def mask_style_features(images: torch.Tensor, mask_prob: torch.Tensor | None, *,
                        min_frac: float = 0.01) -> torch.Tensor:
    """Colour/texture statistics of the mask region, the space the style domains are clustered in.

    Args:
        images: ``(B, 3, S, S)`` in ``[-1, 1]``.
        mask_prob: ``(B, 1, S, S)`` Seg's mask probability (``None``: use the fallback box for all).
        min_frac: below this share of mask pixels, the lower-central box of an aligned crop is used.

    Returns:
        ``(B, 7)``: mean R, G, B, std R, G, B (in [0, 1] units) and mean gradient magnitude.
    """
    x = (images.float() + 1) / 2                                      # (B, 3, S, S) in [0, 1]
    b, _, s, _ = x.shape
    box = torch.zeros(1, 1, s, s, device=x.device)
    box[..., int(0.58 * s):int(0.92 * s), int(0.22 * s):int(0.78 * s)] = 1
    if mask_prob is None:
        m = box.expand(b, 1, s, s)
    else:
        m = (mask_prob.float() > 0.5).float()
        small = m.flatten(1).mean(1) < min_frac                      # (B,)
        m = torch.where(small[:, None, None, None], box.expand_as(m), m)
    n = m.flatten(1).sum(1).clamp_min(1)                              # (B,)
    mean = (x * m).flatten(2).sum(2) / n[:, None]                     # (B, 3)
    var = ((x - mean[:, :, None, None]) ** 2 * m).flatten(2).sum(2) / n[:, None]
    gray = x.mean(1, keepdim=True)
    gx = F.pad(gray[..., :, 1:] - gray[..., :, :-1], (0, 1, 0, 0)).abs()
    gy = F.pad(gray[..., 1:, :] - gray[..., :-1, :], (0, 0, 0, 1)).abs()
    grad = ((gx + gy) * m).flatten(1).sum(1) / n                      # (B,)
    return torch.cat([mean, var.sqrt(), grad[:, None]], 1)           # (B, 7)


class StyleDomains(nn.Module):
    """K style domains as k-means centroids in :func:`mask_style_features` space (checkpointed buffers)."""

    def __init__(self, n_domains: int, n_features: int = 7) -> None:
        super().__init__()
        self.register_buffer("centroids", torch.zeros(n_domains, n_features))
        self.register_buffer("mu", torch.zeros(n_features))
        self.register_buffer("sigma", torch.ones(n_features))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    def fit(self, feats: torch.Tensor, seed: int = 0) -> np.ndarray:
        """k-means (scikit-learn, seeded) on standardised features; returns the domain sizes."""
        from sklearn.cluster import KMeans

        f = feats.detach().double().cpu()
        if len(f) < self.k:
            raise MfrbenchError(f"Expected at least n_domains={self.k} masked photos to cluster, but got {len(f)}")
        mu, sigma = f.mean(0), f.std(0).clamp_min(1e-6)
        z = ((f - mu) / sigma).numpy()
        km = KMeans(n_clusters=self.k, n_init=10, random_state=seed).fit(z)
        # order domains by mean brightness so domain ids are stable across sklearn versions
        order = np.argsort(km.cluster_centers_[:, :3].mean(1), kind="stable")
        self.centroids.copy_(torch.as_tensor(km.cluster_centers_[order], dtype=torch.float32))
        self.mu.copy_(mu.float()), self.sigma.copy_(sigma.float()), self.fitted.fill_(True)
        return np.bincount(self.assign(feats).cpu().numpy(), minlength=self.k)

    def assign(self, feats: torch.Tensor) -> torch.Tensor:
        """Nearest centroid, ``(B,)`` long."""
        z = (feats.float().to(self.mu) - self.mu) / self.sigma
        return torch.cdist(z, self.centroids).argmin(1)


# --------------------------------------------------------------------------------- Det / Seg glue


class FrozenAux:
    """A frozen ``Det`` or ``Seg`` network, called at any resolution (resized to its own size and back).

    ``Seg`` returns the mask probability ``(B, 1, S, S)``; ``Det`` the part visibility ``(B, P)``
    for the parts named in :attr:`parts`. Build with :meth:`from_run` (a run folder of
    ``mfrbench train-aux``) or directly from a module.
    """

    def __init__(self, kind: str, net: nn.Module, *, size: int | None = None, parts: Sequence[str] = (),
                 run: str | None = None) -> None:
        self.kind, self.net, self.size, self.parts, self.run = kind, net.eval(), size, list(parts), run
        set_requires_grad([self.net], False)

    @classmethod
    def from_run(cls, kind: str, run: str | None, device: torch.device) -> "FrozenAux":
        if not run:
            flag = "--det" if kind == "Det" else "--seg"
            raise MfrbenchError(f"MFGAN needs a trained {kind} run: pass {flag} RUN "
                                f"(train one with `mfrbench train-aux --module {kind.lower()}`)")
        if kind == "Seg":
            from mfrbench.generators.seg import load_seg

            seg = load_seg(run, device)                 # generators/seg.py ``Seg``: U-Net logits + its size
            return cls(kind, seg.net, size=int(seg.size), run=str(run))
        from mfrbench.generators.parts import load_det
        from mfrbench.generators.seg import PARTS

        det = load_det(run, device)                     # generators/parts.py ``Det``: (part, wearing) logits
        return cls(kind, det.net, size=int(det.size), parts=list(PARTS), run=str(run))

    @torch.no_grad()
    def wearing(self, x: torch.Tensor) -> torch.Tensor | None:
        """Det's wearing-class probabilities ``(B, 3)`` (correct, incorrect, none), when its network has that head."""
        xi = x.detach().float()
        if self.size and x.shape[-1] != self.size:
            xi = F.interpolate(xi, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        out = self.net(xi)
        return torch.softmax(out[1].float(), 1) if isinstance(out, tuple) else None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = x.shape[-1]
        xi = x.detach().float()
        if self.size and s != self.size:
            xi = F.interpolate(xi, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        out = self.net(xi)
        if isinstance(out, tuple):                      # Det: (part logits, wearing logits)
            out = out[0]
        if self.kind == "Seg":
            p = torch.sigmoid(out.float())                              # (B, 1, s', s') mask probability
            return F.interpolate(p, size=(s, s), mode="bilinear", align_corners=False) if p.shape[-1] != s else p
        return torch.sigmoid(out.float())                               # (B, P) part visibility


def _aux_size(net: nn.Module) -> int | None:
    size = getattr(net, "size", None)
    return int(size) if size else None


# ----------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class MFGANConfig(CycleGANConfig):
    """CycleGAN's network settings (ngf, ndf, n_blocks, n_layers_d, norm, pool_size, lambda_cycle)
    plus MFGAN's modules, schedule and loss weights."""

    d_m_extra_convs: int = 1        # "adds a convolution layer in discriminator" (§IV-A)
    style_dim: int = 64
    n_domains: int = 4              # K
    enc_dim: int = 32               # width of E's stem (trunk: 2x, 4x)
    enc_middle: int = 1             # middle ResBlocks per ResStage
    # schedule: None splits the run's steps in the paper's 100K:200K:150K ratio
    stage_steps: tuple[int, int, int] | None = None
    # modules (Table III ablations)
    use_cor: bool = True
    use_inv: bool = True
    use_sty: bool = True
    # frozen helpers
    det_checkpoint: str | None = None
    seg_checkpoint: str | None = None
    # (1) lambda_cor
    cor_alpha: float = 1.0
    cor_c: float = 1.0
    cor_weights: dict[str, float] = field(default_factory=lambda: {"face": 1.0, "eyes": 2.0, "nose": 1.0, "mouth": 1.0})
    cor_covered: tuple[str, ...] = ("nose", "mouth", "chin")
    cor_apply: str = "both"         # d_fake | g | both
    cor_threshold: float = 0.5
    # weights of (2)-(7)
    lambda_cycle: float = 10.0      # lambda
    lambda_identity: float = 0.0    # not in the paper's objective; CycleGAN's 0.5 available
    lambda_inv: float = 10.0        # mu
    lambda_sty: float = 1.0
    lambda_ds: float = 1.0
    ds_decay: bool = True           # StarGAN v2: lambda_ds -> 0 linearly over stage 3
    seg_threshold: float = 0.5
    inv_region: str = "seg"         # L_inv's non-mask map: "seg" (Seg of G_M(f), the paper's) or "alpha" (composite)
    lambda_wear: float = 0.0        # composite only (plain: no-op): wearing_loss of G_M's alpha on each face's
    #                                 landmarks, not the paper's (its lambda_cor asks Det)
    readout_n: int = 16             # faces in the per-stage quality read-out

    #: options added after the study's stages were keyed; at their default they leave the config hash as it was
    added_options: ClassVar[tuple[str, ...]] = ("lambda_wear",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cor_apply not in ("d_fake", "g", "both"):
            raise MfrbenchError(f"Expected cor_apply in ('d_fake', 'g', 'both'), but got {self.cor_apply!r}")
        if self.n_domains < 1:
            raise MfrbenchError(f"Expected n_domains >= 1, but got {self.n_domains}")
        if self.stage_steps is not None:
            object.__setattr__(self, "stage_steps", tuple(int(s) for s in self.stage_steps))
            if len(self.stage_steps) != 3 or min(self.stage_steps) < 0:
                raise MfrbenchError(f"Expected three non-negative stage_steps, but got {self.stage_steps}")
        object.__setattr__(self, "cor_covered", tuple(self.cor_covered))
        check_mask_source("inv_region", self.inv_region, self.output)


def split_stages(total: int, stage_steps: Sequence[int] | None) -> tuple[int, int, int]:
    """Steps per stage: explicit, or ``total`` split 2:4:3 (the paper's 100K/200K/150K), each >= 1 when possible.

    >>> split_stages(450_000, None), split_stages(4, None), split_stages(9, (1, 2, 6))
    ((100000, 200000, 150000), (1, 2, 1), (1, 2, 6))
    """
    if stage_steps is not None:
        st = tuple(int(s) for s in stage_steps)
        if sum(st) != total:
            raise MfrbenchError(f"Expected stage_steps to sum to the run's steps ({total}), but got {st} = {sum(st)}")
        return st  # type: ignore[return-value]
    bounds = [round(total * f) for f in (2 / 9, 6 / 9)] + [total]
    if total >= 3:
        bounds[0] = max(1, bounds[0])
        bounds[1] = min(max(bounds[0] + 1, bounds[1]), total - 1)
    return bounds[0], bounds[1] - bounds[0], total - bounds[1]


#: Loss names each stage logs, per module switch (what the ablation test reads back from losses.csv).
def active_terms(cfg: MFGANConfig, stage: int) -> list[str]:
    names = ["G_M_gan", "G_F_gan", "cyc_F", "cyc_M"]
    if cfg.lambda_identity > 0:
        names += ["idt_M", "idt_F"]
    if cfg.output == "composite":
        names += ["alpha_M_l1", "alpha_M_tv", "alpha_F_l1", "alpha_F_tv"]
        if cfg.lambda_alpha_area > 0:
            names += ["alpha_M_area", "alpha_F_area"]
    if cfg.lambda_wear > 0 and cfg.output == "composite":
        names += ["wear"]
    if cfg.use_cor:
        names += ["lambda_cor"]
    if cfg.use_inv and stage >= 2:
        names += ["inv"]
    if cfg.use_sty and stage >= 3:
        names += ["sty", "ds", "lambda_ds"]
    return names + ["D_M", "D_F", "stage"]


def face_wearing_maps(faces: Any, size: int, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cover, eyes)`` bool ``(N, size, size)`` of every face crop, from its 68 landmarks
    (:func:`~mfrbench.generators.mask_templates.wearing_regions`; the landmarker mtf uses, on the crop's
    template face box). About 2 ms a crop on one core; computed once per run (also on resume)."""
    from mfrbench.faces import create_landmarker, template_face
    from mfrbench.generators.mask_templates import wearing_regions

    lm = create_landmarker("auto")
    cover, eyes = [], []
    for i in range(0, len(faces), chunk):
        crops = faces.crops(range(i, min(i + chunk, len(faces))))
        box = template_face(crops.shape[1])
        for c in crops:
            cv, ey = wearing_regions(lm.landmarks(c, box), size, scale=size / c.shape[1])
            cover.append(cv)
            eyes.append(ey)
    log.info("wearing regions of %d faces: cover %.3f, eyes %.3f of the crop", len(cover),
             float(np.mean(cover)), float(np.mean(eyes)))
    return torch.from_numpy(np.stack(cover)), torch.from_numpy(np.stack(eyes))


# ---------------------------------------------------------------------------------------- backend


class MFGAN(CycleGAN):
    """MFGAN's three-stage training, composed from CycleGAN's step (see the module docstring).

    What it changes in :class:`~mfrbench.generators.cyclegan.CycleGAN`: the networks (``G_M`` with
    AdaIN on a style code, ``D_M`` one conv deeper, the style encoder ``E`` stepped with the
    generators), the style codes of stage 3 (:meth:`style_codes`), the per-sample weights of the
    ``D_M`` terms (lambda_cor, :meth:`adversarial_weights`), and the added terms ``L_inv``,
    ``L_sty``, ``L_ds`` (:meth:`extra_generator_losses`). Cycle and identity terms, the pools and
    the discriminator losses are CycleGAN's.
    """

    cfg: MFGANConfig
    #: the ``cpu`` profile's compositing MFGAN leaves what its mask covers out of the cycle terms
    #: (:func:`~mfrbench.generators.cyclegan.cycle_weight`): over seeds 0-2, Seg-correct 0.63 -> 0.74 and
    #: KID 0.135 -> 0.106 on average, better in every seed (docs/generators.md). CycleGAN and IAMGAN keep 1.
    profile_model = {"cpu": {"cycle_drawn_weight": 0.0}}

    # ---- construction
    def build(self) -> None:
        c = self.cfg
        self.stages = split_stages(self.train_cfg.steps, c.stage_steps)
        super().build()
        self.ema_E = EMA(self.E, self.train_cfg.ema_decay)
        self.det = FrozenAux.from_run("Det", c.det_checkpoint, self.device) if (c.use_cor or c.det_checkpoint) else None
        needs_seg = c.use_inv or c.use_sty or c.seg_checkpoint
        self.seg = FrozenAux.from_run("Seg", c.seg_checkpoint, self.device) if needs_seg else None
        if self.det is not None:
            parts = self.det.parts
            unknown = (set(c.cor_weights) | set(c.cor_covered)) - set(parts)
            # weights/covered parts that Det does not predict are ignored with a note, not an error:
            # the penalty vector W is defined over whatever Det predicts (§III-B "face, eyes, ...").
            if unknown:
                log.info("Det %s predicts %s; ignoring %s in cor_weights/cor_covered", c.det_checkpoint, parts,
                         sorted(unknown))
            self.cor_w = [float(c.cor_weights.get(p, 0.0)) for p in parts]
            self.cor_cov = [p in c.cor_covered for p in parts]
        self._prep: dict[str, Any] = {}

    def make_networks(self) -> None:
        """CycleGAN's four networks with ``G_M`` style-conditioned and ``D_M`` deeper (§IV-A), then ``E``."""
        c = self.cfg
        self.G_M = self.output_head(StyleGenerator(style_dim=c.style_dim, out_ch=self.out_channels(), ngf=c.ngf,
                                                   n_blocks=c.n_blocks, norm=c.norm, upsample=c.upsample))
        self.G_F = self.output_head(ResnetGenerator(out_ch=self.out_channels(), ngf=c.ngf, n_blocks=c.n_blocks,
                                                    norm=c.norm, upsample=c.upsample))
        self.D_M = PatchDiscriminator(ndf=c.ndf, n_layers=c.n_layers_d, norm=c.norm, extra_convs=c.d_m_extra_convs)
        self.D_F = PatchDiscriminator(ndf=c.ndf, n_layers=c.n_layers_d, norm=c.norm)
        self.E = StyleEncoder(c.style_dim, c.n_domains, c.enc_dim, c.enc_middle, c.norm)
        self.domains = StyleDomains(c.n_domains)

    def generator_parameters(self) -> list[nn.Parameter]:
        """``E`` is trained with the generators (StarGAN v2 steps the style encoder on the G loss)."""
        return super().generator_parameters() + list(self.E.parameters())

    def networks(self) -> dict[str, nn.Module]:
        return {"G_M": self.G_M, "G_F": self.G_F, "D_M": self.D_M, "D_F": self.D_F, "E": self.E,
                "G_M_ema": self.ema.net, "E_ema": self.ema_E.net, "domains": self.domains}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "stages": list(self.stages)}

    def load_state_dict(self, state: dict) -> None:
        """CycleGAN's, and a resumed run may lengthen its stages but not move a stage boundary it has passed."""
        super().load_state_dict(state)
        old = tuple(int(s) for s in state.get("stages", self.stages))
        ends_old, ends_new = np.cumsum(old)[:2], np.cumsum(self.stages)[:2]
        if any(min(int(a), self.step) != min(int(b), self.step) for a, b in zip(ends_old, ends_new)):
            raise MfrbenchError(f"--resume: this MFGAN run is at step {self.step} of stages {old}; the new length "
                                f"gives stages {self.stages}, which moves a stage it has already passed "
                                f"(pass --stage-steps {old[0]},{old[1]},N to lengthen stage 3)")

    def stage_of(self, step: int) -> int:
        """Stage (1, 2, 3) of the 0-based ``step``."""
        a, b, _ = self.stages
        return 1 if step < a else 2 if step < a + b else 3

    def stage_ends(self) -> list[int]:
        a, b, c = self.stages
        return [a, a + b, a + b + c]

    # ---- dataset-level preparation (called by gan.fit.fit before the first step, also on resume)
    def prepare(self, faces: Any, masks: Any, run_dir: Path) -> None:
        """Cluster the masked photos into K style domains (once), index them, fix the read-out set."""
        self._prep = {"masks": masks, "faces": faces, "run_dir": Path(run_dir)}
        feats = self._features_of(masks)
        if not bool(self.domains.fitted):
            sizes = self.domains.fit(feats, seed=self.train_cfg.seed)
            log.info("style domains (k-means, K=%d) over %d masked photos: sizes %s", self.domains.k, len(masks),
                     sizes.tolist())
        labels = self.domains.assign(feats.to(self.device)).cpu().numpy()
        self._prep["labels"] = labels
        self._prep["by_domain"] = [np.flatnonzero(labels == k) for k in range(self.domains.k)]
        self.domain_grid(masks, feats, Path(run_dir) / "stages")
        if self.cfg.lambda_wear > 0 and self.composite:   # a plain generator has no alpha to read
            self._prep["wear"] = face_wearing_maps(faces, self.train_cfg.size)
        rng = np.random.default_rng([self.train_cfg.seed, 424242])
        n = min(self.cfg.readout_n, len(faces))
        self._prep["readout_faces"] = np.sort(rng.choice(len(faces), size=n, replace=False))
        self._prep["readout_refs"] = self._reference_per_domain(rng)

    def domain_grid(self, masks: Any, feats: torch.Tensor, out: Path, n: int = 10) -> dict:
        """``domains.json`` (size and mean mask-region colour of each style domain) + ``domains_grid.png``
        (one row per domain: its ``n`` photos nearest the centroid), so the K domains can be seen to differ."""
        from mfrbench.imageio import save_image
        from mfrbench.viz import image_grid

        by = self._prep["by_domain"]
        z = (feats.float().to(self.domains.mu) - self.domains.mu) / self.domains.sigma
        rows, info = [], []
        for k, ix in enumerate(by):
            d = torch.cdist(z[ix], self.domains.centroids[k:k + 1])[:, 0] if len(ix) else torch.zeros(0)
            near = ix[np.argsort(d.cpu().numpy(), kind="stable")[:n]]
            imgs = list(masks.crops(near)) if len(near) else []
            rows += imgs + [np.full_like(imgs[0] if imgs else masks.crops([0])[0], 255)] * (n - len(imgs))
            info.append({"domain": k, "size": int(len(ix)),
                         "mean_rgb": [round(float(v), 3) for v in feats[ix, :3].mean(0)] if len(ix) else None})
        out.mkdir(parents=True, exist_ok=True)
        save_image(out / "domains_grid.png", image_grid(rows, cols=n, size=64))
        atomic_write_text(out / "domains.json", json.dumps(info, indent=2) + "\n")
        return {"domains": info}

    def _features_of(self, masks: Any, chunk: int = 64) -> torch.Tensor:
        out = []
        for i in range(0, len(masks), chunk):
            x = masks.batch(np.arange(i, min(i + chunk, len(masks))), np.zeros(min(chunk, len(masks) - i), bool),
                            self.device)
            out.append(mask_style_features(x, self.seg(x) if self.seg else None).cpu())
        return torch.cat(out)

    def _reference_per_domain(self, rng: np.random.Generator) -> np.ndarray:
        """One masked photo per non-empty domain (the reference column of grids and read-outs)."""
        return np.array([int(rng.choice(ix)) for ix in self._prep["by_domain"] if len(ix)], dtype=np.int64)

    def domain_of(self, images: torch.Tensor) -> torch.Tensor:
        """Style domain of masked images (nearest centroid of their Seg mask-region statistics)."""
        return self.domains.assign(mask_style_features(images, self.seg(images) if self.seg else None))

    # ---- MFGAN's parts of the CycleGAN step
    def _lambda_cor(self, real_f: torch.Tensor, fake_m: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        vis_in, vis_out = self.det(real_f), self.det(fake_m.detach())
        dis = L.visibility_disagreement(vis_in, vis_out, covered=self.cor_cov, threshold=c.cor_threshold)
        return L.correction_factor(L.penalty(dis, self.cor_w), alpha=c.cor_alpha, c=c.cor_c)  # (B,)

    def _second_reference(self, y: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        masks, by = self._prep["masks"], self._prep["by_domain"]
        idx = np.array([int(rng.choice(by[int(k)])) if len(by[int(k)]) else int(rng.integers(len(masks)))
                        for k in y.tolist()])
        return masks.batch(idx, np.zeros(len(idx), bool), self.device)

    def to_mask(self, x: torch.Tensor, s: torch.Tensor | None = None) -> torch.Tensor:
        """``G_M(x, s)``; ``s=None`` is the learned default style (stages 1-2, the identity term)."""
        return self.G_M(x, s)

    def style_args(self, s: torch.Tensor | None) -> tuple:
        return (s,)

    def style_codes(self, batch: GANBatch, rng: np.random.Generator) -> StyleCodes | None:
        """Stage 3 (with ``use_sty``): the masked photo's code ``E(m, y)`` and a same-domain second reference's."""
        if not (self.cfg.use_sty and self.stage_of(self.step) >= 3):
            return None
        y = self.domain_of(batch.masks)                                 # (B,) domains of the references
        target = self.E(batch.masks, y)                                 # (B, style_dim)
        second = self.E(self._second_reference(y, rng), y)
        return StyleCodes(target, second, y)

    def adversarial_weights(self, step: CycleStep) -> None:
        """lambda_cor per sample (eq. 1) on G_M's adversarial term and/or D_M's fake term (``cor_apply``).

        MFGAN's adversarial terms are always the per-sample form; a term lambda_cor does not apply
        to gets weight 1 (the same value as the plain mean).
        """
        c = self.cfg
        lam = self._lambda_cor(step.real_f, step.fake_m) if c.use_cor else None
        step.g_weight, step.d_weight = L.cor_weights(lam, len(step.fake_m), apply=c.cor_apply,
                                                     device=step.fake_m.device)
        if lam is not None:
            step.log["lambda_cor"] = float(lam.mean())

    def extra_generator_losses(self, step: CycleStep, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``mu * L_inv`` from stage 2 (eq. 4); ``lambda_sty * L_sty - lambda_ds * L_ds`` in stage 3 (eq. 7)."""
        c = self.cfg
        stage = self.stage_of(self.step)
        terms: dict[str, torch.Tensor] = {}
        batch = step.batch
        if "wear" in self._prep and step.alpha_m is not None and batch is not None and batch.face_idx is not None:
            flips = torch.as_tensor(batch.face_flips)[:, None, None]
            cover, eyes = (torch.where(flips, m.flip(-1), m).to(step.alpha_m.device)
                           for m in (r[torch.as_tensor(batch.face_idx)] for r in self._prep["wear"]))
            terms["wear"] = L.wearing_loss(step.alpha_m, cover, eyes) * c.lambda_wear
        if c.use_inv and stage >= 2:
            # the mask map: Seg's on the output (eq. 3), or the generator's own alpha (inv_region, see the docstring)
            prob = step.alpha_m if c.inv_region == "alpha" else self.seg(step.fake_m)
            s_f = L.non_mask_map(prob, threshold=c.seg_threshold)
            terms["inv"] = L.local_invariance_loss(step.fake_m, step.real_f, s_f) * c.lambda_inv
        codes = step.codes
        if codes is not None:
            # the target code is a constant of L_sty (StarGAN v2): E learns to recover it, not to move it
            terms["sty"] = L.style_reconstruction_loss(codes.target, self.E(step.fake_m, codes.domains)) * c.lambda_sty
            lam_ds = L.ds_weight(self.step - sum(self.stages[:2]), c.lambda_ds, self.stages[2] if c.ds_decay else None)
            fake_m2 = self.to_mask(step.real_f, codes.second).detach()
            terms["ds"] = -L.style_diversity_loss(step.fake_m, fake_m2) * lam_ds   # maximised: enters negated
            step.log["lambda_ds"] = lam_ds
        return terms

    def update_averages(self) -> None:
        super().update_averages()
        self.ema_E.update(self.E, self.step)

    def train_step(self, batch: GANBatch, rng: np.random.Generator) -> dict[str, float]:
        """CycleGAN's step with MFGAN's parts; logs the stage and writes the stage read-out at each stage end."""
        stage = self.stage_of(self.step)
        if self.cfg.use_sty and stage >= 3 and "masks" not in self._prep:
            raise MfrbenchError("MFGAN stage 3 needs the masked-photo bank: train through gan.fit.fit "
                                "(it calls prepare)")
        out = {**super().train_step(batch, rng), "stage": float(stage)}
        if self.step + 1 in self.stage_ends() and "run_dir" in self._prep:
            self.stage_report(stage)
        return out

    # ---- pictures and read-outs
    def reference_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed references (one per domain) and their domains."""
        masks = self._prep["masks"]
        idx = self._prep["readout_refs"]
        refs = masks.batch(idx, np.zeros(len(idx), bool), self.device)
        return refs, self.domain_of(refs)

    @torch.no_grad()
    def stylize(self, faces: torch.Tensor, refs: torch.Tensor | None, y: torch.Tensor | None = None) -> torch.Tensor:
        """EMA ``G_M(f, E(r))``; ``refs=None`` uses the default style. ``refs`` broadcast over faces if 1 image."""
        g, e = self.ema.net, self.ema_E.net
        faces = faces.to(self.device)
        if refs is None:
            return g(faces).float().clamp(-1, 1)
        refs = refs.to(self.device)
        if y is None:
            y = self.domain_of(refs)
        s = e(refs, y)
        if s.shape[0] == 1:
            s = s.expand(faces.shape[0], -1)
        return g(faces, s).float().clamp(-1, 1)

    @torch.no_grad()
    def sample_rows(self, batch: GANBatch) -> list[torch.Tensor]:
        """Grid rows: input faces | output (default style) | reference | output in that reference's style | G_F."""
        rows = [batch.faces, self.stylize(batch.faces, None), batch.masks, self.stylize(batch.faces, batch.masks)]
        rows.append(self.G_F(batch.masks).float().clamp(-1, 1))
        return rows

    @torch.no_grad()
    def stage_report(self, stage: int) -> dict:
        """Per-stage read-out (JSON + grid under ``RUN/stages/``): the metrics each stage claims to move."""
        from mfrbench.imageio import save_image
        from mfrbench.viz import image_grid

        run_dir, faces = self._prep["run_dir"], self._prep["faces"]
        fi = self._prep["readout_faces"]
        real = faces.batch(fi, np.zeros(len(fi), bool), self.device)
        refs, y = self.reference_batch()
        out = self.stylize(real, None)
        styled = [self.stylize(real, refs[k:k + 1], y[k:k + 1]) for k in range(len(refs))]
        report = {"stage": stage, "step": self.step + 1, **quality_readout(self, real, out, styled)}
        d = run_dir / "stages"
        atomic_write_text(d / f"stage{stage}.json", json.dumps(report, indent=2) + "\n")
        # grid: column 0 = reference (blank for the default style), then the faces; rows: inputs, default, each ref
        n = min(8, len(real))
        blank = torch.ones_like(real[:1])
        rows = [torch.cat([blank, real[:n]]), torch.cat([blank, out[:n]])]
        rows += [torch.cat([refs[k:k + 1], styled[k][:n]]) for k in range(len(refs))]
        tiles = [t for r in rows for t in to_uint8(r)]
        save_image(d / f"stage{stage}_grid.png", image_grid(tiles, cols=n + 1, size=max(64, real.shape[-1])))
        log.info("stage %d read-out: %s", stage, {k: v for k, v in report.items() if not isinstance(v, dict)})
        return report


# ------------------------------------------------------------------------------------ read-outs


def template_boxes(size: int) -> dict[str, tuple[int, int, int, int]]:
    """Nose and mouth boxes ``(y0, y1, x0, x1)`` on an aligned crop, from the ArcFace 5-point template."""
    from mfrbench.align import ARCFACE_TEMPLATE

    t = ARCFACE_TEMPLATE * (size / 112.0)
    r = size / 112.0
    nose = t[2]
    mouth_l, mouth_r = t[3], t[4]
    return {"nose": (int(nose[1] - 8 * r), int(nose[1] + 4 * r), int(nose[0] - 7 * r), int(nose[0] + 7 * r)),
            "mouth": (int(mouth_l[1] - 5 * r), int(mouth_l[1] + 5 * r), int(mouth_l[0]), int(mouth_r[0]) + 1)}


@torch.no_grad()
def quality_readout(model: MFGAN, real: torch.Tensor, out: torch.Tensor,
                    styled: Sequence[torch.Tensor] = ()) -> dict[str, Any]:
    """The numbers each stage claims to move, on one set of faces.

    * ``correct_wearing``: share of outputs whose lambda_cor penalty is 0 (Det's part verdicts
      match correct wearing on every weighted part), ``det_wearing_correct``: share that Det's
      wearing head calls ``correct``, and, per part, the share Det calls visible on the outputs;
    * ``nose_cov``/``mouth_cov``: mean share of the template nose/mouth box that Seg calls mask;
    * ``ssim_nonmask``/``psnr_nonmask``: input vs output outside Seg's mask, with the evaluator's
      definition (``mfrbench.metrics.quality.non_mask_ssim_psnr``); FID/KID are left to ``mfrbench quality``;
    * ``style_diversity``: mean L1 (in [-1, 1] units) between outputs for different references.
    """
    res: dict[str, Any] = {"n": int(real.shape[0])}
    if model.det is not None:
        vin, vout = model.det(real), model.det(out)
        dis = L.visibility_disagreement(vin, vout, covered=model.cor_cov, threshold=model.cfg.cor_threshold)
        x = L.penalty(dis, model.cor_w)
        res["correct_wearing"] = float((x == 0).float().mean())          # zero lambda_cor penalty
        wear = model.det.wearing(out)
        if wear is not None:                                              # Det's own wearing head
            res["det_wearing_correct"] = float((wear.argmax(1) == 0).float().mean())
        res["visible_on_output"] = {p: float((vout[:, i] > 0.5).float().mean()) for i, p in enumerate(model.det.parts)}
    if model.seg is not None:
        mp = model.seg(out)[:, 0] > model.cfg.seg_threshold                 # (B, S, S)
        for part, (y0, y1, x0, x1) in template_boxes(out.shape[-1]).items():
            res[f"{part}_cov"] = float(mp[:, y0:y1, x0:x1].float().mean())
        res["mask_area"] = float(mp.float().mean())
        r8, o8, keep = to_uint8(real), to_uint8(out), (~mp).cpu().numpy()
        vals = np.array([non_mask_ssim_psnr(r8[i], o8[i], keep[i]) for i in range(len(r8))])
        psnr = np.where(np.isinf(vals[:, 1]), np.nan, vals[:, 1])
        # NaN (not 0) when Seg leaves no non-mask pixel on any output: the metric is undefined there
        res["ssim_nonmask"] = float(np.nanmean(vals[:, 0])) if np.isfinite(vals[:, 0]).any() else float("nan")
        res["psnr_nonmask"] = float(np.nanmean(psnr)) if np.isfinite(psnr).any() else float("nan")
    if len(styled) >= 2:
        pairs = [(i, j) for i in range(len(styled)) for j in range(i + 1, len(styled))]
        res["style_diversity"] = float(np.mean([(styled[i] - styled[j]).abs().mean().item() for i, j in pairs]))
    res["fid"] = "left to `mfrbench quality`"
    return res


# ------------------------------------------------------------------------------ presets (Table III)

#: preset name -> MFGANConfig defaults that differ from ``mfgan``
PRESETS: dict[str, dict[str, Any]] = {
    "mfgan": {},
    "mfgan-no-inv": {"use_inv": False},
    "mfgan-no-cor": {"use_cor": False},
    "mfgan-no-sty": {"use_sty": False},
    # issue 14's ablation of the compositing output: the same MFGAN drawing the whole face (the paper's G_M)
    "mfgan-plain": {"output": "plain"},
}


def _preset_config(name: str, overrides: dict[str, Any]) -> type:
    """A subclass of :class:`MFGANConfig` whose defaults carry the preset (profiles and CLI overrides still apply)."""
    if not overrides:
        return MFGANConfig
    flds = [(k, type(v), dataclasses.field(default=v)) for k, v in overrides.items()]
    return dataclasses.make_dataclass(name.replace("-", "_").title().replace("_", "") + "Config", flds,
                                      bases=(MFGANConfig,), frozen=True)


for _name, _over in PRESETS.items():
    _spec = GANMethod(_name, MFGAN, _preset_config(_name, _over), preset=_over)
    GAN_METHODS.register((lambda spec: (lambda: spec))(_spec), name=_name)


def is_mfgan_method(name: str) -> bool:
    return name in PRESETS


# ----------------------------------------------------------------------------------- generation

REFERENCE_MODES = ("random", "fixed", "per-identity")


class MFGANMaskGenerator(GANMaskGenerator):
    """A trained MFGAN run as a reference-guided :class:`~mfrbench.generators.base.MaskGenerator` (paper Fig. 8).

    Without references every face gets the learned default style. With ``reference`` (a folder of
    masked photos, aligned once with YuNet into ``RUN/data/references-<hash>/``, or an aligned
    manifest), each face is masked in the style ``E_ema(r, domain(r))`` of a reference ``r``:

    * ``random``: each image draws its reference from its own RNG (``image_rng(seed, key)``), so the
      choice does not depend on batching, workers or order;
    * ``fixed``: one reference for all (``reference_index`` in the bank's sorted order);
    * ``per-identity``: all images of an identity share one reference (a hash of seed and identity;
      images without identity fall back to ``random``).

    Manifest columns added per image: ``reference`` (the reference's key), ``style_domain``,
    ``reference_mode``, ``mask_map_source`` (``seg``: the mask map is ``Seg`` on the output).
    """

    per_image_rng = True
    wants_identities = True
    family = "mfgan"  # every preset (mfgan, mfgan-no-inv, ...) is one family; the preset is the variant

    def __init__(self, model: "MFGAN", *, run_dir: str, reference: str | None = None, reference_mode: str = "random",
                 reference_index: int = 0, seed: int = 0, batch_size: int = 32, resolution: str = "full") -> None:
        super().__init__(model, run_dir=run_dir, seg=None, batch_size=batch_size, resolution=resolution)
        if reference_mode not in REFERENCE_MODES:
            raise MfrbenchError(f"Expected --reference-mode in {REFERENCE_MODES}, but got {reference_mode!r}")
        self.model: MFGAN = model
        self.reference, self.reference_mode, self.seed = reference, reference_mode, int(seed)
        self.bank: Any = None
        self.codes = self.domains = None
        if reference:
            import hashlib

            tag = hashlib.sha1(str(Path(reference).resolve()).encode()).hexdigest()[:10]
            self.bank = load_domain("references", reference, Path(run_dir) / "data" / f"references-{tag}",
                                    size=self.size, masked=True, min_face_px=model.train_cfg.min_face_px,
                                    progress=False)
            order = np.argsort(np.array(self.bank.keys), kind="stable")
            refs = self.bank.batch(order, np.zeros(len(order), bool), self.device)
            self.keys = [self.bank.keys[i] for i in order]
            with torch.no_grad():
                self.domains = model.domain_of(refs)                                  # (R,)
                self.codes = model.ema_E.net(refs, self.domains)                      # (R, style_dim)
            if not 0 <= reference_index < len(self.keys):
                raise MfrbenchError(f"Expected --reference-index in [0, {len(self.keys)}), but got {reference_index}")
            self.reference_index = int(reference_index)

    def _maps(self) -> str:
        # a compositing run's own alpha, else the run's own Seg on the output (from_run refuses a run without one)
        return "exact" if self.composite else "seg"

    def config(self) -> dict:
        return {**self.identity().to_dict(),
                "reference": str(Path(self.reference).resolve()) if self.reference else None,
                "reference_mode": self.reference_mode if self.reference else None, "seed": self.seed}

    @classmethod
    def from_run(cls, checkpoint: str | None, *, reference: str | None = None, reference_mode: str | None = None,
                 reference_index: int = 0, seed: int = 0, device: str | None = None, batch_size: int = 32,
                 resolution: str = "full", **_ignored: Any) -> "MFGANMaskGenerator":
        if not checkpoint:
            raise MfrbenchError("the mfgan generator needs --checkpoint RUN_DIR "
                                "(a run of `mfrbench train-gen --method mfgan`)")
        dev = choose_device(device)
        model = load_gan(checkpoint, dev)
        if not isinstance(model, MFGAN):
            raise MfrbenchError(f"{checkpoint} is a {model.train_cfg.method} run, not an MFGAN preset")
        if model.seg is None:
            raise MfrbenchError(f"{checkpoint} was trained without Seg; MFGAN generation needs it for the mask maps")
        return cls(model, run_dir=str(checkpoint), reference=reference, reference_mode=reference_mode or "random",
                   reference_index=reference_index, seed=seed, batch_size=batch_size, resolution=resolution)

    def _pick(self, rngs: Sequence[np.random.Generator], identities: Sequence[str | None] | None) -> np.ndarray:
        import hashlib

        n = len(self.keys)
        if self.reference_mode == "fixed":
            return np.full(len(rngs), self.reference_index)
        out = []
        for i, rng in enumerate(rngs):
            ident = identities[i] if identities is not None else None
            if self.reference_mode == "per-identity" and ident:
                h = int(hashlib.sha1(f"{self.seed}:{ident}".encode()).hexdigest()[:8], 16)
                out.append(h % n)
            else:
                out.append(int(rng.integers(n)))
        return np.array(out)

    @torch.no_grad()
    def generate(self, images: np.ndarray, landmarks: np.ndarray | None = None, *, rng: Any,
                 identities: Sequence[str | None] | None = None) -> "GeneratedBatch":
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"Expected uint8 images of shape (B, H, W, 3), but got {images.dtype} {images.shape}")
        rngs = rng if isinstance(rng, (list, tuple)) else [rng] * len(images)
        pick = self._pick(rngs, identities) if self.codes is not None else None
        g = self.model.ema.net
        outs, maps, info = [], [], []
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(images[i:i + self.batch_size]).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
            h, w = x.shape[-2:]
            s = self.codes[torch.as_tensor(pick[i:i + len(x)], device=self.device)] if pick is not None else None
            if self.composite:  # the exact map is the generator's own alpha
                y, m = translate_crops(g, x, self.size, args=(s,), resolution=self.resolution)
                outs.append(to_uint8(y))
                maps.append(m.to(torch.uint8).cpu().numpy())
                continue
            xi = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                               antialias=True) if (h, w) != (self.size, self.size) else x
            y = g(xi, s).float().clamp(-1, 1)
            m = self.model.seg(y)[:, 0] > self.model.cfg.seg_threshold               # (B, S, S) at training size
            if (h, w) != (self.size, self.size):
                y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False).clamp(-1, 1)
                m = F.interpolate(m[:, None].float(), size=(h, w), mode="nearest")[:, 0] > 0.5
            outs.append(to_uint8(y))
            maps.append(m.to(torch.uint8).cpu().numpy())
        for j in range(len(images)):
            row = {"mask_type": "mfgan", "wearing": "", "gan_run": self.run_dir, "mask_map_source": self._map_source(),
                   "gan_method": self.model.train_cfg.method}
            if pick is not None:
                row.update(reference=self.keys[int(pick[j])], style_domain=int(self.domains[int(pick[j])]),
                           reference_mode=self.reference_mode)
            else:
                row.update(reference="", style_domain=-1, reference_mode="default-style")
            info.append(row)
        return GeneratedBatch(np.concatenate(outs), np.concatenate(maps), info)


@register_generator
def mfgan(checkpoint: str | None = None, reference: str | None = None, reference_mode: str | None = None,
          seed: int = 0, **kw: Any) -> MFGANMaskGenerator:
    """A trained MFGAN run (any preset; ``checkpoint=RUN_DIR``) as a reference-guided :class:`MaskGenerator`."""
    return MFGANMaskGenerator.from_run(checkpoint, reference=reference, reference_mode=reference_mode, seed=seed, **kw)
