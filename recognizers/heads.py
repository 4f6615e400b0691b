"""Training heads: embeddings + identity labels -> loss.

Every head is an ``nn.Module`` whose ``forward(embeddings (B, D), labels (B,))`` returns
``(loss, stats)``: a scalar loss and a dict of detached scalars for logging (e.g. the batch
accuracy of a classification head). Heads are built with ``create_head(name, embedding_dim=,
num_classes=, **head_args)``.

* ``softmax``: plain linear classifier + cross-entropy.
* the margin family (``arcface``, ``cosface``, ``combined-margin``, ``subcenter-arcface``): one
  implementation, :class:`MarginHead`, of the target logit ``s * (cos(m1 * theta + m2) - m3)``
  on L2-normalised embeddings and class centres, from insightface ``recognition/arcface_torch/
  losses.py::CombinedMarginLoss`` (ArcFace: Deng et al., CVPR 2019, https://arxiv.org/abs/1801.07698;
  CosFace: Wang et al., CVPR 2018, https://arxiv.org/abs/1801.09414). ArcFace's ``cos(theta + m)``
  stops decreasing once ``theta + m > pi``; there the target logit falls back to
  ``cos(theta) - m * sin(m)`` (arcface_torch's ``theta``/``sinmm`` rule), which stays monotonic.
* ``subcenter-arcface``: Deng et al., "Sub-center ArcFace", ECCV 2020,
  https://www.ecva.net/papers/eccv_2020/papers_ECCV/papers/123560715.pdf: K centres per class,
  the closest one counts (max-pooled cosine), so noisy images can sit at a non-dominant centre.
  (The paper's later step of dropping non-dominant centres and noisy images is not done here.)
* ``triplet``: Schroff et al., "FaceNet", CVPR 2015, with batch-hard mining from Hermans et al.,
  "In Defense of the Triplet Loss for Person Re-Identification", 2017, https://arxiv.org/abs/1703.07737.
  Needs P x K identity batches (``needs_pk_batches``); no classifier weights.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mfrbench.errors import InvalidOptionError
from mfrbench.registry import Registry

HEADS: Registry[nn.Module] = Registry("head")
register_head = HEADS.register


@dataclass(frozen=True)
class Margin:
    """``cos(m1 * theta + m2) - m3`` on the target logit, then everything scaled by ``scale``."""

    m1: float = 1.0    # multiplicative angular (SphereFace)
    m2: float = 0.0    # additive angular (ArcFace)
    m3: float = 0.0    # additive cosine (CosFace)
    scale: float = 64.0

    def __post_init__(self) -> None:
        if self.m1 != 1.0:
            raise ValueError(f"Expected `m1` == 1.0 (SphereFace margins are not implemented), but got {self.m1}")
        if not 0.0 <= self.m2 < math.pi / 2:
            raise ValueError(f"Expected `m2` in [0, pi/2), but got {self.m2}")
        if self.scale <= 0:
            raise ValueError(f"Expected `scale` > 0, but got {self.scale}")


def margin_logits(cosine: torch.Tensor, labels: torch.Tensor, margin: Margin) -> torch.Tensor:
    """Apply ``margin`` to the target-class cosine and scale all logits.

    Args:
        cosine: ``(B, C)`` cosine similarities in [-1, 1] between embeddings and class centres.
        labels: ``(B,)`` target class per row.

    Returns:
        ``(B, C)`` logits: ``scale * cosine`` everywhere except the target column, which holds
        ``scale * (cos(theta + m2) - m3)`` (or the monotonic fallback where ``theta + m2 > pi``).
    """
    target = cosine.gather(1, labels[:, None])                      # (B, 1)
    if margin.m2 > 0:
        # cos(theta + m) = cos*cos(m) - sin*sin(m); clamping 1 - cos^2 keeps sqrt's gradient finite at |cos| = 1.
        sine = torch.sqrt((1.0 - target * target).clamp_min(1e-7))
        shifted = target * math.cos(margin.m2) - sine * math.sin(margin.m2)
        threshold = math.cos(math.pi - margin.m2)                   # cos(theta) below this <=> theta + m2 > pi
        fallback = target - math.sin(math.pi - margin.m2) * margin.m2
        target = torch.where(target > threshold, shifted, fallback)
    target = target - margin.m3
    return cosine.scatter(1, labels[:, None], target) * margin.scale


class MarginHead(nn.Module):
    """Normalised class centres + a :class:`Margin` (+ optional sub-centres) + cross-entropy."""

    needs_pk_batches = False

    def __init__(self, embedding_dim: int, num_classes: int, margin: Margin, subcenters: int = 1) -> None:
        super().__init__()
        if subcenters < 1:
            raise ValueError(f"Expected `subcenters` >= 1, but got {subcenters}")
        self.margin, self.num_classes, self.subcenters = margin, num_classes, subcenters
        self.weight = nn.Parameter(torch.empty(num_classes * subcenters, embedding_dim))
        nn.init.normal_(self.weight, 0, 0.01)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` cosine to each class (the nearest sub-centre), computed in float32."""
        cos = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))
        if self.subcenters > 1:
            cos = cos.view(len(cos), self.num_classes, self.subcenters).amax(-1)  # (B, C)
        return cos.clamp(-1.0, 1.0)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cos = self.cosine(embeddings)
        loss = F.cross_entropy(margin_logits(cos, labels, self.margin), labels)
        return loss, {"acc": (cos.detach().argmax(1) == labels).float().mean()}


