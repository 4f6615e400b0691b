"""MFGAN loss functions (generators/mfgan_losses.py) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from mfrbench.generators import mfgan_losses as L
from mfrbench.generators.gan.losses import lsgan_d_loss, lsgan_g_loss


@pytest.mark.parametrize("alpha,c,x,expected", [
    (1.0, 1.0, 1.0, 1 + (math.sqrt(2) - 1)),            # |1-2|/1 * ((1/1 + 1)^0.5 - 1)
    (-2.0, 1.0, 2.0, 2.0),                               # 4/-2 * ((4/4 + 1)^-1 - 1) = 1
    (4.0, 2.0, 2.0, 1 + 0.5 * ((1 / 2 + 1) ** 2 - 1)),   # 2/4 * ((1/2 + 1)^2 - 1)
    (2.0, 1.0, 3.0, 1 + 4.5),                            # limit: x^2 / (2 c^2)
    (0.0, 1.0, 2.0, 1 + math.log(3.0)),                  # limit: log(x^2 / (2 c^2) + 1)
    (-math.inf, 1.0, 2.0, 1 + 1 - math.exp(-2.0)),       # limit: 1 - exp(-x^2 / (2 c^2))
])
def test_correction_factor_hand_values(alpha, c, x, expected):
    got = L.correction_factor(torch.tensor([x], dtype=torch.float64), alpha=alpha, c=c)
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("alpha", [-3.0, -math.inf, 0.0, 0.5, 1.0, 2.0, 3.0])
def test_correction_factor_is_one_iff_no_penalty_and_grows(alpha):
    x = torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    lam = L.correction_factor(x, alpha=alpha, c=1.0)
    assert lam[0].item() == 1.0
    assert torch.all(lam[1:] > 1.0) and torch.all(lam[1:] - lam[:-1] > 0)


@pytest.mark.parametrize("limit", [2.0, 0.0])
def test_correction_factor_limits_are_finite_and_continuous(limit):
    x = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
    at = L.correction_factor(x, alpha=limit, c=0.7)
    assert torch.isfinite(at).all()
    for d in (1e-9, 1e-7, 1e-5, 1e-3):
        for sgn in (1, -1):
            near = L.correction_factor(x, alpha=limit + sgn * d, c=0.7)
            assert torch.isfinite(near).all()
            # the function is smooth in alpha: the gap shrinks with the distance to the limit
            assert torch.allclose(near, at, rtol=0, atol=50 * d + 1e-9), (limit, sgn * d, near, at)


def test_correction_factor_rejects_bad_scale():
    with pytest.raises(ValueError, match=r"Expected scale `c` > 0, but got 0"):
        L.correction_factor(torch.ones(1), alpha=1.0, c=0)


def test_disagreement_correct_wearing_reading():
    parts_covered = [False, True, True, True]            # eyes, nose, mouth, chin
    vis_in = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [0.9, 0.8, 0.7, 0.6]])
    vis_out = torch.tensor([[1.0, 0, 0, 0],               # correct: eyes stay, rest hidden
                            [1, 1, 0, 0],                 # nose out
                            [0, 0, 0, 0],                 # eyes covered too
                            [0.7, 0.2, 0.1, 0.4]])        # correct, soft probabilities
    d = L.visibility_disagreement(vis_in, vis_out, covered=parts_covered)
    assert d.tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    x = L.penalty(d, [2.0, 1.0, 1.0, 0.5])
    assert x.tolist() == [0.0, 1.0, 2.0, 0.0]
    lam = L.correction_factor(x, alpha=1.0, c=1.0)
    assert lam[0] == 1 and lam[3] == 1 and lam[2] > lam[1] > 1


def test_disagreement_literal_xor_and_errors():
    a = torch.tensor([[1.0, 0.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 0.0]])
    assert L.visibility_disagreement(a, b).tolist() == [[0, 1, 1]]
    assert L.visibility_disagreement(a, a).sum() == 0
    with pytest.raises(ValueError, match="same"):
        L.visibility_disagreement(a, b[:, :2])
    with pytest.raises(ValueError, match="Expected 3 penalty weights, but got 2"):
        L.penalty(a, [1.0, 1.0])


def test_corrected_adversarial_losses_apply_option():
    """lambda_cor weighs D_M's fake term and/or G_M's adversarial term as ``cor_apply`` says (eq. 2)."""
    pred_real = torch.full((2, 1, 4, 4), 0.5)
    pred_fake = torch.tensor([0.5, 1.0]).reshape(2, 1, 1, 1).expand(2, 1, 4, 4)
    lam = torch.tensor([1.0, 3.0])

    def d_loss(lam_cor, apply):
        return lsgan_d_loss(pred_real, pred_fake, L.cor_weights(lam_cor, 2, apply=apply)[1]).item()

    def g_loss(lam_cor, apply="both"):
        return lsgan_g_loss(pred_fake, L.cor_weights(lam_cor, 2, apply=apply)[0]).item()

    # D: 0.5 * (mean (0.5-1)^2 + mean_i lam_i * fake_i^2) = 0.5 * (0.25 + (0.25 + 3) / 2)
    assert d_loss(lam, "d_fake") == pytest.approx(0.5 * (0.25 + 1.625))
    assert d_loss(lam, "g") == pytest.approx(0.5 * (0.25 + 0.625))
    assert d_loss(None, "both") == pytest.approx(lsgan_d_loss(pred_real, pred_fake).item())  # no Det: CycleGAN's
    # G: mean_i lam_i * (fake_i - 1)^2 = (1 * 0.25 + 3 * 0) / 2
    assert g_loss(lam, "g") == pytest.approx(0.125)
    assert g_loss(lam, "d_fake") == pytest.approx(0.125)
    lam2 = torch.tensor([3.0, 1.0])
    assert g_loss(lam2, "both") == pytest.approx(0.375)
    assert g_loss(lam2, "d_fake") == pytest.approx(0.125)
    assert g_loss(None) == pytest.approx(0.125)
    with pytest.raises(ValueError, match="Expected `apply` in"):
        L.cor_weights(lam, 2, apply="disc")


def test_local_invariance_zero_outside_mask_and_no_gradient_on_mask_pixels():
    torch.manual_seed(0)
    real = torch.rand(2, 3, 8, 8) * 2 - 1
    mask_prob = torch.zeros(2, 1, 8, 8)
    mask_prob[:, :, 4:, 2:6] = 0.9                       # the "mask" on the lower face
    s_f = L.non_mask_map(mask_prob)
    fake = real.clone()
    fake[:, :, 4:, 2:6] = torch.rand(2, 3, 4, 4)          # differs only under the mask
    fake.requires_grad_(True)
    loss = L.local_invariance_loss(fake, real, s_f)
    assert loss.item() == 0.0
    # move every pixel: the loss counts only non-mask ones, gradient vanishes on mask pixels
    fake2 = (real + 0.5).requires_grad_(True)
    loss2 = L.local_invariance_loss(fake2, real, s_f)
    n_keep = s_f.sum().item() * 3
    assert loss2.item() == pytest.approx(0.25 * n_keep / real.numel())
    loss2.backward()
    g = fake2.grad
    assert torch.all(g[:, :, 4:, 2:6] == 0)
    assert torch.all(g[:, :, :4] != 0)


def test_non_mask_map_has_no_gradient_path():
    p = torch.full((1, 1, 4, 4), 0.2, requires_grad=True)
    s = L.non_mask_map(p)
    assert not s.requires_grad and s.shape == (1, 1, 4, 4) and s.sum() == 16


def test_style_losses_and_ds_schedule():
    s = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    assert L.style_reconstruction_loss(s, torch.zeros_like(s)).item() == pytest.approx(1.0)
    a, b = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    assert L.style_diversity_loss(a, b).item() == pytest.approx(0.5)
    assert [L.ds_weight(k, 2.0, 4) for k in range(6)] == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0]
    assert L.ds_weight(10**6, 1.0, None) == 1.0


def test_style_reconstruction_target_code_gets_no_gradient():
    """L_sty moves only the prediction E(G_M(f, s)), never the target code s (StarGAN v2's reading).

    Before (issue 11) the target was not detached: d L_sty / d s was sign(s - s_pred) / n, so E could
    lower L_sty by pulling every reference's code towards the predictions (and to a constant once
    lambda_ds had decayed)."""
    s = torch.tensor([[1.0, -1.0], [0.5, 2.0]], requires_grad=True)
    s_pred = torch.zeros(2, 2, requires_grad=True)
    loss = L.style_reconstruction_loss(s, s_pred)
    loss.backward()
    assert loss.item() == pytest.approx(4.5 / 4)
    assert s.grad is None or torch.all(s.grad == 0)                       # old code: +-0.25 everywhere
    assert torch.equal(s_pred.grad, torch.full((2, 2), -0.25) * torch.sign(s.detach()))

