"""The one ROC primitive and everything built on it: TAR@FAR, AUC, EER, and streamed all-pairs
counts for 10^8-10^9 pairs (confidence intervals: :mod:`mfrbench.metrics.bootstrap`).

Conventions:

* ``scores``: higher = more similar (negate distances). ``is_genuine``: 1 for a same-identity
  pair, 0 for an impostor pair.
* A pair is accepted when ``score >= t``; scores equal to ``t`` are accepted for both classes
  (ties are never split).
* **TAR@FAR rule** (no interpolation): the operating point is the *smallest* threshold ``t``
  whose FAR(t) <= target. The reported TAR therefore never uses a FAR above the target.
  (insightface's IJB-C script takes the ROC point whose FPR is *nearest* the target, which can
  overshoot it.) Equivalently: with ``N`` impostor pairs let ``k`` be the largest integer with
  ``k / N <= far``; then ``TAR = #{genuine > u} / G`` where ``u`` is the ``(k+1)``-th largest
  impostor score. With ``N * far < 1`` the operating point is FAR = 0 (``k = 0``).
* With ``N`` impostor pairs the smallest non-zero FAR is ``1/N``. :class:`FARResolutionWarning`
  is raised when a target rests on fewer than 10 impostor pairs (``N * far < 10``), and always
  when ``1/N > far``.

Only :func:`_grouped_counts` sorts scores; every other exact metric reads its counts.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_FARS = (1e-4, 1e-3, 1e-2)
MIN_IMPOSTORS_AT_FAR = 10


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the given input (e.g. no impostor pairs); NaN is returned."""


class FARResolutionWarning(UserWarning):
    """A TAR@FAR target rests on too few impostor pairs to be stable (``N * far < 10``)."""


# --------------------------------------------------------------------------- input checks
def _check_pair_scores(scores: ArrayLike, is_genuine: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate verification inputs: 1-D, same length, finite scores, boolean-like labels."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(is_genuine)
    if scores.ndim != 1 or labels.ndim != 1:
        raise ValueError(f"Expected 1-D `scores` and `is_genuine`, but got shapes {scores.shape} and {labels.shape}")
    if scores.shape != labels.shape:
        raise ValueError(f"Expected `scores` and `is_genuine` to have the same length, but got {len(scores)} "
                         f"and {len(labels)}")
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise ValueError(f"Expected all `scores` to be finite, but found {len(bad)} NaN or inf (first at index "
                         f"{bad[:5].tolist()}): check the embeddings")
    values = np.unique(labels)
    if not np.isin(values, [0, 1]).all():
        raise ValueError(f"Expected `is_genuine` to contain only {{0, 1}}, but got values {values.tolist()}")
    return scores, labels.astype(bool)


def check_finite_embeddings(X: np.ndarray, what: str = "embeddings") -> None:
    """Refuse NaN/inf rows: a NaN score compares False with everything, which silently turns into
    rank-1 hits (identification) or a bincount error (streamed histograms)."""
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1)) if X.ndim == 2 else np.zeros(0, np.int64)
    if len(bad):
        raise ValueError(f"Expected finite {what}, but {len(bad)} of {len(X)} rows hold NaN or inf (first rows: "
                         f"{bad[:5].tolist()})")


def _check_fars(far: float | Sequence[float]) -> np.ndarray:
    fars = np.atleast_1d(np.asarray(far, dtype=np.float64))
    if fars.ndim != 1 or np.any(~np.isfinite(fars)) or np.any((fars <= 0) | (fars >= 1)):
        raise ValueError(f"Expected every `far` in the open interval (0, 1), but got {fars.tolist()}")
    return fars


def _max_accepted(fars: np.ndarray, n_impostor: int) -> np.ndarray:
    """Largest integer ``k`` with ``k / n_impostor <= far``, for each far (float-exact)."""
    k = np.floor(fars * n_impostor).astype(np.int64)
    # f * N can round either way; settle the boundary with the same division the ROC uses.
    k = np.where((k + 1) / n_impostor <= fars, k + 1, k)
    k = np.where(k / n_impostor > fars, k - 1, k)
    return np.clip(k, 0, n_impostor)


def _warn_resolution(fars: np.ndarray, n_impostor: int, stacklevel: int = 3) -> None:
    for f in fars:
        if n_impostor * f < MIN_IMPOSTORS_AT_FAR:
            warnings.warn(
                f"TAR@FAR={f:g} rests on {int(math.floor(n_impostor * f + 1e-9))} impostor pair(s): with "
                f"{n_impostor} impostor pairs the smallest non-zero FAR is {1 / n_impostor:.2g}"
                + (" (above the target, so the operating point is FAR=0)" if 1 / n_impostor > f else "")
                + "; read it with its bootstrap CI", FARResolutionWarning, stacklevel=stacklevel)


