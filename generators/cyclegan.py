"""CycleGAN mask generator, and the parts of its training step that IAMGAN and MFGAN reuse.

Paper: Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks", ICCV 2017, https://arxiv.org/abs/1703.10593
Architecture and losses follow junyanz/pytorch-CycleGAN-and-pix2pix (ResNet generator, 70x70
PatchGAN, LSGAN, cycle weight 10, identity weight 0.5, image pool of 50, Adam(0.5, 0.999)).
Domain *Face* = aligned unmasked crops, domain *Mask* = aligned real masked photos. Names follow
the MFGAN paper: ``G_M`` (face -> masked face), ``G_F`` (masked -> face), ``D_M``, ``D_F``.

The step is composed of named parts, so a family built on CycleGAN changes parameters and adds
terms instead of copying the step (:meth:`CycleGAN.train_step` lists them):

* :meth:`~CycleGAN.style_codes` -> :class:`StyleCodes` or ``None``: the code ``G_M`` is given
  (none here; MFGAN's reference styles);
* :meth:`~CycleGAN.cycle` -> :class:`CycleStep`: the four generator passes, through
  :meth:`~CycleGAN.to_mask` (``G_M`` with the step's style code);
* :meth:`~CycleGAN.adversarial_weights`: per-sample weights of ``G_M``'s adversarial term and of
  ``D_M``'s fake term (none here; MFGAN's lambda_cor), the latter carried through the image pool;
* :meth:`~CycleGAN.generator_terms` (adversarial, cycle, identity) + :meth:`~CycleGAN.extra_generator_losses`
  (IAMGAN's identity terms, MFGAN's ``L_inv`` / ``L_sty`` / ``L_ds``);
* :meth:`~CycleGAN.discriminator_terms` on pooled fakes; :meth:`~CycleGAN.update_averages` (EMA).

Output (``output``, issue 14): ``plain`` (the reference's generator re-draws the whole image; the
``paper`` profile) or ``composite`` (the ``cpu`` profile): ``G_M`` and ``G_F`` predict content and an
alpha map and output ``A * C + (1 - A) * x`` (:mod:`~mfrbench.generators.gan.composite`; AttentionGAN,
GANimation), with ``lambda_alpha_l1 * mean(A) + lambda_alpha_tv * TV(A)`` and a per-image bound on
the drawn area (``lambda_alpha_area``, ``alpha_area``) on the alpha of each generator's pass on real
images (logged as ``alpha_M_l1``, ``alpha_M_tv``, ``alpha_M_area``, and the same for ``F``).

Train with ``mfrbench train-gen --method cyclegan``; generate with
``mfrbench generate --method cyclegan --checkpoint RUN_DIR`` (:class:`GANMaskGenerator`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mfrbench.errors import MfrbenchError
from mfrbench.generators._blocks import UPSAMPLE_KINDS, PatchDiscriminator, ResnetGenerator
from mfrbench.generators.base import register_generator
from mfrbench.generators.gan.composite import CompositeGenerator, alpha_regularizer, check_output
from mfrbench.generators.gan.contract import TrainableGAN, register_gan_method
from mfrbench.generators.gan.data import GANBatch
from mfrbench.generators.gan.generator import GANMaskGenerator
from mfrbench.generators.gan.losses import l1, lsgan_d_loss, lsgan_g_loss, lsgan_loss
from mfrbench.generators.gan.pool_ema import EMA, ImagePool, set_requires_grad


@dataclass(frozen=True)
class CycleGANConfig:
    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 6
    n_layers_d: int = 3
    norm: str = "instance"
    lambda_cycle: float = 10.0      # lambda_A = lambda_B in the reference
    lambda_identity: float = 0.5    # times lambda_cycle, as in the reference
    pool_size: int = 50
    output: str = "plain"           # plain | composite: A * C + (1 - A) * x (issue 14)
    upsample: str = "deconv"        # deconv (CycleGAN) | resize (nearest 2x + conv: no checkerboard)
    lambda_alpha_l1: float = 0.05   # composite only: sparsity, mean(A)
    lambda_alpha_tv: float = 1.0    # composite only: smoothness of A (mean total variation)
    lambda_alpha_area: float = 10.0  # composite only: each image's drawn area kept inside alpha_area
    alpha_area: tuple[float, float] = (0.15, 0.35)
    alpha_bias_init: float = -0.55  # composite only: initial alpha-channel bias (A ~ 0.25)
    cycle_drawn_weight: float = 1.0  # composite only: cycle L1 weight where the first pass drew (cycle_weight)

    def __post_init__(self) -> None:
        check_output(self.output)
        if self.upsample not in UPSAMPLE_KINDS:
            raise MfrbenchError(f"Expected upsample in {UPSAMPLE_KINDS}, but got {self.upsample!r}")
        object.__setattr__(self, "alpha_area", tuple(float(v) for v in self.alpha_area))
        if not 0.0 <= self.cycle_drawn_weight <= 1.0:
            raise MfrbenchError(f"Expected cycle_drawn_weight in [0, 1], but got {self.cycle_drawn_weight}")


@dataclass
class StyleCodes:
    """The style codes of a reference-guided step (StarGAN v2's ``s_trg`` / ``s_trg2``; MFGAN §III-D).

    ``G_M`` is conditioned on ``target`` in both of its passes (face -> mask, and the cycle back to
    the masked photo); ``second`` is a second reference's code for a diversity term.
    """

    target: torch.Tensor            # (B, style_dim)
    second: torch.Tensor | None     # (B, style_dim)
    domains: torch.Tensor           # (B,) style domain of each reference


def cycle_weight(alpha: torch.Tensor | None, drawn: float) -> torch.Tensor | None:
    """Per-pixel weight of a cycle L1: ``drawn`` where the first pass drew (its alpha), 1 where it kept the input.

    A mask hides what is under it, so ``G_F(G_M(x)) = x`` can only hold inside the mask if ``G_M`` hides
    the mouth in the mask: CycleGAN meets its cycle loss by such hidden signals (Chu, Zhmoginov, Sandler,
    "CycleGAN, a Master of Steganography", arXiv:1712.02950, 2017). ``drawn < 1`` asks less of the cycle
    there. The alpha is detached: the weight must not pay ``G_M`` to draw more. ``None`` (plain output, or
    ``drawn == 1``): the plain L1.

    >>> a = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3)
    >>> cycle_weight(a, 0.0).flatten().tolist(), cycle_weight(a, 1.0)
    ([1.0, 0.5, 0.0], None)
    """
    if alpha is None or drawn == 1.0:
        return None
    return 1 - (1 - drawn) * alpha.detach()


@dataclass
class CycleStep:
    """One step's generator outputs and per-sample weights: what every loss term of the step reads."""

    real_f: torch.Tensor            # (B, 3, S, S) faces
    real_m: torch.Tensor            # (B, 3, S, S) masked photos
    fake_m: torch.Tensor            # G_M(f, s)
    rec_f: torch.Tensor             # G_F(G_M(f, s))
    fake_f: torch.Tensor            # G_F(m)
    rec_m: torch.Tensor             # G_M(G_F(m), s)
    codes: StyleCodes | None = None
    alpha_m: torch.Tensor | None = None     # (B, 1, S, S) G_M's alpha on the faces (composite output)
    alpha_f: torch.Tensor | None = None     # (B, 1, S, S) G_F's alpha on the masked photos
    g_weight: torch.Tensor | None = None    # (B,) weight of G_M's adversarial term per sample (None: plain LSGAN)
    d_weight: torch.Tensor | None = None    # (B,) weight of D_M's fake term per fake, pooled with its image
    log: dict[str, float] = field(default_factory=dict)   # readings for the loss log (not losses)
    batch: GANBatch | None = None           # the step's batch (its face indices: per-face terms, MFGAN's lambda_wear)


