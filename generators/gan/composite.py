"""Compositing generators: content ``C`` and alpha ``A``, output ``A * C + (1 - A) * x`` (issue 14).

A plain CycleGAN generator re-draws the whole face at its own (64-px) resolution, so every pixel it
was not meant to touch comes back blurred. A compositing generator predicts, from the same network,
three content channels ``C`` and one alpha channel ``A`` (1 = drawn by the generator, 0 = the
input's own pixel) and outputs ``A * C + (1 - A) * x``:

* AttentionGAN (Tang, Liu, Xu, Sebe, "AttentionGAN: Unpaired Image-to-Image Translation using
  Attention-Guided Generative Adversarial Networks", arXiv:1911.11897, 2019; code
  github:Ha0Tang/AttentionGAN): foreground attention masks fuse the generated content with the
  input, and the TV norm of the attention is the regulariser its scheme I names;
* GANimation (Pumarola et al., "GANimation: Anatomically-aware Facial Animation from a Single
  Image", ECCV 2018; code github:albertpumarola/GANimation, ``models/ganimation.py``): the same
  fusion, regularised by a weighted mean of the attention map (``lambda_mask``) plus its total
  variation (``lambda_mask_smooth``), on both the forward and the cycle pass. GANimation's map is
  "keep the input" (ours is its complement), and its mean term exists because "the mask could easily
  saturate to" keeping the input, which makes the output equal the input.

We measured that saturation here: with only an L1 on the drawn area (``lambda_alpha_l1`` 1.0 or 0.1),
``A`` went to 0 within the first 100 steps of a ``cpu`` MFGAN run (mask area 0.4 %, non-mask SSIM
0.9999): the cycle terms (weight 10) are exactly 0 for ``A = 0``, so they pull both generators to the
identity faster than the discriminator pulls ``G_M`` to a mask. Our regulariser (:func:`alpha_regularizer`)
therefore has GANimation's two roles, each as a bound on the drawn area per image ``a_i = mean(A_i)``:
``lambda_alpha_area * mean_i(relu(lo - a_i) + relu(a_i - hi))`` (no identity collapse below ``lo``,
no re-drawn face above ``hi``; ``alpha_area = (lo, hi)``, default ``(0.15, 0.35)``: the 10th-90th
percentile of the mask area Seg finds on the kit's aligned real masked photos is 0.15-0.31, median
0.26), plus ``lambda_alpha_l1 * mean(A)`` (small: clean zeros outside the mask) and
``lambda_alpha_tv * TV(A)`` with TV the mean absolute difference of neighbouring alpha values
(resolution independent, unlike GANimation's sum). It is applied to ``G_M``'s alpha on real faces
and ``G_F``'s alpha on real masked photos (the pass that removes the mask).

The alpha channel comes from the shared network's fourth ``tanh`` output: ``A = (t + 1) / 2``, i.e.
``sigmoid(2 z)``. :func:`composite_full_res` composites at the crop's own resolution: ``A`` and ``C``
from the training-size generator are upsampled and the input's own pixels are kept wherever ``A``
is 0 (``A`` below ``alpha_floor`` is snapped to exactly 0, so those pixels are byte-identical).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mfrbench.errors import MfrbenchError

OUTPUT_KINDS = ("plain", "composite")


def check_mask_source(option: str, value: str, output: str) -> None:
    """A loss term's mask map comes from ``seg`` (Seg on the output) or ``alpha`` (the generator's own, which
    only a compositing generator has): IAMGAN's ``pix_region``, MFGAN's ``inv_region``."""
    if value not in ("seg", "alpha"):
        raise MfrbenchError(f"Expected {option} 'seg' or 'alpha', but got {value!r}")
    if value == "alpha" and output != "composite":
        raise MfrbenchError(f"{option}=alpha needs a compositing generator (--set output=composite)")


def check_output(kind: str) -> str:
    if kind not in OUTPUT_KINDS:
        raise MfrbenchError(f"Expected output in {OUTPUT_KINDS}, but got {kind!r}")
    return kind


class CompositeGenerator(nn.Module):
    """Wraps a 4-channel image generator (``out_ch=4``, ``tanh`` head) into a compositing one.

    ``forward(x, *args)`` -> the composite ``(B, 3, S, S)``; :meth:`parts` -> ``(composite, content,
    alpha)`` with ``alpha`` of shape ``(B, 1, S, S)`` in ``[0, 1]``. Extra arguments (MFGAN's style
    code) are passed to the wrapped network unchanged.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def parts(self, x: torch.Tensor, *args: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self.net(x, *args)                                   # (B, 4, S, S) in [-1, 1]
        content, alpha = t[:, :3], (t[:, 3:4] + 1) * 0.5         # (B, 3, S, S), (B, 1, S, S)
        return alpha * content + (1 - alpha) * x, content, alpha

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        return self.parts(x, *args)[0]


def total_variation(a: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of horizontally and vertically neighbouring values of ``(B, C, H, W)``.

    >>> a = torch.zeros(1, 1, 2, 2); a[..., 0, 0] = 1
    >>> float(total_variation(a))
    1.0
    """
    return (a[..., :, 1:] - a[..., :, :-1]).abs().mean() + (a[..., 1:, :] - a[..., :-1, :]).abs().mean()


def area_hinge(alpha: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Mean over images of how far each image's drawn area ``mean(A_i)`` lies outside ``[lo, hi]``.

    >>> a = torch.zeros(2, 1, 2, 2); a[1] = 1.0          # areas 0 and 1
    >>> float(area_hinge(a, 0.25, 0.5))                   # (0.25 + 0.5) / 2
    0.375
    """
    area = alpha.flatten(1).mean(1)                                          # (B,)
    return (torch.relu(lo - area) + torch.relu(area - hi)).mean()


def alpha_regularizer(alpha: torch.Tensor, *, l1: float, tv: float, area: tuple[float, float] = (0.0, 1.0),
                      area_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Weighted terms of one alpha map: ``l1`` (mean of ``A``, ``A >= 0``), ``tv`` (smoothness) and ``area``
    (the drawn area of each image kept inside ``area = (lo, hi)``; see the module docstring)."""
    terms = {"alpha_l1": alpha.mean() * l1, "alpha_tv": total_variation(alpha) * tv}
    if area_weight > 0:
        terms["alpha_area"] = area_hinge(alpha, *area) * area_weight
    return terms


def composite_full_res(x: torch.Tensor, content: torch.Tensor, alpha: torch.Tensor, *,
                       alpha_floor: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite at the input's resolution: upsample ``content`` and ``alpha`` to ``x``'s size.

    Args:
        x: ``(B, 3, H, W)`` input crops in ``[-1, 1]`` at their own resolution.
        content, alpha: the generator's ``(B, 3, s, s)`` / ``(B, 1, s, s)`` at its training size.
        alpha_floor: upsampled alpha below this is set to exactly 0 (the input pixel is kept as is).

    Returns:
        ``(out, alpha)``: ``(B, 3, H, W)`` composite and ``(B, 1, H, W)`` alpha, both at ``x``'s size.
    """
    h, w = x.shape[-2:]
    if alpha.shape[-2:] != (h, w):
        alpha = F.interpolate(alpha, size=(h, w), mode="bilinear", align_corners=False)
        content = F.interpolate(content, size=(h, w), mode="bilinear", align_corners=False)
    alpha = torch.where(alpha < alpha_floor, torch.zeros_like(alpha), alpha.clamp(0, 1))
    return alpha * content.clamp(-1, 1) + (1 - alpha) * x, alpha