# --------------------------------------------------------------------------- the ROC primitive
def _grouped_counts(scores: np.ndarray, genuine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores in decreasing order with the genuine and impostor count at each.

    Returns:
        (thresholds, gen, imp): element i is a distinct score value and how many genuine /
        impostor pairs have exactly that score.
    """
    order = np.argsort(-scores, kind="mergesort")
    s = scores[order]
    g = genuine[order].astype(np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1] if len(s) else np.zeros(0, np.int64)
    gen = np.add.reduceat(g, starts) if len(s) else np.zeros(0, np.int64)
    n = np.diff(np.r_[starts, len(s)])
    return s[starts], gen, n - gen


def roc_curve(scores: ArrayLike, is_genuine: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC with every achievable operating point (sklearn's ``drop_intermediate=False``).

    Returns:
        (fpr, tpr, thresholds): element i is the FAR and TAR when accepting ``score >=
        thresholds[i]``; thresholds decrease, ``thresholds[0] = inf`` so ``fpr[0] = tpr[0] = 0``.
        A rate is NaN (with :class:`UndefinedMetricWarning`) when its class has no pairs.

    Example:
        >>> fpr, tpr, thr = roc_curve([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0])
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    s, g = _check_pair_scores(scores, is_genuine)
    thr, gen, imp = _grouped_counts(s, g)
    tps = np.r_[0, np.cumsum(gen)].astype(np.float64)
    fps = np.r_[0, np.cumsum(imp)].astype(np.float64)
    if fps[-1] == 0:
        warnings.warn("No impostor pairs: FAR is undefined; returning NaN", UndefinedMetricWarning, stacklevel=2)
        fpr = np.full_like(fps, np.nan)
    else:
        fpr = fps / fps[-1]
    if tps[-1] == 0:
        warnings.warn("No genuine pairs: TAR is undefined; returning NaN", UndefinedMetricWarning, stacklevel=2)
        tpr = np.full_like(tps, np.nan)
    else:
        tpr = tps / tps[-1]
    return fpr, tpr, np.r_[np.inf, thr]


@dataclass(frozen=True)
class OperatingPoints:
    """TAR at each target FAR, with the exact operating point it was read at.

    Element i of each array belongs to ``far[i]``: ``tar`` (fraction), ``threshold`` (accept
    ``score >= threshold``), ``far_achieved`` (<= far[i]), ``n_impostor_accepted``.
    """

    far: np.ndarray
    tar: np.ndarray
    threshold: np.ndarray
    far_achieved: np.ndarray
    n_impostor_accepted: np.ndarray
    n_genuine: int
    n_impostor: int


def _points_from_counts(thr: np.ndarray, gen: np.ndarray, imp: np.ndarray, fars: np.ndarray) -> OperatingPoints:
    n_gen, n_imp = int(gen.sum()), int(imp.sum())
    cum_gen, cum_imp = np.cumsum(gen), np.cumsum(imp)
    k = _max_accepted(fars, n_imp)
    j = np.searchsorted(cum_imp, k, side="right") - 1  # last threshold whose FAR <= target; -1: reject all
    ok = j >= 0
    jj = np.maximum(j, 0)
    tar = np.where(ok, cum_gen[jj], 0) / n_gen
    acc = np.where(ok, cum_imp[jj], 0)
    return OperatingPoints(fars, tar, np.where(ok, thr[jj], np.inf), acc / n_imp, acc.astype(np.int64), n_gen, n_imp)


def _nan_points(fars: np.ndarray, n_gen: int, n_imp: int) -> OperatingPoints:
    nan = np.full(fars.shape, np.nan)
    return OperatingPoints(fars, nan, nan.copy(), nan.copy(), np.zeros(fars.shape, np.int64), n_gen, n_imp)


def operating_points(scores: ArrayLike, is_genuine: ArrayLike, *, far: float | Sequence[float] = DEFAULT_FARS
                     ) -> OperatingPoints:
    """TAR at each target FAR under the rule in the module docstring, with its threshold.

    NaN (with :class:`UndefinedMetricWarning`) when there are no genuine or no impostor pairs;
    :class:`FARResolutionWarning` when a target rests on fewer than 10 impostor pairs.
    """
    s, g = _check_pair_scores(scores, is_genuine)
    fars = _check_fars(far)
    n_gen, n_imp = int(g.sum()), int((~g).sum())
    if n_gen == 0 or n_imp == 0:
        warnings.warn("TAR@FAR is undefined without both genuine and impostor pairs; returning NaN",
                      UndefinedMetricWarning, stacklevel=2)
        return _nan_points(fars, n_gen, n_imp)
    _warn_resolution(fars, n_imp)
    return _points_from_counts(*_grouped_counts(s, g), fars)


def tar_at_far(scores: ArrayLike, is_genuine: ArrayLike, *, far: float | Sequence[float]) -> np.ndarray:
    """True accept rate at the given false accept rate(s).

    TAR@FAR is the TPR at the lowest threshold whose FPR does not exceed ``far`` (no
    interpolation; ties in ``scores`` are never split).

    Returns:
        Array of shape (len(far),); element i is the TAR at far[i]. NaN (with
        :class:`UndefinedMetricWarning`) when there are no impostor or no genuine pairs.

    Example:
        >>> tar_at_far([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0], far=[0.5])
        array([1.])
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FARResolutionWarning)  # re-raised below at the caller's level
        pts = operating_points(scores, is_genuine, far=far)
    if pts.n_impostor:
        _warn_resolution(pts.far, pts.n_impostor)
    return pts.tar