class SoftmaxHead(nn.Module):
    """A plain linear classifier with bias, trained with cross-entropy."""

    needs_pk_batches = False

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(embedding_dim, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.fc(embeddings.float())
        loss = F.cross_entropy(logits, labels)
        return loss, {"acc": (logits.detach().argmax(1) == labels).float().mean()}


def batch_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-hard triplet loss on L2-normalised embeddings (Hermans et al. 2017).

    For each anchor: the farthest same-identity sample and the closest other-identity sample,
    loss ``relu(d(a, p) - d(a, n) + margin)`` with Euclidean distance on the unit sphere.
    Anchors with no positive or no negative in the batch are left out.

    Returns:
        ``(loss, active)``: the mean loss over valid anchors and the fraction of valid anchors
        whose triplet still violates the margin.
    """
    z = F.normalize(embeddings.float())
    dist = torch.sqrt((2.0 - 2.0 * z @ z.T).clamp_min(1e-12))                 # (B, B)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    hardest_pos = dist.masked_fill(~pos_mask, float("-inf")).amax(1)            # (B,)
    hardest_neg = dist.masked_fill(~neg_mask, float("inf")).amin(1)             # (B,)
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not valid.any():
        raise ValueError("Expected a batch with at least two images of one identity and two identities, "
                         f"but got labels {labels.tolist()}")
    per_anchor = F.relu(hardest_pos[valid] - hardest_neg[valid] + margin)
    return per_anchor.mean(), (per_anchor > 0).float().mean()


class TripletHead(nn.Module):
    """Batch-hard triplet loss; needs P identities x K images per batch."""

    needs_pk_batches = True

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        if margin <= 0:
            raise ValueError(f"Expected triplet `margin` > 0, but got {margin}")
        self.margin = margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, active = batch_hard_triplet_loss(embeddings, labels, self.margin)
        return loss, {"active": active.detach()}


# ------------------------------------------------------------------------------ registry
@register_head
def softmax(*, embedding_dim: int, num_classes: int) -> SoftmaxHead:
    return SoftmaxHead(embedding_dim, num_classes)


@register_head
def arcface(*, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.5) -> MarginHead:
    return MarginHead(embedding_dim, num_classes, Margin(m2=m, scale=s))


@register_head
def cosface(*, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.4) -> MarginHead:
    return MarginHead(embedding_dim, num_classes, Margin(m3=m, scale=s))   # insightface CosFace m=0.40


@register_head
def combined_margin(*, embedding_dim: int, num_classes: int, s: float = 64.0, m1: float = 1.0, m2: float = 0.3,
                    m3: float = 0.2) -> MarginHead:
    return MarginHead(embedding_dim, num_classes, Margin(m1=m1, m2=m2, m3=m3, scale=s))


@register_head
def subcenter_arcface(*, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.5,
                      k: int = 3) -> MarginHead:
    return MarginHead(embedding_dim, num_classes, Margin(m2=m, scale=s), subcenters=int(k))


@register_head
def triplet(*, embedding_dim: int, num_classes: int, margin: float = 0.2) -> TripletHead:
    del embedding_dim, num_classes  # a metric loss: no classifier weights
    return TripletHead(margin)


def create_head(name: str, *, embedding_dim: int, num_classes: int, **head_args: Any) -> nn.Module:
    """Build head ``name``; ``head_args`` are its keyword options (e.g. ``s=32, m=0.5``)."""
    fn = HEADS.get(name)
    params = inspect.signature(fn).parameters
    takes = [p for p, v in params.items() if p not in ("embedding_dim", "num_classes") and v.kind is not v.VAR_KEYWORD]
    unknown = sorted(set(head_args) - set(takes))
    if unknown and not any(v.kind is v.VAR_KEYWORD for v in params.values()):  # issue 12: one line, valid names
        raise InvalidOptionError(f"head {name!r} got an unknown option {', '.join(unknown)} (--head-arg); it "
                                 f"takes: {', '.join(takes) or 'no options'}")
    return fn(embedding_dim=embedding_dim, num_classes=num_classes, **head_args)
