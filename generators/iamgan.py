"""IAMGAN mask generator: CycleGAN + segmentation-guided multi-level identity preservation.

Paper: Geng, Peng, Huang, Tian, "Masked Face Recognition with Generative Data Augmentation and
Domain Constrained Ranking", ACM Multimedia 2020 (IAMGAN = Identity Aware Mask GAN), as
summarised in the MFGAN paper (Sec. II, III-C: "Geng et al. adopted U-Net to guide masked face
generation"). No official code was available here; this is our reading.

What IAMGAN adds to :class:`~mfrbench.generators.cyclegan.CycleGAN` (the ``G_M`` objective only):

* **pixel level** ``pix``: ``lambda_pix * sum(|G_M(f) - f| * (1 - Seg(G_M(f)))) / sum(1 - Seg(G_M(f)))``,
  an L1 on the region that ``Seg`` says is *not* mask, so the generator may paint the mask but
  must leave the eyes, forehead and background untouched;
* **feature level** ``feat``: ``lambda_feat * (1 - cos(E(f), E(G_M(f))))`` with ``E`` a frozen face
  recognizer (a ``mfrbench train-fr`` run loaded with
  :func:`mfrbench.recognizers.embed.load_backbone`; input 112 x 112 in ``(x - 127.5) / 127.5``,
  which is exactly our ``[-1, 1]``), so the masked face keeps the identity.

Gaps in the paper that we had to fill (documented choices, all in :class:`IAMGANConfig`):

1. *Seg map on which image?* We segment the **generated** image (as MFGAN's Eq. 3 does, and as
   the mask exists only there) and **detach** it: a map with gradients would let ``G_M`` lower
   the loss by making the mask look bigger to ``Seg``. Maps are soft probabilities, not thresholded.
2. *Pixel loss norm and weight*: L1 (CycleGAN's reconstruction norm; MFGAN's ``L_inv`` uses L2),
   normalised by the non-mask area, ``lambda_pix = 10`` (the cycle weight's scale).
3. *"Multi-level" features*: we use the recognizer's final embedding (cosine), not intermediate
   feature maps; ``lambda_feat = 1``. The recognizer sees the 112-px upsampled images.
4. *Which recognizer*: any ``train-fr`` run; without one (``recognizer=None``) the feature term
   is off and the run's config says so (``feature_loss: off``); a warning is logged.
5. *Seg*: trained here on ``mtf`` outputs (``mfrbench train-aux --module seg``), not on the
   authors' data. ``seg_checkpoint`` is required: without it this would be plain CycleGAN.
6. The terms start from step 0 (no warm-up), and ``G_F`` gets no extra term.

``pix_region="alpha"`` (compositing output only; not the paper's, which has no alpha) takes the
non-mask region from the generator's own exact map instead of Seg: ``keep = 1 - A`` (detached), so the
term is ``sum(A (1 - A) |C - f|) / sum(1 - A)``. It is zero where ``A`` is 0 or 1 and penalises only
a translucent mask, where Seg's map also penalises a faint mask that Seg misses as a changed face.
Measured at ``cpu`` size (docs/generators.md): no gain (Seg-correct 0.69 against 0.88 with Seg's map,
same seed; the seed alone moves it 0.88 -> 0.56), so ``seg`` stays the default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mfrbench.errors import MfrbenchError
from mfrbench.generators.base import register_generator
from mfrbench.generators.cyclegan import CycleGAN, CycleGANConfig, CycleStep
from mfrbench.generators.gan.composite import check_mask_source
from mfrbench.generators.gan.contract import register_gan_method
from mfrbench.generators.gan.generator import GANMaskGenerator
from mfrbench.generators.gan.pool_ema import set_requires_grad

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IAMGANConfig(CycleGANConfig):
    """CycleGAN's settings plus IAMGAN's identity terms."""

    lambda_pix: float = 10.0          # segmentation-guided L1 on the non-mask region
    lambda_feat: float = 1.0          # 1 - cos(E(f), E(G_M(f)))
    pix_region: str = "seg"           # non-mask region of `pix`: "seg" (Seg of G_M(f), the paper's) or "alpha"
    seg_checkpoint: str | None = None  # a `train-aux --module seg` run (required)
    recognizer: str | None = None      # a `train-fr` run (optional; feature term off without it)


@register_gan_method("iamgan", IAMGANConfig)
class IAMGAN(CycleGAN):
    """CycleGAN with IAMGAN's pixel- and feature-level identity terms on ``G_M`` (see the module docstring)."""

    cfg: IAMGANConfig

    def build(self) -> None:
        check_mask_source("pix_region", self.cfg.pix_region, self.cfg.output)
        super().build()
        from mfrbench.generators.seg import load_seg

        if not self.cfg.seg_checkpoint:
            raise MfrbenchError("iamgan needs a segmentation model: --set seg_checkpoint=SEG_RUN "
                                "(train one with `mfrbench train-aux --module seg`)")
        self.seg = load_seg(self.cfg.seg_checkpoint, self.device)
        self.recognizer = None
        if self.cfg.recognizer:
            from mfrbench.recognizers.embed import load_backbone

            net, self.recognizer_info = load_backbone(self.cfg.recognizer)
            self.recognizer = net.to(self.device).eval()
            set_requires_grad([self.recognizer], False)
        elif self.cfg.lambda_feat > 0:
            log.warning("iamgan: no --set recognizer=FR_RUN given: the feature-level identity term is off")

    def extra_generator_losses(self, step: CycleStep, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """IAMGAN's two terms on CycleGAN's ``G_M(f)`` (see :meth:`identity_terms`)."""
        return self.identity_terms(step.real_f, step.fake_m, step.alpha_m)

    def identity_terms(self, real_f: torch.Tensor, fake_m: torch.Tensor, alpha: torch.Tensor | None = None
                       ) -> dict[str, torch.Tensor]:
        """Weighted pixel-level (``pix``) and feature-level (``feat``) identity terms of ``fake_m = G_M(real_f)``
        (``alpha``: G_M's alpha map, the non-mask region under ``pix_region="alpha"``)."""
        with torch.no_grad():
            if self.cfg.pix_region == "alpha":
                keep = 1.0 - alpha.detach().float()                     # the generator's own exact map
            else:
                keep = 1.0 - self.seg.probs(fake_m.detach().float())    # (B, 1, S, S), 1 = not mask
        diff = (fake_m - real_f).abs().mean(1, keepdim=True)           # (B, 1, S, S)
        terms = {"pix": self.cfg.lambda_pix * (diff * keep).sum() / keep.sum().clamp_min(1.0)}
        if self.recognizer is not None and self.cfg.lambda_feat > 0:
            def emb(x: torch.Tensor) -> torch.Tensor:
                if x.shape[-1] != 112:
                    x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False)
                return F.normalize(self.recognizer(x.float()), dim=1)

            with torch.no_grad():
                e_real = emb(real_f)
            cos = (emb(fake_m) * e_real).sum(1)
            terms["feat"] = self.cfg.lambda_feat * (1.0 - cos).mean()
        return terms


@register_generator
def iamgan(checkpoint: str | None = None, seg_checkpoint: str | None = None, device: str | None = None,
           batch_size: int = 32, resolution: str = "full"):
    """A trained IAMGAN run (``checkpoint=RUN_DIR``) as a :class:`MaskGenerator` (maps from its own Seg by default;
    a compositing run's maps are its alpha)."""
    return GANMaskGenerator.from_run(checkpoint, expect="iamgan", seg_checkpoint=seg_checkpoint, device=device,
                                     batch_size=batch_size, resolution=resolution)
