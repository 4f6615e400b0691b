"""The one ROC primitive and everything built on it: TAR@FAR, AUC, EER, bootstrap CIs, and
streamed all-pairs counts for 10^8-10^9 pairs.

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
    if not np.all(np.isfinite(scores)):
        raise ValueError("Expected all `scores` to be finite, but found NaN or inf")
    values = np.unique(labels)
    if not np.isin(values, [0, 1]).all():
        raise ValueError(f"Expected `is_genuine` to contain only {{0, 1}}, but got values {values.tolist()}")
    return scores, labels.astype(bool)


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


def bootstrap_tar_ci(scores: ArrayLike, is_genuine: ArrayLike, *, far: float | Sequence[float] = DEFAULT_FARS,
                     n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of TAR@FAR, resampling genuine and impostor pairs separately.

    A resample of ``G`` genuine pairs with replacement is a multinomial draw over the distinct
    scores, so each replicate costs one pass over the sorted counts (no re-sorting).

    Returns:
        (low, high): arrays of shape (len(far),), the ``alpha/2`` and ``1 - alpha/2`` quantiles.
    """
    s, g = _check_pair_scores(scores, is_genuine)
    fars = _check_fars(far)
    thr, gen, imp = _grouped_counts(s, g)
    n_gen, n_imp = int(gen.sum()), int(imp.sum())
    if n_gen == 0 or n_imp == 0:
        nan = np.full(fars.shape, np.nan)
        return nan, nan.copy()
    rng = np.random.default_rng(seed)
    pg, pi = gen / n_gen, imp / n_imp
    reps = np.empty((n_boot, len(fars)))
    for b in range(n_boot):
        reps[b] = _points_from_counts(thr, rng.multinomial(n_gen, pg), rng.multinomial(n_imp, pi), fars).tar
    return np.quantile(reps, alpha / 2, axis=0), np.quantile(reps, 1 - alpha / 2, axis=0)


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
    if metric == "cosine":
        return -1.0, 1.0
    na = float(np.linalg.norm(A, axis=1).max()) if len(A) else 0.0
    nb = float(np.linalg.norm(B, axis=1).max()) if len(B) else 0.0
    if metric == "dot":
        return -na * nb, na * nb
    return -(na + nb), 0.0


@dataclass
class StreamedROC:
    """Genuine/impostor score histograms of an all-pairs comparison, plus exact TAR@FAR.

    ``edges`` (n_bins + 1, ascending) bound the bins of ``gen_hist`` / ``imp_hist``. Bin
    ``i`` holds scores ``s`` with ``floor((s - lo) * n_bins / (hi - lo)) == i``. Accepting at
    a bin's lower edge is an exact operating point, so the histogram ROC is a subset of the
    exact ROC; TAR@FAR read from it alone is a lower bound, off by at most the genuine count
    of one bin. :func:`streamed_roc` removes that error with a second pass over the pairs
    that keeps the exact scores of the one bin holding each target's threshold.
    """

    edges: np.ndarray
    gen_hist: np.ndarray
    imp_hist: np.ndarray
    points: OperatingPoints | None = None
    score_min: float = float("nan")
    score_max: float = float("nan")
    info: dict = field(default_factory=dict)

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
        """(accuracy, threshold) at the best bin edge (an optimistic, train-on-test number)."""
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


