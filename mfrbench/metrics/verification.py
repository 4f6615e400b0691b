"""Verification: block-wise pair scoring and LFW-style k-fold accuracy.

Scores follow "higher = more similar": ``cosine`` (of L2-normalised embeddings), ``dot``, or
``euclidean`` (minus the Euclidean distance; dlib's ResNet was trained for it).

k-fold accuracy protocol (LFW View 2): for each fold, the threshold that maximises accuracy on
the *other* folds is applied to the held-out fold; the result is mean and std of the per-fold
accuracies. Folds are the pair file's own folds (never shuffled). Candidate thresholds are the
sorted unique training scores plus "reject all", so the result does not depend on the score
scale (insightface instead scans ``np.arange(0, 4, 0.01)`` on squared distance). Among
candidates with equal training accuracy the lowest wins (insightface's ``argmax`` over an
ascending grid does the same), and the threshold is set midway between that score and the
next lower training score (every value in between has the same training accuracy).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from mfrbench.metrics.roc import _check_pair_scores, _grouped_counts

METRICS = ("cosine", "dot", "euclidean")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"Expected `metric` in {METRICS}, but got {metric!r}")


def similarity(a: ArrayLike, b: ArrayLike, *, metric: str = "cosine") -> np.ndarray:
    """Row-wise similarity of two (N, D) arrays: element i compares ``a[i]`` with ``b[i]``.

    Example:
        >>> similarity([[1.0, 0.0], [3.0, 4.0]], [[0.0, 2.0], [3.0, 4.0]]).round(6).tolist()
        [0.0, 1.0]
    """
    _check_metric(metric)
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"Expected two (N, D) arrays of the same shape, but got {a.shape} and {b.shape}")
    if metric == "cosine":
        na = np.linalg.norm(a, axis=1)
        nb = np.linalg.norm(b, axis=1)
        return np.einsum("ij,ij->i", a, b) / np.maximum(na * nb, 1e-12)
    if metric == "dot":
        return np.einsum("ij,ij->i", a, b)
    return -np.linalg.norm(a - b, axis=1)


def pair_scores(emb: ArrayLike, idx_a: ArrayLike, idx_b: ArrayLike, *, metric: str = "cosine",
                block: int = 1 << 16) -> np.ndarray:
    """Scores of the pairs ``(emb[idx_a[i]], emb[idx_b[i]])``, computed block by block.

    Returns:
        float64 array of shape (len(idx_a),); element i is the score of pair i.
    """
    emb = np.asarray(emb)
    ia = np.asarray(idx_a, np.int64)
    ib = np.asarray(idx_b, np.int64)
    if ia.shape != ib.shape or ia.ndim != 1:
        raise ValueError(f"Expected 1-D `idx_a` and `idx_b` of the same length, but got {ia.shape} and {ib.shape}")
    out = np.empty(len(ia))
    for s in range(0, len(ia), block):
        out[s:s + block] = similarity(emb[ia[s:s + block]], emb[ib[s:s + block]], metric=metric)
    return out


class KFoldAccuracy(NamedTuple):
    """``mean``/``std`` over folds; element i of ``per_fold``/``thresholds`` is fold i's."""

    mean: float
    std: float
    per_fold: np.ndarray
    thresholds: np.ndarray


def best_threshold(scores: ArrayLike, is_genuine: ArrayLike, *, balanced: bool = False) -> tuple[float, float]:
    """(threshold, accuracy) maximising (balanced) accuracy over the unique scores.

    Example:
        >>> best_threshold([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
        (0.55, 1.0)
    """
    s, g = _check_pair_scores(scores, is_genuine)
    thr, gen, imp = _grouped_counts(s, g)
    n_gen, n_imp = gen.sum(), imp.sum()
    tp = np.r_[0, np.cumsum(gen)]  # accepted genuine at [reject all, thr[0], thr[1], ...]
    fp = np.r_[0, np.cumsum(imp)]
    if balanced:
        acc = (tp / max(n_gen, 1) + (n_imp - fp) / max(n_imp, 1)) / 2
    else:
        acc = (tp + n_imp - fp) / max(len(s), 1)
    i = len(acc) - 1 - int(np.argmax(acc[::-1]))  # the lowest maximising candidate
    if i == 0:
        return float("inf"), float(acc[0])
    # Every t in (next lower score, thr[i-1]] gives the same training accuracy: take the middle,
    # so a held-out score just below the training boundary is not rejected by construction.
    t = (thr[i - 1] + thr[i]) / 2 if i < len(thr) else thr[i - 1]
    if i < len(thr) and t <= thr[i]:  # adjacent floats: no value strictly between them
        t = thr[i - 1]
    return float(t), float(acc[i])