def _defined_roc(scores: ArrayLike, is_genuine: ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
    """(fpr, tpr) of :func:`roc_curve`, or ``None`` when it is undefined (one class missing)."""
    fpr, tpr, _ = roc_curve(scores, is_genuine)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return None
    return fpr, tpr


def roc_auc(scores: ArrayLike, is_genuine: ArrayLike) -> float:
    """Area under the ROC (ties count half, as sklearn's ``roc_auc_score``).

    Example:
        >>> roc_auc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0])
        0.75
    """
    roc = _defined_roc(scores, is_genuine)
    if roc is None:
        return float("nan")
    fpr, tpr = roc
    return float(np.trapezoid(tpr, fpr))


def eer(scores: ArrayLike, is_genuine: ArrayLike) -> float:
    """Equal error rate: (FAR + FRR) / 2 at the ROC point where |FAR - FRR| is smallest.

    Example:
        >>> eer([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0])
        0.5
    """
    roc = _defined_roc(scores, is_genuine)
    if roc is None:
        return float("nan")
    fpr, tpr = roc
    fnr = 1 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


# --------------------------------------------------------------------------- streamed all-pairs
def _torch():
    import torch

    return torch


def score_blocks(A: np.ndarray, B: np.ndarray, *, metric: str = "cosine", block: int = 2048,
                 same_set: bool = False) -> Iterator[tuple[int, int, "object"]]:
    """Yield ``(r0, r1, S)``: ``S`` = scores of rows ``A[r0:r1]`` against all of ``B``
    (a float32 torch tensor of shape (r1 - r0, len(B))), one matrix product per block.

    ``metric``: ``cosine`` (rows L2-normalised first), ``dot``, or ``euclidean`` (score =
    minus the Euclidean distance). With ``same_set`` (``A is B``) the caller keeps ``j > i``.
    """
    torch = _torch()
    a = torch.from_numpy(np.ascontiguousarray(A, dtype=np.float32))
    b = a if same_set else torch.from_numpy(np.ascontiguousarray(B, dtype=np.float32))
    if metric == "cosine":
        a = torch.nn.functional.normalize(a, dim=1)
        b = a if same_set else torch.nn.functional.normalize(b, dim=1)
    elif metric not in ("dot", "euclidean"):
        raise ValueError(f"Expected `metric` in ('cosine', 'dot', 'euclidean'), but got {metric!r}")
    bt = b.T.contiguous()
    b_sq = (b * b).sum(1) if metric == "euclidean" else None
    for r0 in range(0, a.shape[0], block):
        r1 = min(r0 + block, a.shape[0])
        S = a[r0:r1] @ bt  # (rows, len(B))
        if metric == "euclidean":
            a_sq = (a[r0:r1] * a[r0:r1]).sum(1, keepdim=True)
            S.mul_(-2).add_(a_sq).add_(b_sq).clamp_(min=0).sqrt_().neg_()
        yield r0, r1, S


def _score_range(A: np.ndarray, B: np.ndarray, metric: str) -> tuple[float, float]:
    """Bounds of every possible score, so the histogram bins are fixed before the first block."""
    if metric == "cosine":
        return -1.0, 1.0
    def max_norm(X: np.ndarray) -> float:  # in float64: a float32 square can overflow before the check
        return float(np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64).max())) if len(X) else 0.0

    na, nb = max_norm(A), max_norm(B)
    lo, hi = (-na * nb, na * nb) if metric == "dot" else (-(na + nb), 0.0)
    if not np.isfinite(lo) or max(abs(lo), abs(hi)) > float(np.finfo(np.float32).max) / 4:
        raise ValueError(f"Expected embeddings whose {metric} scores fit in float32, but the largest norms are "
                         f"{na:.3g} and {nb:.3g}")
    return (lo, hi) if hi > lo else (lo, lo + 1.0)  # all-zero embeddings: one non-empty range