def streamed_roc(A: ArrayLike, B: ArrayLike | None, labels_a: ArrayLike, labels_b: ArrayLike | None = None, *,
                 metric: str = "cosine", far: float | Sequence[float] = DEFAULT_FARS, n_bins: int = 1 << 16,
                 block: int = 1024, exact: bool = True, progress: bool = False, keep_scores: bool = False,
                 sample_rows: int = 256, seed: int = 0) -> StreamedROC:
    """All-pairs verification of ``A`` against ``B`` (or of ``A`` against itself, ``B=None``,
    each unordered pair once) without ever holding the pair scores in memory.

    Scores are computed block by block (matrix products) and accumulated into genuine and
    impostor histograms of ``n_bins`` bins over the metric's score range. For exact TAR@FAR
    (``exact=True``; identical to :func:`operating_points` on the same scores) the exact
    scores of the bin holding each target's threshold are needed: a pre-pass over
    ``sample_rows`` random rows estimates a score band that should contain those bins, the main
    pass keeps every score inside it (about ``3 * max(far)`` of the pairs), and only if the band
    turns out too narrow does a second pass recompute the blocks. Memory: one block of scores,
    the histograms and the kept band.

    Args:
        labels_a, labels_b: identity of each row; a pair is genuine when they are equal.
        keep_scores: also return every score (tests / small sets): ``info['scores']``,
            ``info['is_genuine']``.
        sample_rows: rows of ``A`` scored in the pre-pass; 0 skips it (always two passes).
    """
    torch = _torch()
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
    fars = _check_fars(far)
    _, inv = np.unique(np.r_[la.astype(str), lb.astype(str)], return_inverse=True)
    ia, ib = inv[: len(la)].astype(np.int64), inv[len(la):].astype(np.int64)
    g_rows, g_cols = _genuine_pairs(ia, ib, same)
    g_start = np.searchsorted(g_rows, np.arange(0, len(A) + block, block))  # genuine pairs per block
    lo, hi = _score_range(A, B, metric)
    scale = n_bins / (hi - lo)
    edges = lo + np.arange(n_bins + 1) / scale
    n_pairs = len(A) * (len(A) - 1) // 2 if same else len(A) * len(B)

    def to_bins(x):
        # int32: the int64 cast costs 3x more on 10^8 scores; n_bins is far below 2^31.
        return x.sub(lo).mul_(scale).clamp_(0, n_bins - 1).to(torch.int32)

    def blocks(desc: str):
        it = score_blocks(A, B, metric=metric, block=block, same_set=same)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=-(-len(A) // block), desc=desc, unit="block", dynamic_ncols=True, mininterval=0.5)
        for bi, (r0, r1, S) in enumerate(it):
            gs = slice(g_start[bi], g_start[bi + 1])
            gr, gc = torch.from_numpy(g_rows[gs] - r0), torch.from_numpy(g_cols[gs])
            valid = (torch.arange(r0, r1)[:, None] < torch.arange(len(B))[None, :]) if same else None
            full = (S.clone(), valid) if keep_scores else None
            g_scores = S[gr, gc]  # advanced indexing: a copy
            # Genuine (and, within one set, j <= i) entries leave the block: what stays is impostors.
            # They become -inf, land in bin 0 and are subtracted from it.
            S[gr, gc] = -math.inf
            n_out = len(gr)
            if valid is not None:
                S.masked_fill_(~valid, -math.inf)
                n_out += int(valid.numel() - valid.sum())
            yield r0, S, g_scores, n_out, full

    def genuine_flags(r0, rows, cols):
        return ia[rows + r0] == ib[cols]

    # Pre-pass: a band [band_lo, inf) expected to hold every target bin (3x the largest FAR).
    band_lo = None
    if exact and not keep_scores and n_pairs > 0 and sample_rows > 0:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(A), size=min(sample_rows, len(A)), replace=False))
        sample = next(score_blocks(A[rows], B, metric=metric, block=len(rows)))[2].numpy()
        imp = ia[rows][:, None] != ib[None, :]
        if same:
            imp &= rows[:, None] != np.arange(len(B))[None, :]
        imp_s = sample[imp]
        if len(imp_s):
            q = 1 - min(0.5, 3 * float(fars.max()) + 50.0 / len(imp_s))
            band_lo = float(np.quantile(imp_s, q))

    gen_hist = torch.zeros(n_bins, dtype=torch.int64)
    imp_hist = torch.zeros(n_bins, dtype=torch.int64)
    kept_imp: list[np.ndarray] = []
    kept_gen: list[np.ndarray] = []
    all_s: list[np.ndarray] = []
    all_g: list[np.ndarray] = []
    for r0, S, g_scores, n_out, full in blocks("scores"):
        if full is not None:  # keep_scores: every pair in row-major order, with its label
            S0, valid = full
            sel = valid if valid is not None else torch.ones_like(S0, dtype=torch.bool)
            nz = torch.nonzero(sel).numpy()
            all_s.append(S0[sel].numpy().astype(np.float64))
            all_g.append(genuine_flags(r0, nz[:, 0], nz[:, 1]))
        if band_lo is not None:
            kept_imp.append(S[S >= band_lo].numpy())
            kept_gen.append(g_scores[g_scores >= band_lo].numpy())
        gen_hist += torch.bincount(to_bins(g_scores), minlength=n_bins)
        h = torch.bincount(to_bins(S).view(-1), minlength=n_bins)  # in place on S: the block is done
        h[0] -= n_out
        imp_hist += h
    gen_np = gen_hist.numpy()
    imp_np = imp_hist.numpy()
    nonempty = np.flatnonzero(gen_np + imp_np)
    smin, smax = (float(edges[nonempty[0]]), float(edges[nonempty[-1] + 1])) if len(nonempty) else (math.nan,) * 2
    out = StreamedROC(edges, gen_np, imp_np, score_min=smin, score_max=smax,
                      info={"metric": metric, "n_bins": n_bins, "lo": lo, "hi": hi, "exact": False, "passes": 1,
                            "band_lo": band_lo})
    if keep_scores:
        kv = np.concatenate(all_s) if all_s else np.zeros(0)
        kg = np.concatenate(all_g) if all_g else np.zeros(0, bool)
        out.info["scores"], out.info["is_genuine"] = kv, kg
        kept_imp, kept_gen = [kv[~kg].astype(np.float32)], [kv[kg].astype(np.float32)]
    n_gen, n_imp = out.n_genuine, out.n_impostor
    if n_gen == 0 or n_imp == 0:
        warnings.warn("TAR@FAR is undefined without both genuine and impostor pairs; returning NaN",
                      UndefinedMetricWarning, stacklevel=2)
        out.points = _nan_points(fars, n_gen, n_imp)
        return out
    _warn_resolution(fars, n_imp)
    k = _max_accepted(fars, n_imp)
    from_top = np.cumsum(imp_np[::-1])  # impostors in the top i+1 bins
    target_bins = n_bins - 1 - np.searchsorted(from_top, k + 1, side="left")  # bin holding the (k+1)-th largest
    if not exact:
        # Lower bound: accept at the upper edge of the target bin.
        gen_above = np.array([gen_np[b + 1:].sum() for b in target_bins])
        imp_above = np.array([imp_np[b + 1:].sum() for b in target_bins])
        out.points = OperatingPoints(fars, gen_above / n_gen, edges[target_bins + 1], imp_above / n_imp, imp_above,
                                     n_gen, n_imp)
        return out
    # The bin below the lowest target bin must be inside the band too (float32 binning margin).
    covered = keep_scores or (band_lo is not None and edges[max(target_bins.min() - 1, 0)] > band_lo)
    if covered:
        vi = np.concatenate(kept_imp) if kept_imp else np.zeros(0, np.float32)
        vg = np.concatenate(kept_gen) if kept_gen else np.zeros(0, np.float32)
    else:
        # The band missed a target bin (unrepresentative sample): recompute and keep those bins.
        out.info["passes"] = 2
        wanted = torch.from_numpy(np.unique(target_bins).astype(np.int32))
        pi, pg = [], []
        for _r0, S, g_scores, _n, _f in blocks("scores (pass 2)"):
            sel = torch.isin(to_bins(S.clone()), wanted) & (S > -math.inf)
            pi.append(S[sel].numpy())
            pg.append(g_scores[torch.isin(to_bins(g_scores.clone()), wanted)].numpy())
        vi, vg = np.concatenate(pi), np.concatenate(pg)
    del kept_imp, kept_gen
    bi_ = to_bins(torch.from_numpy(np.ascontiguousarray(vi, np.float32))).numpy()
    bg_ = to_bins(torch.from_numpy(np.ascontiguousarray(vg, np.float32))).numpy()
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
    out.points = OperatingPoints(fars, tar, thr, far_ach, acc.astype(np.int64), n_gen, n_imp)
    out.info["exact"] = True
    return out
