"""All-pairs sets: held-out accuracy from per-fold histograms, per-fold counts, images kept out of impostors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mfrbench.metrics import (
    FARResolutionWarning,
    kfold_accuracy_from_histograms,
    operating_points,
    streamed_roc,
    verification_accuracy,
)


def _brute_force_bin_kfold(gen, imp, balanced=True):
    """k-fold over bin-edge thresholds by direct enumeration (lowest threshold among the best)."""
    F, n = gen.shape
    accs = []

    def acc(g, i, b):
        tp, fp, G, N = g[b:].sum(), i[b:].sum(), g.sum(), i.sum()
        if balanced:
            return np.nanmean([tp / G if G else np.nan, 1 - fp / N if N else np.nan])
        return (tp + N - fp) / (G + N)

    for f in range(F):
        g_tr, i_tr = gen.sum(0) - gen[f], imp.sum(0) - imp[f]
        train = [acc(g_tr, i_tr, b) for b in range(n + 1)]
        accs.append(acc(gen[f], imp[f], int(np.argmax(train))))
    return np.mean(accs), np.std(accs)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("balanced", [True, False])
def test_kfold_from_histograms_matches_brute_force(seed, balanced):
    rng = np.random.default_rng(seed)
    gen = rng.poisson(np.linspace(0.2, 3, 30), size=(5, 30))
    imp = rng.poisson(np.linspace(6, 0.1, 30), size=(5, 30))
    r = kfold_accuracy_from_histograms(gen, imp, balanced=balanced)
    m, sd = _brute_force_bin_kfold(gen, imp, balanced)
    assert r.mean == pytest.approx(m) and r.std == pytest.approx(sd) and len(r.per_fold) == 5


def test_kfold_from_histograms_messages():
    with pytest.raises(ValueError, match="Expected at least 2 folds, but got 1"):
        kfold_accuracy_from_histograms([[1, 2]], [[2, 1]])
    with pytest.raises(ValueError, match="same shape"):
        kfold_accuracy_from_histograms([[1, 2], [1, 1]], [[2, 1]])


def _people(seed, n_ids=24, per_a=3, per_b=3, noise=1.6, dim=16):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_ids, dim))
    la, lb = np.repeat(np.arange(n_ids), per_a), np.repeat(np.arange(n_ids), per_b)
    A = centers[la] + rng.normal(scale=noise, size=(len(la), dim))
    B = centers[lb] + rng.normal(scale=noise, size=(len(lb), dim))
    folds = rng.permutation(n_ids)[la] % 6  # folds by probe identity
    return A, B, la, lb, folds


@pytest.mark.parametrize("same", [False, True])
def test_streamed_heldout_accuracy_equals_kfold_within_bins_and_is_below_best_on_test(same):
    """On a small noisy set the best threshold of the scored pairs is optimistic; the held-out
    accuracy is lower and equals the exact-score k-fold (folds by probe identity) within bin
    resolution. 4139fb7's all-pairs streamed path reported ``best_accuracy`` (the optimistic one)."""
    A, B, la, lb, folds = _people(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FARResolutionWarning)
        st = streamed_roc(A, None if same else B, la, None if same else lb, far=[1e-2], n_bins=1 << 16,
                          keep_scores=True, folds_a=folds)
    held = kfold_accuracy_from_histograms(st.gen_fold_hist, st.imp_fold_hist, edges=st.edges)
    s, g, rows = st.info["scores"], st.info["is_genuine"], st.info["rows"]
    exact = verification_accuracy(s, g, folds=folds[rows], balanced=True)
    best, _ = st.best_accuracy(balanced=True)
    assert abs(held.mean - exact.mean) < 2e-3 and abs(held.std - exact.std) < 2e-3
    assert held.mean < best - 0.01
    np.testing.assert_array_equal(st.gen_fold_hist.sum(0), st.gen_hist)
    # Per-fold counts are the pairs whose row (probe) is in that fold.
    for f in range(6):
        assert st.gen_fold_hist[f].sum() == (g & (folds[rows] == f)).sum()
        assert st.imp_fold_hist[f].sum() == (~g & (folds[rows] == f)).sum()


@pytest.mark.parametrize("same", [False, True])
@pytest.mark.parametrize("sample_rows", [256, 0])
def test_no_impostor_flags_drop_exactly_those_impostor_pairs(same, sample_rows):
    """Flagged images leave the impostor side only; TAR@FAR stays exact on what is left (band and pass 2)."""
    A, B, la, lb, folds = _people(5, per_a=4, per_b=4)
    fa = np.zeros(len(A), bool)
    fa[[2, 17, 40]] = True
    fb = np.zeros(len(B), bool)
    fb[[0, 33]] = True
    fb_used = fa if same else fb
    fars = [1e-3, 1e-2, 1e-1]
    kw = dict(far=fars, n_bins=1024, block=16, folds_a=folds, no_impostor_a=fa, no_impostor_b=None if same else fb)
    args = (A, None if same else B, la, None if same else lb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FARResolutionWarning)
        ref = streamed_roc(*args, keep_scores=True, **kw)
        full = streamed_roc(*args, keep_scores=True, far=fars, n_bins=1024)
        st = streamed_roc(*args, sample_rows=sample_rows, **kw)
        s, g, r, c = (full.info[k] for k in ("scores", "is_genuine", "rows", "cols"))
        keep = g | ~(fa[r] | fb_used[c])
        exact = operating_points(s[keep], g[keep], far=fars)
    np.testing.assert_array_equal(ref.info["scores"], s[keep])
    assert ref.n_genuine == full.n_genuine and ref.n_impostor == int((~g & keep).sum()) < full.n_impostor
    assert st.n_impostor == ref.n_impostor and st.imp_fold_hist.sum() == ref.n_impostor
    np.testing.assert_array_equal(st.points.tar, exact.tar)
    np.testing.assert_array_equal(st.points.far_achieved, exact.far_achieved)