@dataclass
class StreamedROC:
    """Genuine/impostor score histograms of an all-pairs comparison, plus exact TAR@FAR.

    ``edges`` (n_bins + 1, ascending) bound the bins of ``gen_hist`` / ``imp_hist``. Bin
    ``i`` holds scores ``s`` with ``floor((s - lo) * n_bins / (hi - lo)) == i``. Accepting at
    a bin's lower edge is an exact operating point, so the histogram ROC is a subset of the
    exact ROC; TAR@FAR read from it alone is a lower bound, off by at most the genuine count
    of one bin. :func:`streamed_roc` removes that error with a second pass over the pairs
    that keeps the exact scores of the one bin holding each target's threshold.

    ``gen_fold_hist`` / ``imp_fold_hist`` (n_folds, n_bins) split the same counts by the fold
    of each pair's row (the probe), for held-out accuracy
    (:func:`mfrbench.metrics.verification.kfold_accuracy_from_histograms`); one fold when
    :func:`streamed_roc` got no folds.
    """

    edges: np.ndarray
    gen_hist: np.ndarray
    imp_hist: np.ndarray
    points: OperatingPoints | None = None
    score_min: float = float("nan")
    score_max: float = float("nan")
    info: dict = field(default_factory=dict)
    gen_fold_hist: np.ndarray | None = None
    imp_fold_hist: np.ndarray | None = None

    @property
    def n_genuine(self) -> int:
        return int(self.gen_hist.sum())

    @property
    def n_impostor(self) -> int:
        return int(self.imp_hist.sum())

    def roc(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fpr, tpr, thresholds) at the bin lower edges, thresholds decreasing from +inf."""
        gen, imp = self.gen_hist[::-1], self.imp_hist[::-1]
        tps = np.r_[0, np.cumsum(gen)] / max(self.n_genuine, 1)
        fps = np.r_[0, np.cumsum(imp)] / max(self.n_impostor, 1)
        return fps, tps, np.r_[np.inf, self.edges[:-1][::-1]]

    def auc(self) -> tuple[float, float]:
        """(AUC, bound): pairs within one bin count as ties, so |AUC - exact| <= bound."""
        fpr, tpr, _ = self.roc()
        bound = float((self.gen_hist.astype(np.float64) * self.imp_hist).sum()
                      / (2.0 * max(self.n_genuine, 1) * max(self.n_impostor, 1)))
        return float(np.trapezoid(tpr, fpr)), bound

    def best_accuracy(self, *, balanced: bool = True) -> tuple[float, float]:
        """(accuracy, threshold) at the best bin edge: chosen on the very pairs it scores, so
        optimistic; result rows use held-out folds instead (``gen_fold_hist``)."""
        fpr, tpr, thr = self.roc()
        if balanced:
            acc = (tpr + 1 - fpr) / 2
        else:
            acc = (tpr * self.n_genuine + (1 - fpr) * self.n_impostor) / (self.n_genuine + self.n_impostor)
        i = int(np.argmax(acc))
        return float(acc[i]), float(thr[i])

    def eer(self) -> float:
        fpr, tpr, _ = self.roc()
        fnr = 1 - tpr
        i = int(np.argmin(np.abs(fnr - fpr)))
        return float((fpr[i] + fnr[i]) / 2)


def _genuine_pairs(la: np.ndarray, lb: np.ndarray, same: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of every genuine pair, sorted by row; with ``same`` only ``col > row``."""
    order_b = np.argsort(lb, kind="stable")
    sb = lb[order_b]
    lo_i = np.searchsorted(sb, la, side="left")
    hi_i = np.searchsorted(sb, la, side="right")
    counts = hi_i - lo_i
    rows = np.repeat(np.arange(len(la)), counts)
    starts = np.repeat(lo_i - np.r_[0, np.cumsum(counts)[:-1]], counts)
    cols = order_b[np.arange(len(rows)) + starts] if len(rows) else np.zeros(0, np.int64)
    if same:
        keep = cols > rows
        rows, cols = rows[keep], cols[keep]
    return rows.astype(np.int64), cols.astype(np.int64)


@dataclass
class _PairSpace:
    """What :func:`streamed_roc` compares: rows of ``A`` against ``B`` (or ``A`` with itself),
    with integer identities, the genuine pairs, each row's fold and the images kept out of
    impostor pairs."""

    A: np.ndarray
    B: np.ndarray
    same: bool
    ia: np.ndarray
    ib: np.ndarray
    g_rows: np.ndarray
    g_cols: np.ndarray
    g_start: np.ndarray     # genuine pairs of block i: g_start[i]:g_start[i + 1]
    fold: np.ndarray        # fold of each row of A, 0..n_folds-1
    n_folds: int
    excl_a: np.ndarray      # row indices of A kept out of impostor pairs
    excl_b: np.ndarray      # column indices of B kept out of impostor pairs
    block: int

    @property
    def n_pairs(self) -> int:
        return len(self.A) * (len(self.A) - 1) // 2 if self.same else len(self.A) * len(self.B)


