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
  "keep the input" (ours is its complement) and it penalises the map so the generator does not
  saturate to the identity; we penalise the *drawn* area instead (a mask covers nose and mouth
  only), and the adversarial term is what keeps ``A`` from collapsing to 0.

Our regulariser (:func:`alpha_regularizer`): ``lambda_alpha_l1 * mean(A) + lambda_alpha_tv * TV(A)``
with TV the mean absolute difference of neighbouring alpha values (resolution independent, unlike
GANimation's sum), applied to ``G_M``'s alpha on real faces and ``G_F``'s alpha on real masked photos.

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


def alpha_regularizer(alpha: torch.Tensor, *, l1: float, tv: float) -> dict[str, torch.Tensor]:
    """Weighted sparsity (mean of ``A``, ``A >= 0``: its L1) and smoothness (TV) terms of one alpha map."""
    return {"alpha_l1": alpha.mean() * l1, "alpha_tv": total_variation(alpha) * tv}


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
