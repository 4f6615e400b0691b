"""Heads: the margin family against textbook formulas, triplet mining against brute force."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from mfrbench.recognizers.heads import HEADS, Margin, MarginHead, batch_hard_triplet_loss, create_head, margin_logits


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


@pytest.mark.parametrize("m", [0.2, 0.5])
def test_arcface_matches_textbook_cos_theta_plus_m(m):
    """Where theta + m <= pi the target logit is s * cos(acos(cos) + m); other columns s * cos."""
    emb, centres = _unit(64, 16, 0), _unit(10, 16, 1)
    cos = emb @ centres.T
    labels = torch.arange(64) % 10
    out = margin_logits(cos, labels, Margin(m2=m, scale=30.0))
    theta = torch.acos(cos.gather(1, labels[:, None]).clamp(-1, 1))
    expected_target = 30.0 * torch.cos(theta + m)
    ok = (theta + m <= math.pi).squeeze(1)
    assert ok.all()  # random 16-d unit vectors are nowhere near antipodal
    torch.testing.assert_close(out.gather(1, labels[:, None]), expected_target, atol=1e-4, rtol=1e-5)
    other = torch.ones_like(cos, dtype=torch.bool).scatter(1, labels[:, None], False)
    torch.testing.assert_close(out[other], 30.0 * cos[other])


def test_arcface_fallback_beyond_pi_is_monotonic_and_finite():
    """Past theta + m = pi the logit uses cos(theta) - m sin(m) (arcface_torch) and keeps decreasing in theta."""
    m = 0.5
    cos = torch.linspace(-1.0, 1.0, 2001)[:, None].requires_grad_(True)
    labels = torch.zeros(len(cos), dtype=torch.long)
    out = margin_logits(cos, labels, Margin(m2=m, scale=1.0))[:, 0]
    beyond = cos[:, 0] <= math.cos(math.pi - m)
    torch.testing.assert_close(out[beyond], (cos[:, 0] - math.sin(m) * m)[beyond])
    assert torch.all(out[1:] >= out[:-1] - 1e-6)   # non-decreasing in cos <=> non-increasing in theta
    out.sum().backward()
    assert torch.isfinite(cos.grad).all()            # also at |cos| = 1, where d acos / d cos is infinite


def test_cosface_subtracts_m_from_target_cosine():
    cos = torch.tensor([[0.3, 0.9], [0.5, -0.2]])
    out = margin_logits(cos, torch.tensor([1, 0]), Margin(m3=0.4, scale=2.0))
    torch.testing.assert_close(out, torch.tensor([[0.6, 1.0], [0.2, -0.4]]))


def test_presets_are_one_margin_implementation():
    arc = create_head("arcface", embedding_dim=8, num_classes=3)
    cosf = create_head("cosface", embedding_dim=8, num_classes=3, s=32, m=0.35)
    sub = create_head("subcenter-arcface", embedding_dim=8, num_classes=3)
    assert all(isinstance(h, MarginHead) for h in (arc, cosf, sub))
    assert arc.margin == Margin(m2=0.5, scale=64.0)
    assert cosf.margin == Margin(m3=0.35, scale=32.0)
    assert sub.subcenters == 3 and sub.weight.shape == (9, 8)


def test_subcenter_takes_the_nearest_centre():
    head = MarginHead(2, 2, Margin(m2=0.5), subcenters=2)
    with torch.no_grad():  # class 0: centres (1,0) and (0,1); class 1: (-1,0) and (0,-1)
        head.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]]))
    cos = head.cosine(torch.tensor([[0.0, 2.0], [0.0, -3.0]]))
    torch.testing.assert_close(cos, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_margin_head_trains_down_and_reports_accuracy():
    torch.manual_seed(0)
    head = create_head("arcface", embedding_dim=16, num_classes=4, s=16, m=0.3)
    emb = torch.randn(32, 16, requires_grad=True)
    labels = torch.arange(32) % 4
    opt = torch.optim.SGD([emb, *head.parameters()], lr=0.5)
    first = None
    for _ in range(30):
        loss, stats = head(emb, labels)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first and float(stats["acc"]) == 1.0


def _reference_batch_hard(z: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    z = F.normalize(z)
    losses = []
    for a in range(len(z)):
        pos = [float((z[a] - z[p]).norm()) for p in range(len(z)) if p != a and labels[p] == labels[a]]
        neg = [float((z[a] - z[n]).norm()) for n in range(len(z)) if labels[n] != labels[a]]
        if pos and neg:
            losses.append(max(max(pos) - min(neg) + margin, 0.0))
    return torch.tensor(sum(losses) / len(losses))


@pytest.mark.parametrize("seed", range(3))
def test_batch_hard_triplet_matches_brute_force(seed):
    z = torch.randn(12, 8, generator=torch.Generator().manual_seed(seed))
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 5])  # label 5 has no positive: left out
    loss, active = batch_hard_triplet_loss(z, labels, 0.3)
    torch.testing.assert_close(loss, _reference_batch_hard(z, labels, 0.3), atol=1e-5, rtol=1e-5)
    assert 0.0 <= float(active) <= 1.0


def test_triplet_head_gradient_and_bad_batch_message():
    head = create_head("triplet", embedding_dim=8, num_classes=99, margin=0.2)
    assert head.needs_pk_batches and not list(head.parameters())
    z = torch.randn(8, 8, requires_grad=True)
    loss, _ = head(z, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    loss.backward()
    assert torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match=re.escape("Expected a batch with at least two images of one identity")):
        head(z[:3], torch.tensor([0, 1, 2]))


def test_softmax_head_is_plain_linear_cross_entropy():
    head = create_head("softmax", embedding_dim=4, num_classes=3)
    emb, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    loss, _ = head(emb, labels)
    torch.testing.assert_close(loss, F.cross_entropy(head.fc(emb), labels))


def test_margin_validation_messages():
    with pytest.raises(ValueError, match=re.escape("Expected `m1` == 1.0 (SphereFace margins are not implemented)")):
        Margin(m1=1.35)
    with pytest.raises(ValueError, match="got an unknown option"):
        create_head("arcface", embedding_dim=4, num_classes=2, margin=0.3)


@pytest.mark.parametrize("name", HEADS.names())
def test_every_head_gives_finite_loss_and_gradient(name):
    torch.manual_seed(0)
    head = create_head(name, embedding_dim=16, num_classes=4)
    emb = torch.randn(8, 16, requires_grad=True)
    loss, stats = head(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    assert all(v.ndim == 0 for v in stats.values())