def _index_of(flags: ArrayLike | None, n: int, what: str) -> np.ndarray:
    if flags is None:
        return np.zeros(0, np.int64)
    f = np.asarray(flags, bool)
    if f.shape != (n,):
        raise ValueError(f"Expected one `{what}` flag per embedding ({n}), but got shape {f.shape}")
    return np.flatnonzero(f)


def _pair_space(A: ArrayLike, B: ArrayLike | None, labels_a: ArrayLike, labels_b: ArrayLike | None,
                folds_a: ArrayLike | None, no_impostor_a: ArrayLike | None, no_impostor_b: ArrayLike | None,
                block: int) -> _PairSpace:
    """Validate the inputs of :func:`streamed_roc` and index its genuine pairs once."""
    A = np.asarray(A, np.float32)
    same = B is None
    B = A if same else np.asarray(B, np.float32)
    la = np.asarray(labels_a)
    lb = la if same else np.asarray(labels_b)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"Expected 2-D embeddings of the same size, but got shapes {A.shape} and {B.shape}")
    if len(la) != len(A) or len(lb) != len(B):
        raise ValueError(f"Expected one label per embedding, but got {len(la)} labels for {len(A)} rows and "
                         f"{len(lb)} for {len(B)}")
    check_finite_embeddings(A, "embeddings `A`")
    if not same:
        check_finite_embeddings(B, "embeddings `B`")
    _, inv = np.unique(np.r_[la.astype(str), lb.astype(str)], return_inverse=True)
    ia, ib = inv[: len(la)].astype(np.int64), inv[len(la):].astype(np.int64)
    g_rows, g_cols = _genuine_pairs(ia, ib, same)
    g_start = np.searchsorted(g_rows, np.arange(0, len(A) + block, block))
    if folds_a is None:
        fold, n_folds = np.zeros(len(A), np.int64), 1
    else:
        ids, fold = np.unique(np.asarray(folds_a), return_inverse=True)
        if fold.shape != (len(A),):
            raise ValueError(f"Expected one fold per row of `A` ({len(A)}), but got shape {np.shape(folds_a)}")
        n_folds = len(ids)
    excl_a = _index_of(no_impostor_a, len(A), "no_impostor_a")
    excl_b = excl_a if same else _index_of(no_impostor_b, len(B), "no_impostor_b")
    return _PairSpace(A, B, same, ia, ib, g_rows, g_cols, g_start, fold.astype(np.int64), n_folds, excl_a, excl_b,
                      block)


@dataclass
class _Block:
    """One block of rows, masked: ``S`` holds impostor scores, ``-inf`` where no impostor pair is."""

    r0: int
    S: "object"                 # (rows, len(B)) float32 tensor
    g_scores: "object"          # genuine scores of these rows (tensor)
    g_rows: np.ndarray          # their row (global index into A)
    g_cols: np.ndarray
    n_out: np.ndarray           # per row: entries of S set to -inf


def _mask_block(sp: _PairSpace, bi: int, r0: int, r1: int, S) -> _Block:
    """Take the genuine scores out of ``S`` and set every non-impostor entry to ``-inf``.

    Non-impostor: genuine pairs, ``j <= i`` within one set, and impostor pairs of an image kept
    out of them. ``-inf`` lands in bin 0 of the histogram and is subtracted from it
    (``n_out``, counted per row, so per fold).
    """
    torch = _torch()
    gs = slice(sp.g_start[bi], sp.g_start[bi + 1])
    g_rows, g_cols = sp.g_rows[gs], sp.g_cols[gs]
    gr, gc = torch.from_numpy(g_rows - r0), torch.from_numpy(g_cols)
    g_scores = S[gr, gc]  # advanced indexing: a copy
    S[gr, gc] = -math.inf
    n_out = np.bincount(g_rows - r0, minlength=r1 - r0).astype(np.int64)
    if sp.same:
        S.masked_fill_(torch.arange(r0, r1)[:, None] >= torch.arange(len(sp.B))[None, :], -math.inf)
        n_out += np.arange(r0, r1) + 1  # row i drops columns 0..i (its genuine pairs sit at j > i)
    rows = sp.excl_a[(sp.excl_a >= r0) & (sp.excl_a < r1)] - r0
    if len(rows):
        t = torch.from_numpy(rows)
        n_out[rows] += (S[t] > -math.inf).sum(1).numpy()
        S[t] = -math.inf
    if len(sp.excl_b):
        t = torch.from_numpy(sp.excl_b)
        n_out += (S[:, t] > -math.inf).sum(1).numpy()
        S[:, t] = -math.inf
    return _Block(r0, S, g_scores, g_rows, g_cols, n_out)