def verification_accuracy(scores: ArrayLike, is_genuine: ArrayLike, *, folds: ArrayLike | None = None,
                          n_folds: int = 10, balanced: bool = False) -> KFoldAccuracy:
    """LFW-style accuracy: on each fold, pick the threshold that maximises accuracy on the
    other folds, then score the held-out fold. Folds are contiguous and unshuffled.

    Args:
        folds: fold id of each pair (the protocol's official folds); default: ``n_folds``
            contiguous blocks of the given order.
        balanced: score with balanced accuracy (mean of TAR and TRR), for lists with few
            genuine pairs.

    Returns:
        :class:`KFoldAccuracy` (mean, std, per-fold accuracies, per-fold thresholds).

    Example:
        >>> r = verification_accuracy([0.9, 0.2, 0.8, 0.3, 0.7, 0.1, 0.6, 0.4], [1, 0] * 4, n_folds=2)
        >>> float(r.mean), float(r.std)
        (1.0, 0.0)
    """
    s, g = _check_pair_scores(scores, is_genuine)
    if folds is None:
        if n_folds < 2 or n_folds > len(s):
            raise ValueError(f"Expected 2 <= n_folds <= number of pairs ({len(s)}), but got {n_folds}")
        fold = (np.arange(len(s)) * n_folds) // len(s)
    else:
        fold = np.asarray(folds)
        if fold.shape != s.shape:
            raise ValueError(f"Expected one fold id per pair, but got {fold.shape} for {s.shape} pairs")
    ids = np.unique(fold)
    if len(ids) < 2:
        raise ValueError(f"Expected at least 2 folds, but got {len(ids)}")
    accs, thrs = np.empty(len(ids)), np.empty(len(ids))
    for i, f in enumerate(ids):
        test = fold == f
        t, _ = best_threshold(s[~test], g[~test], balanced=balanced)
        pred = s[test] >= t
        gt = g[test]
        if balanced:
            tpr = pred[gt].mean() if gt.any() else np.nan
            tnr = (~pred[~gt]).mean() if (~gt).any() else np.nan
            accs[i] = np.nanmean([tpr, tnr])
        else:
            accs[i] = (pred == gt).mean()
        thrs[i] = t
    return KFoldAccuracy(float(accs.mean()), float(accs.std()), accs, thrs)


def _accepted_from_bin(hist: np.ndarray) -> np.ndarray:
    """(n_folds, n_bins + 1): element ``[f, b]`` counts fold f's pairs in bins >= b (b = n_bins: none)."""
    return np.concatenate([np.cumsum(hist[:, ::-1], axis=1)[:, ::-1], np.zeros((len(hist), 1))], axis=1)


def _rate_accuracy(tp, fp, n_gen, n_imp, balanced: bool):
    """(Balanced) accuracy of accepting ``tp`` of ``n_gen`` genuine and ``fp`` of ``n_imp`` impostor pairs."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a fold without genuine pairs: TRR alone
        if balanced:
            return np.nanmean(np.stack(np.broadcast_arrays(tp / n_gen, 1 - fp / n_imp)), axis=0)
        return (tp + n_imp - fp) / (n_gen + n_imp)


def kfold_accuracy_from_histograms(gen_hist: ArrayLike, imp_hist: ArrayLike, *, edges: ArrayLike | None = None,
                                   balanced: bool = True) -> KFoldAccuracy:
    """Held-out k-fold accuracy from per-fold score histograms (all-pairs sets too large to hold).

    The protocol of :func:`verification_accuracy`: for each fold, the threshold that maximises
    (balanced) accuracy on the *other* folds is applied to the held-out fold, never the best
    threshold of the scored pairs themselves. Candidate thresholds are the lower bin edges
    ("accept bins >= b") plus "reject all"; the lowest maximiser wins. The result therefore
    equals :func:`verification_accuracy` over bin-edge thresholds: with fine bins it differs from
    the exact-score protocol only by the pairs sharing a bin with a threshold.

    Args:
        gen_hist, imp_hist: (n_folds, n_bins) genuine / impostor counts, bins in increasing
            score order (``StreamedROC.gen_fold_hist`` / ``imp_fold_hist``).
        edges: (n_bins + 1,) bin edges, to report thresholds as scores (default: bin indices).
        balanced: mean of TAR and TRR (all-pairs sets are mostly impostors).

    Returns:
        :class:`KFoldAccuracy`; element i of ``thresholds`` is fold i's (inf: reject all).

    Example:
        >>> r = kfold_accuracy_from_histograms([[0, 0, 2], [0, 1, 1]], [[2, 0, 0], [1, 1, 0]])
        >>> float(r.mean), float(r.std), r.thresholds.tolist()
        (0.875, 0.125, [1.0, 1.0])
    """
    gh = np.asarray(gen_hist, np.float64)
    ih = np.asarray(imp_hist, np.float64)
    if gh.ndim != 2 or gh.shape != ih.shape:
        raise ValueError(f"Expected two (n_folds, n_bins) histograms of the same shape, but got {gh.shape} and "
                         f"{ih.shape}")
    if len(gh) < 2:
        raise ValueError(f"Expected at least 2 folds, but got {len(gh)}")
    tp_f, fp_f = _accepted_from_bin(gh), _accepted_from_bin(ih)  # (n_folds, n_bins + 1)
    ng_f, ni_f = gh.sum(1), ih.sum(1)
    tp_tr, fp_tr = tp_f.sum(0) - tp_f, fp_f.sum(0) - fp_f       # training counts: all folds but f
    ng_tr, ni_tr = ng_f.sum() - ng_f, ni_f.sum() - ni_f
    train_acc = _rate_accuracy(tp_tr, fp_tr, ng_tr[:, None], ni_tr[:, None], balanced)
    b = np.argmax(np.nan_to_num(train_acc, nan=-1.0), axis=1)  # first = lowest threshold among the maximisers
    f = np.arange(len(gh))
    accs = _rate_accuracy(tp_f[f, b], fp_f[f, b], ng_f, ni_f, balanced)
    thr_of = np.r_[np.asarray(edges, np.float64)[:-1], np.inf] if edges is not None else \
        np.r_[np.arange(gh.shape[1], dtype=np.float64), np.inf]
    return KFoldAccuracy(float(np.mean(accs)), float(np.std(accs)), accs, thr_of[b])