@register_gan_method("cyclegan", CycleGANConfig)
class CycleGAN(TrainableGAN):
    """Unpaired face -> masked-face translation with cycle consistency; the parts of the step are listed
    in the module docstring (IAMGAN and MFGAN override some of them)."""

    cfg: CycleGANConfig

    def build(self) -> None:
        c = self.cfg
        self.make_networks()
        self.ema = EMA(self.G_M, self.train_cfg.ema_decay)
        self.opt["G"] = self.adam(self.generator_parameters())
        self.opt["D"] = self.adam(list(self.D_M.parameters()) + list(self.D_F.parameters()))
        self.pools = {"fake_M": ImagePool(c.pool_size), "fake_F": ImagePool(c.pool_size)}

    def make_networks(self) -> None:
        """Create ``G_M``, ``G_F``, ``D_M``, ``D_F`` (in this order: it fixes their seeded initialisation)."""
        c = self.cfg
        self.G_M = self.output_head(ResnetGenerator(out_ch=self.out_channels(), ngf=c.ngf, n_blocks=c.n_blocks,
                                                    norm=c.norm, upsample=c.upsample))
        self.G_F = self.output_head(ResnetGenerator(out_ch=self.out_channels(), ngf=c.ngf, n_blocks=c.n_blocks,
                                                    norm=c.norm, upsample=c.upsample))
        self.D_M = PatchDiscriminator(ndf=c.ndf, n_layers=c.n_layers_d, norm=c.norm)
        self.D_F = PatchDiscriminator(ndf=c.ndf, n_layers=c.n_layers_d, norm=c.norm)

    @property
    def composite(self) -> bool:
        return self.cfg.output == "composite"

    def out_channels(self) -> int:
        """Channels of a generator network: 3 (plain), or 3 + alpha (composite)."""
        return 4 if self.composite else 3

    def output_head(self, net: nn.Module) -> nn.Module:
        """``net`` as is (plain), or wrapped in a :class:`CompositeGenerator` with its alpha bias set."""
        if not self.composite:
            return net
        last = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
        with torch.no_grad():
            last.bias[3] = self.cfg.alpha_bias_init
        return CompositeGenerator(net)

    def generator_parameters(self) -> list[nn.Parameter]:
        """What the generator optimiser ``opt["G"]`` steps."""
        return list(self.G_M.parameters()) + list(self.G_F.parameters())

    def networks(self) -> dict[str, nn.Module]:
        return {"G_M": self.G_M, "G_F": self.G_F, "D_M": self.D_M, "D_F": self.D_F, "G_M_ema": self.ema.net}

    # ---- the parts of the step (override these, not train_step)
    def style_codes(self, batch: GANBatch, rng: np.random.Generator) -> StyleCodes | None:
        """The step's style codes for ``G_M`` (``None``: an unconditioned generator, as here)."""
        return None

    def to_mask(self, x: torch.Tensor, s: torch.Tensor | None = None) -> torch.Tensor:
        """``G_M`` with style code ``s`` (CycleGAN's ``G_M`` takes none)."""
        return self.G_M(x)

    def style_args(self, s: torch.Tensor | None) -> tuple:
        """The extra arguments of ``G_M`` for style code ``s`` (none in CycleGAN)."""
        return ()

    def to_mask_alpha(self, x: torch.Tensor, s: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``G_M(x, s)`` and its alpha map ``(B, 1, S, S)`` (``None`` for a plain generator)."""
        if not isinstance(self.G_M, CompositeGenerator):
            return self.to_mask(x, s), None
        out, _, alpha = self.G_M.parts(x, *self.style_args(s))
        return out, alpha

    def to_face_alpha(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``G_F(x)`` and its alpha map (``None`` for a plain generator)."""
        if not isinstance(self.G_F, CompositeGenerator):
            return self.G_F(x), None
        out, _, alpha = self.G_F.parts(x)
        return out, alpha

    def cycle(self, batch: GANBatch, codes: StyleCodes | None) -> CycleStep:
        """The four generator passes: ``f -> G_M -> G_F`` and ``m -> G_F -> G_M`` (both ``G_M`` passes get the code)."""
        s = codes.target if codes is not None else None
        fake_m, alpha_m = self.to_mask_alpha(batch.faces, s)
        rec_f = self.G_F(fake_m)
        fake_f, alpha_f = self.to_face_alpha(batch.masks)
        rec_m = self.to_mask(fake_f, s)
        return CycleStep(batch.faces, batch.masks, fake_m, rec_f, fake_f, rec_m, codes, alpha_m, alpha_f, batch=batch)

    def adversarial_weights(self, step: CycleStep) -> None:
        """Set ``step.g_weight`` / ``step.d_weight`` (per-sample weights of the ``D_M`` terms); none in CycleGAN."""

    def generator_terms(self, step: CycleStep) -> dict[str, torch.Tensor]:
        """CycleGAN's generator objective, weighted: adversarial (LSGAN), cycle (L1) and identity (L1) terms."""
        c = self.cfg
        terms = {
            "G_M_gan": lsgan_g_loss(self.D_M(step.fake_m), step.g_weight),
            "G_F_gan": lsgan_loss(self.D_F(step.fake_f), True),
            "cyc_F": l1(step.rec_f, step.real_f, cycle_weight(step.alpha_m, c.cycle_drawn_weight)) * c.lambda_cycle,
            "cyc_M": l1(step.rec_m, step.real_m, cycle_weight(step.alpha_f, c.cycle_drawn_weight)) * c.lambda_cycle,
        }
        if c.lambda_identity > 0:  # G_M should leave masked faces alone, G_F unmasked ones
            w = c.lambda_cycle * c.lambda_identity
            terms["idt_M"] = l1(self.to_mask(step.real_m), step.real_m) * w
            terms["idt_F"] = l1(self.G_F(step.real_f), step.real_f) * w
        for name, alpha in (("M", step.alpha_m), ("F", step.alpha_f)):
            if alpha is not None:  # composite output: sparse, smooth alpha (GANimation, AttentionGAN)
                reg = alpha_regularizer(alpha, l1=c.lambda_alpha_l1, tv=c.lambda_alpha_tv, area=c.alpha_area,
                                        area_weight=c.lambda_alpha_area)
                terms.update({f"alpha_{name}_{k[6:]}": v for k, v in reg.items()})
        return terms

    def extra_generator_losses(self, step: CycleStep, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Weighted terms a family adds to the generator objective (none in CycleGAN)."""
        return {}

    def update_averages(self) -> None:
        """EMA of the sampling networks after the generator step."""
        self.ema.update(self.G_M, self.step)

    def discriminator_terms(self, step: CycleStep, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """LSGAN losses of ``D_M`` and ``D_F`` on real images and pooled fakes (``D_M``'s fakes keep their weight)."""
        pool_m = self.pools["fake_M"]
        if step.d_weight is None:
            pooled_m, pooled_w = pool_m.query(step.fake_m.detach(), rng), None
        else:
            pooled_m, pooled_w = pool_m.query_weighted(step.fake_m, step.d_weight, rng)
        pooled_f = self.pools["fake_F"].query(step.fake_f.detach(), rng)
        with self.autocast():
            return {"D_M": lsgan_d_loss(self.D_M(step.real_m), self.D_M(pooled_m), pooled_w),
                    "D_F": lsgan_d_loss(self.D_F(step.real_f), self.D_F(pooled_f))}

    def train_step(self, batch: GANBatch, rng: np.random.Generator) -> dict[str, float]:
        """Generators (+ whatever the codes' encoder is) on the generator terms, then the discriminators."""
        set_requires_grad([self.D_M, self.D_F], False)
        self.opt["G"].zero_grad(set_to_none=True)
        with self.autocast():
            codes = self.style_codes(batch, rng)
            step = self.cycle(batch, codes)
            self.adversarial_weights(step)
            terms = self.generator_terms(step)
            terms.update(self.extra_generator_losses(step, rng))
            loss_g = sum(terms.values())
        loss_g.backward()
        self.opt["G"].step()
        self.update_averages()
        set_requires_grad([self.D_M, self.D_F], True)
        self.opt["D"].zero_grad(set_to_none=True)
        d_terms = self.discriminator_terms(step, rng)
        sum(d_terms.values()).backward()
        self.opt["D"].step()
        return {**{k: float(v.detach()) for k, v in terms.items()}, **step.log,
                **{k: float(v.detach()) for k, v in d_terms.items()}}


@register_generator
def cyclegan(checkpoint: str | None = None, seg_checkpoint: str | None = None, device: str | None = None,
             batch_size: int = 32, resolution: str = "full") -> "GANMaskGenerator":
    """A trained CycleGAN run (``checkpoint=RUN_DIR``) as a :class:`MaskGenerator`; maps from ``seg_checkpoint``
    (a compositing run's maps are its own alpha; ``resolution``: ``full`` composites at the crop's size)."""
    return GANMaskGenerator.from_run(checkpoint, expect="cyclegan", seg_checkpoint=seg_checkpoint, device=device,
                                     batch_size=batch_size, resolution=resolution)
