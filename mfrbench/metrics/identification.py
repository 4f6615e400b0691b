"""Closed-set identification: Rank-k accuracy and the CMC curve.

Protocol: each probe (here: a masked face) is scored against every gallery identity (here:
unmasked faces); the probe's rank is the position of its true identity in that ordering.

* **Gallery scoring rule** (``rule``): ``max`` (default) scores an identity by its *best*
  gallery image; ``mean`` scores it by a *mean template* (the mean of its L2-normalised
  embeddings, re-normalised, for ``cosine``; the plain mean for ``euclidean``/``dot``).
* **Closed set**: every probe's identity must be in the gallery (a ValueError otherwise).
  Gallery identities without any probe are *distractors*; their number is reported.
* **Non-finite** embeddings or scores are a ValueError (a NaN score compares False with every
  other, which would otherwise rank the true identity first: an all-NaN gallery gave Rank-1 = 1).
* **Ties** count against the probe: rank = 1 + number of *other* identities scoring >= the
  true identity (pessimistic; scikit-learn's ``top_k_accuracy_score`` breaks ties by label
  order instead, so the two agree whenever scores are distinct).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from mfrbench.metrics.roc import check_finite_embeddings, score_blocks

RULES = ("max", "mean")


def ranks_from_identity_scores(scores: ArrayLike, true_index: ArrayLike) -> np.ndarray:
    """1-based rank of the true identity in each row of an identity-score matrix.

    Args:
        scores: (n_probes, n_identities); higher = more similar.
        true_index: column of each probe's true identity.

    Example:
        >>> ranks_from_identity_scores([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8]], [0, 1]).tolist()
        [1, 2]
    """
    s = np.asarray(scores, np.float64)
    t = np.asarray(true_index, np.int64)
    if s.ndim != 2 or t.shape != (s.shape[0],):
        raise ValueError(f"Expected (n_probes, n_identities) scores and one true index per probe, but got "
                         f"{s.shape} and {t.shape}")
    if not np.isfinite(s).all():  # NaN compares False with everything: it would rank the true identity first
        bad = np.flatnonzero(~np.isfinite(s).all(axis=1))
        raise ValueError(f"Expected finite scores, but {len(bad)} probe rows hold NaN or inf (first: "
                         f"{bad[:5].tolist()})")
    if len(t) and (t.min() < 0 or t.max() >= s.shape[1]):
        raise ValueError(f"Expected `true_index` in [0, {s.shape[1]}), but got values outside it")
    true = s[np.arange(len(t)), t][:, None]
    return (s >= true).sum(1).astype(np.int64)  # includes the true identity itself -> 1-based


class Ranks(NamedTuple):
    """``ranks[i]``: 1-based rank of probe i's identity; counts describe the gallery."""

    ranks: np.ndarray
    n_gallery_identities: int
    n_gallery_images: int
    n_distractors: int
    rule: str


def identification_ranks(probe: ArrayLike, probe_ids: ArrayLike, gallery: ArrayLike, gallery_ids: ArrayLike, *,
                         metric: str = "cosine", rule: str = "max", block: int = 1024) -> Ranks:
    """Rank every probe against the gallery identities, block by block.

    Memory: one (block, n_gallery_images) score block at a time.
    """
    if rule not in RULES:
        raise ValueError(f"Expected `rule` in {RULES}, but got {rule!r}")
    P = np.asarray(probe, np.float32)
    G = np.asarray(gallery, np.float32)
    pid = np.asarray(probe_ids).astype(str)
    gid = np.asarray(gallery_ids).astype(str)
    if P.ndim != 2 or G.ndim != 2 or P.shape[1] != G.shape[1]:
        raise ValueError(f"Expected probe and gallery embeddings of the same size, but got shapes {P.shape} "
                         f"and {G.shape}")
    if len(pid) != len(P) or len(gid) != len(G):
        raise ValueError("Expected one identity per probe and per gallery embedding")
    check_finite_embeddings(P, "probe embeddings")
    check_finite_embeddings(G, "gallery embeddings")
    names, g_inv = np.unique(gid, return_inverse=True)
    missing = sorted(str(m) for m in set(pid) - set(names))
    if missing:
        raise ValueError(f"Expected every probe identity in the gallery (closed set), but {len(missing)} are "
                         f"absent: {missing[:5]}")
    true = np.searchsorted(names, pid)
    n_ids = len(names)
    if rule == "mean":
        if metric == "cosine":
            G = G / np.maximum(np.linalg.norm(G, axis=1, keepdims=True), 1e-12)
        tmpl = np.zeros((n_ids, G.shape[1]), np.float64)
        np.add.at(tmpl, g_inv, G)
        tmpl /= np.bincount(g_inv, minlength=n_ids)[:, None]
        G, g_inv = tmpl.astype(np.float32), np.arange(n_ids)
    order = np.argsort(g_inv, kind="stable")
    G = G[order]
    starts = np.r_[0, np.flatnonzero(np.diff(g_inv[order])) + 1]
    ranks = np.empty(len(P), np.int64)
    block = max(1, min(block, (1 << 25) // max(len(G), 1)))  # at most 2^25 scores (128 MiB) per block
    for r0, r1, S in score_blocks(P, G, metric=metric, block=block):
        s = S.numpy()
        ident = np.maximum.reduceat(s, starts, axis=1) if len(starts) < s.shape[1] else s  # (rows, n_ids)
        ranks[r0:r1] = ranks_from_identity_scores(ident, true[r0:r1])
    n_distractors = n_ids - len(np.unique(pid))
    return Ranks(ranks, n_ids, len(gid), int(n_distractors), rule)


def rank_k_accuracy(ranks: ArrayLike, k: int) -> float:
    """Fraction of probes whose true identity is among the ``k`` best-scoring identities.

    Example:
        >>> rank_k_accuracy([1, 3, 2, 7], k=2)
        0.5
    """
    r = np.asarray(ranks)
    if k < 1:
        raise ValueError(f"Expected k >= 1, but got {k}")
    if r.size == 0:
        return float("nan")
    return float((r <= k).mean())


def cmc_curve(ranks: ArrayLike, max_rank: int = 20) -> np.ndarray:
    """Cumulative match characteristic: element ``k - 1`` is the Rank-k accuracy, k = 1..max_rank.

    Example:
        >>> cmc_curve([1, 3, 2, 7], max_rank=3).tolist()
        [0.25, 0.5, 0.75]
    """
    r = np.asarray(ranks)
    if r.size == 0:
        return np.full(max_rank, np.nan)
    return np.array([(r <= k).mean() for k in range(1, max_rank + 1)])
