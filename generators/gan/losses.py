"""GAN loss functions shared by every family: LSGAN (Mao et al. 2017) and the L1 of cycle/identity terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lsgan_loss(pred: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017): MSE of the patch logits to 1 (real) or 0 (fake)."""
    target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
    return F.mse_loss(pred, target)


def l1(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error (cycle-consistency and identity losses), each pixel times ``weight`` if given
    (broadcast to ``a``; the mean is still over all pixels, so a weight of 1 everywhere is the plain L1).

    >>> a, b = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    >>> float(l1(a, b)), float(l1(a, b, torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)))
    (1.0, 0.5)
    """
    d = (a - b).abs()
    return (d if weight is None else d * weight).mean()


def lsgan_per_sample(pred: torch.Tensor, target: float) -> torch.Tensor:
    """Least-squares GAN loss per sample: mean over the PatchGAN map of ``(pred - target)^2``, ``(B,)``."""
    return ((pred.float() - target) ** 2).flatten(1).mean(1)


def lsgan_g_loss(pred_fake: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The generator's LSGAN term ``mean_i w_i (D(G(x_i)) - 1)^2``; ``weight=None`` is CycleGAN's plain mean.

    Args:
        pred_fake: ``D``'s patch logits on the generated images, ``(B, 1, h, w)``.
        weight: ``(B,)`` per-sample weights (MFGAN's lambda_cor), treated as constants.
    """
    if weight is None:
        return lsgan_loss(pred_fake, True)
    g = lsgan_per_sample(pred_fake, 1.0)
    return (g * weight.detach().to(g)).mean()


def lsgan_d_loss(pred_real: torch.Tensor, pred_fake: torch.Tensor,
                 fake_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The discriminator's LSGAN loss ``0.5 * (mean_i (D(m_i) - 1)^2 + mean_j w_j D(G(f_j))^2)``.

    Only the fake term is weighted: a weight is a property of a generated sample (MFGAN's Det
    verdict), real images have none. ``fake_weight=None`` is CycleGAN's unweighted loss.

    Example:
        >>> real, fake = torch.zeros(2, 1, 1, 1), torch.ones(2, 1, 1, 1)
        >>> lsgan_d_loss(real, fake).item(), lsgan_d_loss(real, fake, torch.tensor([1.0, 3.0])).item()
        (1.0, 1.5)
    """
    if fake_weight is None:
        return 0.5 * (lsgan_loss(pred_real, True) + lsgan_loss(pred_fake, False))
    fake = lsgan_per_sample(pred_fake, 0.0)
    fake = fake * fake_weight.detach().to(fake)
    return 0.5 * (lsgan_per_sample(pred_real, 1.0).mean() + fake.mean())