def _blocks(sp: _PairSpace, metric: str, progress: bool, desc: str) -> Iterator[_Block]:
    """Every block of scores, masked (:func:`_mask_block`), one matrix product at a time."""
    it = score_blocks(sp.A, sp.B, metric=metric, block=sp.block, same_set=sp.same)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=-(-len(sp.A) // sp.block), desc=desc, unit="block", dynamic_ncols=True, mininterval=0.5)
    for bi, (r0, r1, S) in enumerate(it):
        yield _mask_block(sp, bi, r0, r1, S)


@dataclass(frozen=True)
class _Binner:
    """Score -> histogram bin (int32: the int64 cast costs 3x more on 10^8 scores)."""

    lo: float
    hi: float
    n_bins: int

    @property
    def scale(self) -> float:
        return self.n_bins / (self.hi - self.lo)

    @property
    def edges(self) -> np.ndarray:
        return self.lo + np.arange(self.n_bins + 1) / self.scale

    def __call__(self, x):
        return x.sub(self.lo).mul_(self.scale).clamp_(0, self.n_bins - 1).to(_torch().int32)


def _sample_band(sp: _PairSpace, metric: str, fars: np.ndarray, sample_rows: int, seed: int) -> float | None:
    """Lower end of a score band [band_lo, inf) expected to hold every target bin (3x the largest
    FAR), estimated from the impostor scores of ``sample_rows`` random rows."""
    if sp.n_pairs == 0 or sample_rows <= 0:
        return None
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(sp.A), size=min(sample_rows, len(sp.A)), replace=False))
    sample = next(score_blocks(sp.A[rows], sp.B, metric=metric, block=len(rows)))[2].numpy()
    imp = sp.ia[rows][:, None] != sp.ib[None, :]
    if sp.same:
        imp &= rows[:, None] != np.arange(len(sp.B))[None, :]
    imp_s = sample[imp]
    if not len(imp_s):
        return None
    q = 1 - min(0.5, 3 * float(fars.max()) + 50.0 / len(imp_s))
    return float(np.quantile(imp_s, q))


@dataclass
class _Counts:
    gen: "object"               # (n_folds, n_bins) int64 tensors
    imp: "object"
    band_imp: list = field(default_factory=list)
    band_gen: list = field(default_factory=list)
    pairs: list = field(default_factory=list)    # keep_scores: (rows, cols, scores, is_genuine) per block


def _fold_bincount(bins, fold_of_row, sp: _PairSpace, n_bins: int):
    """bincount over (fold, bin): one histogram per fold from one call."""
    torch = _torch()
    if sp.n_folds > 1:
        bins = bins + torch.from_numpy((fold_of_row * n_bins).astype(np.int32)).reshape(
            (-1,) + (1,) * (bins.dim() - 1))
    return torch.bincount(bins.reshape(-1), minlength=sp.n_folds * n_bins).reshape(sp.n_folds, n_bins)


def _accumulate(sp: _PairSpace, metric: str, binner: _Binner, band_lo: float | None, keep_scores: bool,
                progress: bool) -> _Counts:
    """The main pass: per-fold histograms, the scores in the band, and (keep_scores) every pair."""
    torch = _torch()
    n = binner.n_bins
    c = _Counts(torch.zeros((sp.n_folds, n), dtype=torch.int64), torch.zeros((sp.n_folds, n), dtype=torch.int64))
    for blk in _blocks(sp, metric, progress, "scores"):
        rows_fold = sp.fold[blk.r0:blk.r0 + blk.S.shape[0]]
        if keep_scores:
            nz = torch.nonzero(blk.S > -math.inf).numpy()
            c.pairs.append((np.r_[nz[:, 0] + blk.r0, blk.g_rows], np.r_[nz[:, 1], blk.g_cols],
                            np.r_[blk.S[blk.S > -math.inf].numpy(), blk.g_scores.numpy()].astype(np.float64),
                            np.r_[np.zeros(len(nz), bool), np.ones(len(blk.g_rows), bool)]))
        if band_lo is not None:
            c.band_imp.append(blk.S[blk.S >= band_lo].numpy())
            c.band_gen.append(blk.g_scores[blk.g_scores >= band_lo].numpy())
        c.gen += _fold_bincount(binner(blk.g_scores), sp.fold[blk.g_rows], sp, n)
        h = _fold_bincount(binner(blk.S), rows_fold, sp, n)
        h[:, 0] -= torch.from_numpy(np.bincount(rows_fold, weights=blk.n_out, minlength=sp.n_folds).astype(np.int64))
        c.imp += h
    return c


