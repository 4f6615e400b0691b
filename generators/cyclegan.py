"""CycleGAN mask generator.

Paper: Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks", ICCV 2017, https://arxiv.org/abs/1703.10593
Architecture and losses follow junyanz/pytorch-CycleGAN-and-pix2pix (ResNet generator, 70x70
PatchGAN, LSGAN, cycle weight 10, identity weight 0.5, image pool of 50, Adam(0.5, 0.999)).
Domain *Face* = aligned unmasked crops, domain *Mask* = aligned real masked photos. Names follow
the MFGAN paper: ``G_M`` (face -> masked face), ``G_F`` (masked -> face), ``D_M``, ``D_F``.

Train with ``mfrbench train-gen --method cyclegan``; generate with
``mfrbench generate --method cyclegan --checkpoint RUN_DIR`` (:class:`GANMaskGenerator`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mfrbench.generators._blocks import PatchDiscriminator, ResnetGenerator
from mfrbench.generators.base import register_generator
from mfrbench.generators.gan_core import (EMA, GANBatch, ImagePool, TrainableGAN, l1, lsgan_loss,
                                          register_gan_method, set_requires_grad)


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


@register_gan_method("cyclegan", CycleGANConfig)
class CycleGAN(TrainableGAN):
    """Unpaired face -> masked-face translation with cycle consistency.

    Subclasses add generator loss terms through :meth:`extra_generator_losses` (IAMGAN).
    """

    cfg: CycleGANConfig

    def build(self) -> None:
        c = self.cfg
        self.G_M = ResnetGenerator(ngf=c.ngf, n_blocks=c.n_blocks, norm=c.norm)
        self.G_F = ResnetGenerator(ngf=c.ngf, n_blocks=c.n_blocks, norm=c.norm)
        self.D_M = PatchDiscriminator(ndf=c.ndf, n_layers=c.n_layers_d, norm=c.norm)
        self.D_F = PatchDiscriminator(ndf=c.ndf, n_layers=c.n_layers_d, norm=c.norm)
        self.ema = EMA(self.G_M, self.train_cfg.ema_decay)
        self.opt["G"] = self.adam(list(self.G_M.parameters()) + list(self.G_F.parameters()))
        self.opt["D"] = self.adam(list(self.D_M.parameters()) + list(self.D_F.parameters()))
        self.pools = {"fake_M": ImagePool(c.pool_size), "fake_F": ImagePool(c.pool_size)}

    def networks(self) -> dict[str, nn.Module]:
        return {"G_M": self.G_M, "G_F": self.G_F, "D_M": self.D_M, "D_F": self.D_F, "G_M_ema": self.ema.net}

    def extra_generator_losses(self, real_f: torch.Tensor, fake_m: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted extra terms for the generator objective (none in CycleGAN)."""
        return {}

    def train_step(self, batch: GANBatch, rng: np.random.Generator) -> dict[str, float]:
        c = self.cfg
        real_f, real_m = batch.faces, batch.masks
        # ---- generators
        set_requires_grad([self.D_M, self.D_F], False)
        self.opt["G"].zero_grad(set_to_none=True)
        with self.autocast():
            fake_m = self.G_M(real_f)
            rec_f = self.G_F(fake_m)
            fake_f = self.G_F(real_m)
            rec_m = self.G_M(fake_f)
            terms = {
                "G_M_gan": lsgan_loss(self.D_M(fake_m), True),
                "G_F_gan": lsgan_loss(self.D_F(fake_f), True),
                "cyc_F": l1(rec_f, real_f) * c.lambda_cycle,
                "cyc_M": l1(rec_m, real_m) * c.lambda_cycle,
            }
            if c.lambda_identity > 0:  # G_M should leave masked faces alone, G_F unmasked ones
                w = c.lambda_cycle * c.lambda_identity
                terms["idt_M"] = l1(self.G_M(real_m), real_m) * w
                terms["idt_F"] = l1(self.G_F(real_f), real_f) * w
            terms.update(self.extra_generator_losses(real_f, fake_m))
            loss_g = sum(terms.values())
        loss_g.backward()
        self.opt["G"].step()
        self.ema.update(self.G_M, self.step)
        # ---- discriminators (on pooled fakes)
        set_requires_grad([self.D_M, self.D_F], True)
        self.opt["D"].zero_grad(set_to_none=True)
        pooled_m = self.pools["fake_M"].query(fake_m.detach(), rng)
        pooled_f = self.pools["fake_F"].query(fake_f.detach(), rng)
        with self.autocast():
            d_m = 0.5 * (lsgan_loss(self.D_M(real_m), True) + lsgan_loss(self.D_M(pooled_m), False))
            d_f = 0.5 * (lsgan_loss(self.D_F(real_f), True) + lsgan_loss(self.D_F(pooled_f), False))
        (d_m + d_f).backward()
        self.opt["D"].step()
        out = {k: float(v.detach()) for k, v in terms.items()}
        out.update(D_M=float(d_m.detach()), D_F=float(d_f.detach()))
        return out


@register_generator
def cyclegan(checkpoint: str | None = None, seg_checkpoint: str | None = None, device: str | None = None,
             batch_size: int = 32) -> "GANMaskGenerator":
    """A trained CycleGAN run (``checkpoint=RUN_DIR``) as a :class:`MaskGenerator`; mask maps from ``seg_checkpoint``."""
    from mfrbench.generators.gan_core import GANMaskGenerator

    return GANMaskGenerator.from_run(checkpoint, expect="cyclegan", seg_checkpoint=seg_checkpoint, device=device,
                                     batch_size=batch_size)
