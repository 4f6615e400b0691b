"""MFGAN's loss terms (Xiong et al., SEKE 2022, §III, equations (1)-(7)), each a small pure function.

Paper: Xiong, Zhong, Guo, Wang, Zhang, "MFGAN: A Novel CycleGAN-Based Network for Masked Face
Generation", SEKE 2022, DOI 10.18293/SEKE2022-016 (text: ``../shared/reference/mfgan-paper.txt``).
No public code exists; where the paper leaves a choice open, the reading taken here is written at
the function and collected in the README section "MFGAN: our reading of the paper".

Conventions: images are ``(B, 3, H, W)`` tensors in ``[-1, 1]``; visibility is ``(B, P)`` per facial
part (probabilities or booleans, 1 = visible); mask maps are ``(B, 1, H, W)`` or ``(B, H, W)`` with
1 = **mask** pixel (the repository-wide convention); every per-sample quantity is ``(B,)``.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from torch import Tensor

CorApply = Literal["d_fake", "g", "both"]

# |alpha - 2| or |alpha| below this use Barron's closed-form limit; the general formula (written
# with expm1/log1p) differs from the limit by O(eps * x^4) there, far below float32 resolution.
_ALPHA_EPS = 1e-6


def barron_rho(x: Tensor, alpha: float, c: float) -> Tensor:
    """Barron's general robust loss rho(x, alpha, c) (CVPR 2019, eq. 1), with its limits in closed form.

    ``rho = |a-2|/a * (((x/c)^2 / |a-2| + 1)^(a/2) - 1)``; ``a -> 2``: ``(x/c)^2 / 2``;
    ``a -> 0``: ``log((x/c)^2 / 2 + 1)``; ``a -> -inf``: ``1 - exp(-(x/c)^2 / 2)``.

    Args:
        x: residuals, any shape.
        alpha: shape parameter (any real, ``-inf`` allowed).
        c: scale, > 0.

    Returns:
        rho elementwise, same shape as ``x``; 0 where ``x == 0``, increasing in ``|x|``.
    """
    if not c > 0:
        raise ValueError(f"Expected scale `c` > 0, but got {c}")
    if math.isnan(alpha) or alpha == math.inf:
        raise ValueError(f"Expected a real `alpha` or -inf, but got {alpha}")
    z = (x / c) ** 2
    if alpha == -math.inf:
        return -torch.expm1(-0.5 * z)
    if abs(alpha - 2.0) < _ALPHA_EPS:
        return 0.5 * z
    if abs(alpha) < _ALPHA_EPS:
        return torch.log1p(0.5 * z)
    b = abs(alpha - 2.0)
    # expm1/log1p keep the formula accurate near alpha = 0 (Barron's own implementation does the same).
    return (b / alpha) * torch.expm1(0.5 * alpha * torch.log1p(z / b))


def correction_factor(x: Tensor, *, alpha: float = 1.0, c: float = 1.0) -> Tensor:
    """Adaptive correction factor lambda_cor of equation (1): ``1 + rho(x, alpha, c)``.

    ``lambda_cor == 1`` exactly when the penalty ``x`` is 0 (mask worn correctly) and grows with
    ``|x|``. The result is detached: Det's verdict is a fixed weight, not a path for gradients.

    Example:
        >>> correction_factor(torch.tensor([0.0, 1.0, 2.0]), alpha=2.0, c=1.0)
        tensor([1.0000, 1.5000, 3.0000])
    """
    return (1.0 + barron_rho(x.detach().float(), alpha, c)).detach()


def visibility_disagreement(vis_in: Tensor, vis_out: Tensor, *, covered: Sequence[bool] | Tensor | None = None,
                            threshold: float | None = 0.5) -> Tensor:
    """The per-part XOR vector ``Det(f, G_M(f))`` of §III-B (Fig. 5).

    The paper XORs the parts Det sees on the input face ``f`` with those it sees on the output and
    calls 0 "consistent". Read literally (``covered=None``) a *correct* mask would score 1 on nose
    and mouth, because a mask that covers them makes them invisible. So the reference the output
    is compared with is the visibility that correct wearing predicts from the input:
    ``expected = vis(f) AND NOT covered`` (a covered part must disappear, every other visible part
    must stay). With ``covered`` all False this is the literal XOR.

    Args:
        vis_in: ``(B, P)`` visibility of the parts on the input faces.
        vis_out: ``(B, P)`` visibility on the generated faces.
        covered: ``(P,)`` parts a correctly worn mask hides (nose, mouth, chin by default upstream).
        threshold: binarise probabilities at this value (the paper's detector answers yes/no);
            ``None`` keeps soft values and returns ``|vis_out - expected|``.

    Returns:
        ``(B, P)`` float in [0, 1]; element ``[i, p]`` is 1 when part ``p`` of sample ``i`` disagrees.
    """
    if vis_in.shape != vis_out.shape or vis_in.dim() != 2:
        raise ValueError(f"Expected `vis_in` and `vis_out` of the same (B, P) shape, but got "
                         f"{tuple(vis_in.shape)} and {tuple(vis_out.shape)}")
    vin, vout = vis_in.detach().float(), vis_out.detach().float()
    if threshold is not None:
        vin, vout = (vin > threshold).float(), (vout > threshold).float()
    if covered is None:
        cov = torch.zeros(vin.shape[1], device=vin.device)
    else:
        cov = torch.as_tensor(covered, dtype=torch.float32, device=vin.device).reshape(-1)
        if cov.numel() != vin.shape[1]:
            raise ValueError(f"Expected `covered` with {vin.shape[1]} entries, but got {cov.numel()}")
    expected = vin * (1.0 - cov)                      # (B, P)
    return (vout - expected).abs()


def penalty(disagreement: Tensor, weights: Sequence[float] | Tensor) -> Tensor:
    """``x = W * Det(f, G_M(f))``: the weighted sum of the XOR vector, per sample ``(B,)``."""
    w = torch.as_tensor(weights, dtype=torch.float32, device=disagreement.device).reshape(-1)
    if w.numel() != disagreement.shape[-1]:
        raise ValueError(f"Expected {disagreement.shape[-1]} penalty weights, but got {w.numel()}")
    return disagreement.float() @ w


def cor_weights(lam_cor: Tensor | None, n: int, *, apply: CorApply = "both",
                device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Per-sample weights of ``G_M``'s adversarial term and of ``D_M``'s fake term: where lambda_cor applies.

    Equation (2) is one min-max objective that both players share, so ``both`` (the default) is
    its direct reading; the paper's prose names only the discriminator (``d_fake``), which reaches
    G only through a sharper D; ``g`` weighs the generator only. A term lambda_cor does not apply
    to (or every term, with ``lam_cor=None``: no Det) gets weight 1. The weights feed
    :func:`mfrbench.generators.gan.losses.lsgan_g_loss` / ``lsgan_d_loss``.

    Returns:
        ``(g_weight, d_weight)``, each ``(n,)``.

    Example:
        >>> lam = torch.tensor([1.0, 3.0])
        >>> [w.tolist() for w in cor_weights(lam, 2, apply="d_fake")]
        [[1.0, 1.0], [1.0, 3.0]]
    """
    if apply not in ("d_fake", "g", "both"):
        raise ValueError(f"Expected `apply` in ('d_fake', 'g', 'both'), but got {apply!r}")
    ones = torch.ones(n, device=device if lam_cor is None else lam_cor.device)
    if lam_cor is None:
        return ones, ones
    lam = lam_cor.detach()
    return (lam if apply in ("g", "both") else ones), (lam if apply in ("d_fake", "both") else ones)


def non_mask_map(mask_prob: Tensor, *, threshold: float = 0.5) -> Tensor:
    """``S_F``: 1 on non-mask pixels, 0 on mask pixels, from Seg's mask probability; no gradient.

    Binarised so that mask pixels get weight exactly 0 in ``L_inv`` (a soft ``1 - p`` would leak a
    little gradient into every mask pixel).
    """
    m = mask_prob.detach()
    if m.dim() == 3:
        m = m.unsqueeze(1)
    return (m <= threshold).float()                   # (B, 1, H, W)


def local_invariance_loss(fake: Tensor, real: Tensor, s_f: Tensor) -> Tensor:
    """``L_inv = E ||G_M(f) * S_F - f * S_F||_2^2`` (eq. 3), as a mean over pixels and channels.

    Args:
        fake: ``G_M(f)``, ``(B, 3, H, W)``.
        real: the input faces ``f``, same shape.
        s_f: ``(B, 1, H, W)`` non-mask map (1 = keep), from :func:`non_mask_map`; treated as a constant.

    Returns:
        Scalar. The squared norm is divided by the number of elements (B*3*H*W) so that the weight
        ``mu`` does not depend on resolution; pixels where ``s_f == 0`` get no gradient.
    """
    s = s_f.detach().to(fake)
    return ((fake - real) * s).pow(2).mean()


def style_reconstruction_loss(s: Tensor, s_pred: Tensor) -> Tensor:
    """``L_sty = E ||s - E(G_M(f, s))||_1`` (eq. 5), mean absolute error as in StarGAN v2; ``s`` is a constant.

    The target code ``s = E(m, y)`` is detached. MFGAN trains ``E`` with the generators, so with
    gradients through both sides ``E`` could lower ``L_sty`` by pulling the codes of all
    references together, down to a constant, once ``lambda_ds`` has decayed to 0 and nothing
    pushes back. StarGAN v2 never lets ``L_sty`` move the target's encoder either: in its
    reference-guided step (``compute_g_loss`` with ``x_refs``) only the generator's optimiser
    steps, and in the latent step the encoder is the predictor of a mapping network's code.
    Here the gradient of ``L_sty`` reaches ``E`` only through its prediction ``s_pred`` (and the
    generator through ``G_M(f, s)``).
    """
    return (s.detach() - s_pred).abs().mean()


def style_diversity_loss(fake1: Tensor, fake2: Tensor) -> Tensor:
    """``L_ds = E ||G_M(f, s1) - G_M(f, s2)||_1`` (eq. 6); the objective *subtracts* it (maximised).

    As in StarGAN v2's ``compute_g_loss``, the caller passes the second image detached, so the
    gradient pushes the first output away from a fixed second one.
    """
    return (fake1 - fake2).abs().mean()


def ds_weight(step: int, initial: float, decay_steps: int | None) -> float:
    """lambda_ds at ``step`` of stage 3: StarGAN v2's linear decay from ``initial`` to 0 over ``decay_steps``.

    ``decay_steps=None`` (or 0) keeps the weight constant.

    Example:
        >>> ds_weight(50, 1.0, 100), ds_weight(200, 1.0, 100), ds_weight(7, 2.0, None)
        (0.5, 0.0, 2.0)
    """
    if not decay_steps:
        return float(initial)
    return float(initial) * max(0.0, 1.0 - step / decay_steps)


def wearing_loss(alpha: Tensor, cover: Tensor, eyes: Tensor) -> Tensor:
    """How far a compositing generator's exact mask ``alpha`` ``(B, 1, H, W)`` is from being worn correctly.

    Per image, the mean of ``1 - A`` over ``cover`` (nose and mouth: the mask must be there) plus the mean
    of ``A`` over ``eyes`` (it must not be there), ``cover`` and ``eyes`` bool ``(B, H, W)`` from the face's
    own landmarks (:func:`~mfrbench.generators.mask_templates.wearing_regions`); averaged over the batch.
    Not in the paper (its λ_cor asks Det, which sees the eyes as visible when a mask touches the lower
    lids): an option, 0 in the paper's profile.

    >>> a = torch.zeros(1, 1, 4, 4); a[..., 2:, :] = 1.0                  # lower half drawn
    >>> cover = torch.zeros(1, 4, 4, dtype=torch.bool); cover[:, 2:, 1:3] = True
    >>> eyes = torch.zeros(1, 4, 4, dtype=torch.bool); eyes[:, :1] = True
    >>> float(wearing_loss(a, cover, eyes)), float(wearing_loss(1 - a, cover, eyes))
    (0.0, 2.0)
    """
    a = alpha[:, 0].float()
    def mean_in(x: Tensor, region: Tensor) -> Tensor:
        r = region.to(x.dtype)
        return (x * r).flatten(1).sum(1) / r.flatten(1).sum(1).clamp_min(1.0)
    return (mean_in(1 - a, cover) + mean_in(a, eyes)).mean()
