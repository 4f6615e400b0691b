"""Confidence intervals by identity (cluster) bootstrap: the one resampling scheme of mfrbench.

Why identities and not pairs or probes: the pairs and probes of one person share that person's
difficulty (image quality, pose range, how much of the face the mask hides). Resampling pairs
or probes as if they were independent ignores that correlation and gives intervals that are far
too narrow: with per-identity effects, a nominal 95 % pair-bootstrap interval covered the true
TAR in about 6 of 40 simulated benchmarks (issue 11). Resampling identities keeps each
person's pairs together.

Scheme (every CI of the evaluator):

* A replicate draws ``n`` identities with replacement from the ``n`` identities present
  (draw counts ``c_i``, multinomial). Each drawn copy counts as a distinct person.
* A pair whose two sides have the **same** identity ``i`` (a genuine pair) is weighted ``c_i``.
* A pair of two **different** identities ``i != j`` (an impostor pair) is weighted
  ``c_i * c_j``: every copy of ``i`` meets every copy of ``j``. Pairs between two copies of one
  person are not formed (such pairs were never in the data).
* A probe of identity ``i`` is weighted ``c_i``; the gallery is held fixed (Rank-k is
  conditional on the gallery).
* The interval is the percentile interval (``alpha/2``, ``1 - alpha/2``) of the replicate
  statistics. Replicates where the statistic is undefined (no genuine pair or no impostor pair
  drawn) are left out.

Passing one identity per pair (``identity_a = identity_b = arange(n_pairs)``) gives the plain
pair bootstrap, which the tests use to show how much too narrow it is.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from mfrbench.metrics.roc import DEFAULT_FARS, _check_fars, _check_pair_scores

#: elements of one (replicates x pairs) work array; bounds memory whatever the pair count.
CHUNK_ELEMENTS = 1 << 21


def ci_method(n_boot: int, *, alpha: float = 0.05, what: str = "identities") -> str:
    """The one-line description of the CI that result rows carry in ``ci_method``.

    Example:
        >>> ci_method(1000)
        'identity bootstrap (cluster), 1000 resamples of identities, percentile 95 %'
    """
    return f"identity bootstrap (cluster), {n_boot} resamples of {what}, percentile {100 * (1 - alpha):g} %"


def draw_identities(n_identities: int, *, n_boot: int, seed: int = 0) -> np.ndarray:
    """Draw counts of a cluster bootstrap.

    Returns:
        (n_boot, n_identities) int64; element ``[b, i]`` is how often identity ``i`` was drawn
        in replicate ``b`` (each row sums to ``n_identities``).
    """
    if n_boot < 1 or n_identities < 1:
        raise ValueError(f"Expected n_boot >= 1 and at least one identity, but got {n_boot} and {n_identities}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_identities, size=(n_boot, n_identities))  # (n_boot, n_identities) identity indices
    flat = (draws + np.arange(n_boot)[:, None] * n_identities).ravel()
    return np.bincount(flat, minlength=n_boot * n_identities).reshape(n_boot, n_identities)


def _codes(*labels: ArrayLike) -> tuple[list[np.ndarray], int]:
    """Integer codes of several label arrays over one shared vocabulary, and its size."""
    arrs = [np.asarray(x) for x in labels]
    if any(a.dtype.kind not in "iub" for a in arrs):  # strings or mixed: compare as text
        arrs = [a.astype(str) for a in arrs]
    _, inv = np.unique(np.concatenate(arrs) if arrs else np.zeros(0, np.int64), return_inverse=True)
    out, start = [], 0
    for a in arrs:
        out.append(inv[start:start + len(a)].astype(np.int64))
        start += len(a)
    return out, int(inv.max()) + 1 if len(inv) else 0


def percentile_interval(reps: np.ndarray, *, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) percentile interval over axis 0, ignoring NaN replicates (NaN when all are)."""
    if not 0 < alpha < 1:
        raise ValueError(f"Expected `alpha` in (0, 1), but got {alpha}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column is a NaN interval
        lo, hi = np.nanquantile(reps, [alpha / 2, 1 - alpha / 2], axis=0)
    return lo, hi


# --------------------------------------------------------------------------- TAR@FAR
def _max_accepted_rows(fars: np.ndarray, n_impostor: np.ndarray) -> np.ndarray:
    """Largest integer k with k / N <= far, for each replicate's weighted N (rows) and each far (columns)."""
    n = n_impostor[:, None].astype(np.float64)
    k = np.floor(fars[None, :] * n)
    k = np.where((k + 1) / np.maximum(n, 1) <= fars, k + 1, k)  # settle the float boundary as roc.py does
    k = np.where(k / np.maximum(n, 1) > fars, k - 1, k)
    return np.clip(k, 0, n)


def _row_chunks(n_rows: int, width: int):
    """Slices of replicates such that a (rows, width) work array stays near CHUNK_ELEMENTS."""
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    for s in range(0, n_rows, step):
        yield slice(s, min(s + step, n_rows))


def _pair_weights(c: np.ndarray, ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """(rows, pairs) weights: ``c_a`` for a same-identity pair, ``c_a * c_b`` otherwise."""
    return np.where(ca == cb, 1, c[:, cb]) * c[:, ca]


def _impostor_totals(counts: np.ndarray, ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Weighted impostor count of each replicate, summed over distinct identity pairs (not pairs)."""
    n_ids = counts.shape[1]
    keys, mult = np.unique(ca * n_ids + cb, return_counts=True)
    a, b = keys // n_ids, keys % n_ids
    out = np.zeros(len(counts), np.int64)
    for rows in _row_chunks(len(counts), len(keys)):
        out[rows] = _pair_weights(counts[rows], a, b) @ mult
    return out


def _crossing_scores(imp_desc: np.ndarray, ca: np.ndarray, cb: np.ndarray, counts: np.ndarray, k: np.ndarray
                     ) -> np.ndarray:
    """Score of the impostor where the weighted count, from the top, first exceeds ``k``.

    Accepting every score above it is the smallest threshold whose weighted FAR <= target. Only
    the top impostors are weighed (the targets sit in the top few percent); replicates whose
    crossing lies deeper are redone over all impostors. ``-inf`` when no crossing exists.

    Returns:
        (n_boot, n_far).
    """
    n_boot, n_far = k.shape
    u = np.full((n_boot, n_far), -np.inf)
    m = len(imp_desc)
    top = min(m, int(4 * k.max(initial=0)) + 256)  # weights average 1: the crossing is near position k
    todo = np.arange(n_boot)
    for size in (top, m):
        if not len(todo):
            break
        left: list[int] = []
        for sl in _row_chunks(len(todo), size):
            rows = todo[sl]
            cum = np.cumsum(_pair_weights(counts[rows], ca[:size], cb[:size]), axis=1)  # (rows, size)
            for f in range(n_far):
                pos = (cum <= k[rows, f][:, None]).sum(1)  # first index whose cumulative count exceeds k
                found = pos < size
                u[rows[found], f] = imp_desc[pos[found]]
                if size < m:
                    left.extend(rows[~found].tolist())
        todo = np.unique(np.asarray(left, np.int64))
    return u


def _weighted_genuine_above(gen_desc: np.ndarray, cg: np.ndarray, counts: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Weighted count of genuine scores strictly above ``u`` (n_boot, n_far), chunked over replicates."""
    n_above = len(gen_desc) - np.searchsorted(gen_desc[::-1], u, side="right")  # per (replicate, far)
    out = np.zeros(u.shape)
    for rows in _row_chunks(len(counts), len(gen_desc)):
        cum = np.c_[np.zeros(counts[rows].shape[0]), np.cumsum(counts[rows][:, cg], axis=1)]
        out[rows] = np.take_along_axis(cum, n_above[rows], axis=1)
    return out


def _tar_from_codes(s: np.ndarray, g: np.ndarray, ca: np.ndarray, cb: np.ndarray, fars: np.ndarray,
                    counts: np.ndarray) -> np.ndarray:
    """:func:`tar_replicates` on checked inputs and integer identity codes."""
    gi, ii = np.flatnonzero(g), np.flatnonzero(~g)
    gi = gi[np.argsort(-s[gi], kind="stable")]
    ii = ii[np.argsort(-s[ii], kind="stable")]
    if np.any(ca[gi] != cb[gi]):
        raise ValueError("Expected both sides of every genuine pair to have the same identity")
    n_imp = _impostor_totals(counts, ca[ii], cb[ii])
    n_gen = counts[:, ca[gi]].sum(1) if len(gi) else np.zeros(len(counts), np.int64)
    k = _max_accepted_rows(fars, n_imp)
    u = _crossing_scores(s[ii], ca[ii], cb[ii], counts, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        tar = _weighted_genuine_above(s[gi], ca[gi], counts, u) / n_gen[:, None]
    tar[(n_gen == 0) | (n_imp == 0)] = np.nan
    return tar


def _check_pair_identities(s: np.ndarray, identity_a: ArrayLike, identity_b: ArrayLike
                           ) -> tuple[np.ndarray, np.ndarray, int]:
    (ca, cb), n_ids = _codes(identity_a, identity_b)
    if ca.shape != s.shape or cb.shape != s.shape:
        raise ValueError(f"Expected one identity per pair side, but got {ca.shape} and {cb.shape} for {s.shape} pairs")
    return ca, cb, n_ids


def tar_replicates(scores: ArrayLike, is_genuine: ArrayLike, identity_a: ArrayLike, identity_b: ArrayLike, *,
                   far: float | Sequence[float] = DEFAULT_FARS, counts: np.ndarray) -> np.ndarray:
    """TAR@FAR of each bootstrap replicate given its identity draw counts.

    Uses the TAR@FAR rule of :mod:`mfrbench.metrics.roc` on the weighted pairs (with all
    weights 1 it equals :func:`~mfrbench.metrics.roc.operating_points`). Cost per replicate:
    the genuine pairs plus the top ``4 * far * N`` impostors, not all pairs.

    Args:
        identity_a, identity_b: identity of each pair's two sides (labels of any type).
        counts: (n_boot, n_identities) draw counts over the sorted unique identities of
            ``identity_a`` and ``identity_b`` (:func:`draw_identities`).

    Returns:
        (n_boot, len(far)); NaN for a replicate without a genuine or an impostor pair.
    """
    s, g = _check_pair_scores(scores, is_genuine)
    fars = _check_fars(far)
    ca, cb, n_ids = _check_pair_identities(s, identity_a, identity_b)
    if counts.ndim != 2 or counts.shape[1] != n_ids:
        raise ValueError(f"Expected counts of shape (n_boot, {n_ids}), but got {counts.shape}")
    return _tar_from_codes(s, g, ca, cb, fars, counts)


def bootstrap_tar_ci(scores: ArrayLike, is_genuine: ArrayLike, identity_a: ArrayLike, identity_b: ArrayLike, *,
                     far: float | Sequence[float] = DEFAULT_FARS, n_boot: int = 1000, alpha: float = 0.05,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Identity-bootstrap percentile CI of TAR@FAR (weights as in the module docstring).

    Returns:
        (low, high): arrays of shape (len(far),).

    Example:
        >>> lo, hi = bootstrap_tar_ci([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0], ["a", "b", "a", "a"],
        ...                           ["a", "b", "b", "b"], far=[0.5], n_boot=50)
        >>> float(lo[0]), float(hi[0])
        (1.0, 1.0)
    """
    s, g = _check_pair_scores(scores, is_genuine)
    fars = _check_fars(far)
    ca, cb, n_ids = _check_pair_identities(s, identity_a, identity_b)
    counts = draw_identities(max(n_ids, 1), n_boot=n_boot, seed=seed)
    return percentile_interval(_tar_from_codes(s, g, ca, cb, fars, counts), alpha=alpha)


# --------------------------------------------------------------------------- Rank-k
def rank_replicates(ranks: ArrayLike, identities: ArrayLike, k: int, *, counts: np.ndarray) -> np.ndarray:
    """Rank-k accuracy of each replicate: probes weighted by their identity's draw count.

    Returns:
        (n_boot,); NaN for a replicate that drew no probe.
    """
    r = np.asarray(ranks)
    (code,), n_ids = _codes(identities)
    if code.shape != r.shape:
        raise ValueError(f"Expected one identity per probe, but got {code.shape} for {r.shape} ranks")
    hits = np.bincount(code, weights=(r <= k).astype(np.float64), minlength=n_ids)  # per identity
    probes = np.bincount(code, minlength=n_ids).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ hits) / (counts @ probes)


def bootstrap_rank_ci(ranks: ArrayLike, identities: ArrayLike, k: int, *, n_boot: int = 1000, alpha: float = 0.05,
                      seed: int = 0) -> tuple[float, float]:
    """Identity-bootstrap percentile CI of Rank-k accuracy, resampling probe identities.

    Example:
        >>> bootstrap_rank_ci([1, 1, 3, 3], ["a", "a", "b", "b"], 1, n_boot=200)
        (0.0, 1.0)
    """
    if k < 1:
        raise ValueError(f"Expected k >= 1, but got {k}")
    r = np.asarray(ranks)
    if r.size == 0:
        return float("nan"), float("nan")
    (_, ), n_ids = _codes(identities)
    lo, hi = percentile_interval(rank_replicates(r, identities, k,
                                                 counts=draw_identities(n_ids, n_boot=n_boot, seed=seed)),
                                 alpha=alpha)
    return float(lo), float(hi)


def bootstrap_mean_ci(values: ArrayLike, clusters: ArrayLike, *, n_boot: int = 1000, alpha: float = 0.05,
                      seed: int = 0) -> tuple[float, float]:
    """Cluster-bootstrap percentile CI of a mean, resampling whole clusters (e.g. the faces of a GAN
    read-out, each seen under several references: its outputs are not independent).

    Example:
        >>> bootstrap_mean_ci([1, 1, 0, 0], ["a", "a", "b", "b"], n_boot=200)
        (0.0, 1.0)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    (codes, ), n_ids = _codes(clusters)
    sums, sizes = np.bincount(codes, weights=v, minlength=n_ids), np.bincount(codes, minlength=n_ids)
    counts = draw_identities(n_ids, n_boot=n_boot, seed=seed)
    lo, hi = percentile_interval((counts @ sums) / np.maximum(counts @ sizes, 1), alpha=alpha)
    return float(lo), float(hi)