def _all_pairs(c: _Counts) -> dict:
    """keep_scores: every pair in row-major order (row, then column), with its label."""
    rows, cols, s, g = (np.concatenate(x) for x in zip(*c.pairs)) if c.pairs else (np.zeros(0, np.int64),) * 4
    order = np.lexsort((cols, rows))
    return {"scores": s[order].astype(np.float64), "is_genuine": g[order].astype(bool),
            "rows": rows[order].astype(np.int64), "cols": cols[order].astype(np.int64)}


def _target_bins(imp_np: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Bin holding the (k+1)-th largest impostor score, for each k."""
    from_top = np.cumsum(imp_np[::-1])  # impostors in the top i+1 bins
    return len(imp_np) - 1 - np.searchsorted(from_top, k + 1, side="left")


def _lower_bound_points(gen_np, imp_np, edges, target_bins, fars, n_gen, n_imp) -> OperatingPoints:
    """Accept at the upper edge of each target bin: a lower bound of TAR@FAR (``exact=False``)."""
    gen_above = np.array([gen_np[b + 1:].sum() for b in target_bins])
    imp_above = np.array([imp_np[b + 1:].sum() for b in target_bins])
    return OperatingPoints(fars, gen_above / n_gen, edges[target_bins + 1], imp_above / n_imp, imp_above, n_gen, n_imp)


def _rescan_bins(sp: _PairSpace, metric: str, binner: _Binner, target_bins: np.ndarray, progress: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Second pass: the exact impostor and genuine scores of the target bins only."""
    torch = _torch()
    wanted = torch.from_numpy(np.unique(target_bins).astype(np.int32))
    pi, pg = [], []
    for blk in _blocks(sp, metric, progress, "scores (pass 2)"):
        sel = torch.isin(binner(blk.S), wanted) & (blk.S > -math.inf)
        pi.append(blk.S[sel].numpy())
        pg.append(blk.g_scores[torch.isin(binner(blk.g_scores), wanted)].numpy())
    return np.concatenate(pi), np.concatenate(pg)


def _exact_points(vi: np.ndarray, vg: np.ndarray, binner: _Binner, gen_np: np.ndarray, imp_np: np.ndarray,
                  target_bins: np.ndarray, k: np.ndarray, fars: np.ndarray) -> OperatingPoints:
    """TAR@FAR from the histograms plus the exact scores ``vi``/``vg`` of (at least) the target bins."""
    torch = _torch()
    n_gen, n_imp = int(gen_np.sum()), int(imp_np.sum())
    bi_ = binner(torch.from_numpy(np.ascontiguousarray(vi, np.float32))).numpy()
    bg_ = binner(torch.from_numpy(np.ascontiguousarray(vg, np.float32))).numpy()
    tar, thr, far_ach, acc = (np.empty(len(fars)) for _ in range(4))
    for i, (b, kk) in enumerate(zip(target_bins, k)):
        imp_vals = np.sort(vi[bi_ == b].astype(np.float64))[::-1]
        gen_vals = vg[bg_ == b].astype(np.float64)
        if len(imp_vals) != imp_np[b] or len(gen_vals) != gen_np[b]:
            raise RuntimeError(f"exact pass found {len(imp_vals)}/{len(gen_vals)} scores in bin {b}, the histogram "
                               f"counted {imp_np[b]}/{gen_np[b]}: scores are not reproducible between passes")
        imp_above, gen_above = int(imp_np[b + 1:].sum()), int(gen_np[b + 1:].sum())
        u = imp_vals[kk - imp_above]  # the (k+1)-th largest impostor score overall
        tar[i] = (gen_above + int((gen_vals > u).sum())) / n_gen
        acc[i] = imp_above + int((imp_vals > u).sum())
        far_ach[i] = acc[i] / n_imp
        above = np.r_[imp_vals[imp_vals > u], gen_vals[gen_vals > u]]
        # Any t in (u, next score] accepts the same pairs; report the next score when it is in this bin.
        thr[i] = float(above.min()) if len(above) else float(np.nextafter(u, np.inf))
    return OperatingPoints(fars, tar, thr, far_ach, acc.astype(np.int64), n_gen, n_imp)


def streamed_roc(A: ArrayLike, B: ArrayLike | None, labels_a: ArrayLike, labels_b: ArrayLike | None = None, *,
                 metric: str = "cosine", far: float | Sequence[float] = DEFAULT_FARS, n_bins: int = 1 << 16,
                 block: int = 1024, exact: bool = True, progress: bool = False, keep_scores: bool = False,
                 sample_rows: int = 256, seed: int = 0, folds_a: ArrayLike | None = None,
                 no_impostor_a: ArrayLike | None = None, no_impostor_b: ArrayLike | None = None) -> StreamedROC:
    """All-pairs verification of ``A`` against ``B`` (or of ``A`` against itself, ``B=None``,
    each unordered pair once) without ever holding the pair scores in memory.

    Scores are computed block by block (matrix products) and accumulated into genuine and
    impostor histograms of ``n_bins`` bins over the metric's score range, one per fold of the
    row (``folds_a``). For exact TAR@FAR (``exact=True``; identical to :func:`operating_points`
    on the same scores) the exact scores of the bin holding each target's threshold are needed:
    a pre-pass over ``sample_rows`` random rows estimates a score band that should contain
    those bins, the main pass keeps every score inside it (about ``3 * max(far)`` of the
    pairs), and only if the band turns out too narrow does a second pass recompute the blocks.
    Memory: one block of scores, the histograms and the kept band.

    Args:
        labels_a, labels_b: identity of each row; a pair is genuine when they are equal.
        keep_scores: also return every pair (tests / small sets): ``info['scores']``,
            ``info['is_genuine']``, ``info['rows']``, ``info['cols']`` (row-major order).
        sample_rows: rows of ``A`` scored in the pre-pass; 0 skips it (always two passes).
        folds_a: fold of each row of ``A`` (e.g. by probe identity): fills ``gen_fold_hist`` /
            ``imp_fold_hist``.
        no_impostor_a, no_impostor_b: boolean flags of images kept out of impostor pairs
            (e.g. files byte-identical to an image of another identity); their genuine pairs stay.

    Raises:
        ValueError: on NaN/inf embeddings (they would otherwise break the histograms).
    """
    sp = _pair_space(A, B, labels_a, labels_b, folds_a, no_impostor_a, no_impostor_b, block)
    fars = _check_fars(far)
    binner = _Binner(*_score_range(sp.A, sp.B, metric), n_bins)
    band_lo = _sample_band(sp, metric, fars, sample_rows, seed) if exact and not keep_scores else None
    c = _accumulate(sp, metric, binner, band_lo, keep_scores, progress)
    gen_f, imp_f = c.gen.numpy(), c.imp.numpy()
    gen_np, imp_np = gen_f.sum(0), imp_f.sum(0)
    edges = binner.edges
    nonempty = np.flatnonzero(gen_np + imp_np)
    smin, smax = (float(edges[nonempty[0]]), float(edges[nonempty[-1] + 1])) if len(nonempty) else (math.nan,) * 2
    out = StreamedROC(edges, gen_np, imp_np, score_min=smin, score_max=smax, gen_fold_hist=gen_f, imp_fold_hist=imp_f,
                      info={"metric": metric, "n_bins": n_bins, "lo": binner.lo, "hi": binner.hi, "exact": False,
                            "passes": 1, "band_lo": band_lo, "n_folds": sp.n_folds})
    if keep_scores:
        out.info.update(_all_pairs(c))
        s, g = out.info["scores"], out.info["is_genuine"]
        c.band_imp, c.band_gen = [s[~g].astype(np.float32)], [s[g].astype(np.float32)]
    n_gen, n_imp = out.n_genuine, out.n_impostor
    if n_gen == 0 or n_imp == 0:
        warnings.warn("TAR@FAR is undefined without both genuine and impostor pairs; returning NaN",
                      UndefinedMetricWarning, stacklevel=2)
        out.points = _nan_points(fars, n_gen, n_imp)
        return out
    _warn_resolution(fars, n_imp)
    k = _max_accepted(fars, n_imp)
    target_bins = _target_bins(imp_np, k)
    if not exact:
        out.points = _lower_bound_points(gen_np, imp_np, edges, target_bins, fars, n_gen, n_imp)
        return out
    # The bin below the lowest target bin must be inside the band too (float32 binning margin).
    if keep_scores or (band_lo is not None and edges[max(target_bins.min() - 1, 0)] > band_lo):
        vi = np.concatenate(c.band_imp) if c.band_imp else np.zeros(0, np.float32)
        vg = np.concatenate(c.band_gen) if c.band_gen else np.zeros(0, np.float32)
    else:  # the band missed a target bin (unrepresentative sample): recompute and keep those bins
        out.info["passes"] = 2
        vi, vg = _rescan_bins(sp, metric, binner, target_bins, progress)
    del c
    out.points = _exact_points(vi, vg, binner, gen_np, imp_np, target_bins, k, fars)
    out.info["exact"] = True
    return out
