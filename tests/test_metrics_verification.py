"""Metrics against scikit-learn references and hand-computed cases."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, top_k_accuracy_score
from sklearn.metrics import roc_curve as sk_roc_curve

from mfrbench.metrics import (
    FARResolutionWarning,
    UndefinedMetricWarning,
    bootstrap_rank_ci,
    bootstrap_tar_ci,
    cmc_curve,
    eer,
    identification_ranks,
    operating_points,
    pair_scores,
    rank_k_accuracy,
    roc_auc,
    roc_curve,
    similarity,
    streamed_roc,
    tar_at_far,
    verification_accuracy,
)
from mfrbench.metrics.identification import ranks_from_identity_scores
from mfrbench.metrics.verification import best_threshold


def _reference_tar_at_far(scores, is_genuine, far):
    fpr, tpr, _ = sk_roc_curve(is_genuine, scores, drop_intermediate=False)
    return np.array([tpr[fpr <= f].max() for f in far])


def _toy(seed, n=2000, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    s = rng.normal(loc=y * 1.5, scale=1.0)
    if ties:
        s = np.round(s, 1)
    return s, y


# ----------------------------------------------------------------------------- ROC
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_roc_curve_matches_sklearn(seed, ties):
    s, y = _toy(seed, ties=ties)
    fpr, tpr, thr = roc_curve(s, y)
    sfpr, stpr, sthr = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sfpr)
    np.testing.assert_allclose(tpr, stpr)
    np.testing.assert_allclose(thr[1:], sthr[1:])
    assert np.isinf(thr[0])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_sklearn(seed, ties):
    s, y = _toy(seed, ties=ties)
    assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("far", [[1e-3], [1e-2, 1e-1], [0.3, 0.5]])
@pytest.mark.parametrize("ties", [False, True])
def test_tar_at_far_matches_sklearn(seed, far, ties):
    """TAR@FAR agrees with a direct reading of sklearn's ROC curve."""
    s, y = _toy(seed, ties=ties)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FARResolutionWarning)
        np.testing.assert_allclose(tar_at_far(s, y, far=far), _reference_tar_at_far(s, y, far))


def test_tar_at_far_hand_case_rule_is_smallest_threshold_with_far_below_target():
    # impostors 0.8, 0.6, 0.4, 0.2 (N=4); genuines 0.9, 0.7, 0.5, 0.3
    s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    y = [1, 0, 1, 0, 1, 0, 1, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FARResolutionWarning)
        pts = operating_points(s, y, far=[0.25, 0.3, 0.49, 0.5])
    # FAR<=0.25 allows one impostor (0.8) -> smallest threshold 0.7 -> TAR 2/4.
    # FAR 0.3 and 0.49 allow one as well (never rounds up to 0.5 = 2/4): no interpolation.
    np.testing.assert_allclose(pts.tar, [0.5, 0.5, 0.5, 0.75])
    np.testing.assert_allclose(pts.threshold, [0.7, 0.7, 0.7, 0.5])
    np.testing.assert_allclose(pts.far_achieved, [0.25, 0.25, 0.25, 0.5])
    assert pts.n_impostor_accepted.tolist() == [1, 1, 1, 2]


def test_tar_at_far_ties_accepted_for_both_classes():
    # A genuine and an impostor tie at 0.5: accepting the genuine also accepts the impostor.
    s = [0.9, 0.5, 0.5, 0.1]
    y = [1, 1, 0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FARResolutionWarning)
        pts = operating_points(s, y, far=[0.4, 0.5])
    np.testing.assert_allclose(pts.tar, [0.5, 1.0])  # FAR 0.4 cannot take the tie; 0.5 can
    np.testing.assert_allclose(pts.far_achieved, [0.0, 0.5])


def test_tar_at_far_undefined_warns_and_returns_nan():
    with pytest.warns(UndefinedMetricWarning, match="TAR@FAR is undefined without both genuine and impostor pairs"):
        out = tar_at_far([0.1, 0.2, 0.3], [1, 1, 1], far=[1e-3])
    assert np.isnan(out).all()


def test_low_impostor_count_warns():
    s, y = _toy(0, n=400)
    msg = "TAR@FAR=0.001 rests on 0 impostor pair(s)"
    with pytest.warns(FARResolutionWarning, match=re.escape(msg)) as rec:
        tar_at_far(s, y, far=[1e-3])
    assert "above the target, so the operating point is FAR=0" in str(rec[0].message)


def test_tar_at_far_rejects_non_binary_labels():
    msg = "Expected `is_genuine` to contain only {0, 1}, but got values [0, 1, 2]"
    with pytest.raises(ValueError, match=re.escape(msg)):
        tar_at_far([0.1, 0.2, 0.3], [0, 1, 2], far=0.1)


@pytest.mark.parametrize("far", [0.0, 1.0, -1e-3, float("nan")])
def test_tar_at_far_rejects_bad_far(far):
    with pytest.raises(ValueError, match="Expected every `far` in the open interval"):
        tar_at_far([0.1, 0.2], [0, 1], far=far)


def test_check_pair_scores_messages():
    with pytest.raises(ValueError, match=re.escape("same length, but got 3 and 2")):
        roc_curve([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="finite"):
        roc_curve([0.1, np.nan], [0, 1])


def test_eer_hand_case():
    # Perfect separation -> 0; complete overlap in the middle -> 0.5.
    assert eer([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 0.0
    assert eer([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0]) == 0.5


def _toy_identities(y, n_ids=60, seed=0):
    """Identities for the pairs of :func:`_toy`: genuine pairs (i, i), impostor pairs (i, j != i)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n_ids, len(y))
    b = np.where(y == 1, a, (a + rng.integers(1, n_ids, len(y))) % n_ids)
    return a, b


def test_bootstrap_ci_brackets_point_and_is_seeded():
    """Same seed, same interval; another seed, another one (the old test compared `(lo, hi)` with itself)."""
    s, y = _toy(1, n=3000)
    a, b = _toy_identities(y)
    point = tar_at_far(s, y, far=[1e-2])
    lo, hi = bootstrap_tar_ci(s, y, a, b, far=[1e-2], n_boot=300, seed=3)
    lo2, hi2 = bootstrap_tar_ci(s, y, a, b, far=[1e-2], n_boot=300, seed=3)
    lo3, hi3 = bootstrap_tar_ci(s, y, a, b, far=[1e-2], n_boot=300, seed=4)
    assert lo[0] <= point[0] <= hi[0] and hi[0] - lo[0] > 0
    np.testing.assert_array_equal(np.r_[lo2, hi2], np.r_[lo, hi])
    assert (lo3[0], hi3[0]) != (lo[0], hi[0])


# ----------------------------------------------------------------------------- streamed
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("same", [False, True])
def test_streamed_roc_is_exact(metric, same):
    """The two-pass streamed TAR@FAR equals the exact one on the very same scores."""
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 40, size=300)
    centers = rng.normal(size=(40, 16))
    A = centers[ids] + rng.normal(scale=1.2, size=(300, 16))
    lb = rng.integers(0, 40, size=250)
    B = centers[lb] + rng.normal(scale=1.2, size=(250, 16))
    fars = [1e-3, 1e-2, 1e-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FARResolutionWarning)
        st = streamed_roc(A, None if same else B, ids, None if same else lb, metric=metric, far=fars,
                          n_bins=256, block=64, keep_scores=True)
        exact = operating_points(st.info["scores"], st.info["is_genuine"], far=fars)
    n_pairs = 300 * 299 // 2 if same else 300 * 250
    assert st.n_genuine + st.n_impostor == n_pairs == len(st.info["scores"])
    np.testing.assert_array_equal(st.points.tar, exact.tar)
    np.testing.assert_array_equal(st.points.far_achieved, exact.far_achieved)
    assert (st.points.far_achieved <= np.array(fars)).all()
    auc, bound = st.auc()
    assert abs(auc - roc_auc(st.info["scores"], st.info["is_genuine"])) <= bound + 1e-12
    # Without the refinement pass the result is a lower bound.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FARResolutionWarning)
        approx = streamed_roc(A, None if same else B, ids, None if same else lb, metric=metric, far=fars,
                              n_bins=256, block=64, exact=False)
    assert (approx.points.tar <= exact.tar + 1e-12).all()


def test_streamed_roc_matches_pairwise_scores_for_cosine():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(20, 8)), rng.normal(size=(30, 8))
    st = streamed_roc(A, B, np.arange(20) % 5, np.arange(30) % 5, far=[0.1], n_bins=64, keep_scores=True)
    ia, ib = np.meshgrid(np.arange(20), np.arange(30), indexing="ij")
    ref = similarity(A[ia.ravel()], B[ib.ravel()])
    np.testing.assert_allclose(st.info["scores"], ref, atol=1e-5)


def test_streamed_roc_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match=re.escape("same size, but got shapes (3, 4) and (2, 5)")):
        streamed_roc(np.zeros((3, 4)), np.zeros((2, 5)), [0, 1, 2], [0, 1])


def test_streamed_roc_no_impostors_is_nan():
    with pytest.warns(UndefinedMetricWarning):
        st = streamed_roc(np.eye(3), np.eye(3), [0, 0, 0], [0, 0, 0], far=[0.1])
    assert np.isnan(st.points.tar).all()


# ----------------------------------------------------------------------------- verification
def _brute_force_kfold(s, y, folds):
    accs = []
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        cands = np.r_[np.unique(s[tr]), np.inf]
        tr_acc = [((s[tr] >= t) == y[tr]).mean() for t in cands]
        best = cands[int(np.argmax(tr_acc))]  # ascending -> the lowest maximiser
        lower = s[tr][s[tr] < best]
        t = (best + lower.max()) / 2 if len(lower) and np.isfinite(best) else best
        accs.append(((s[te] >= t) == y[te]).mean())
    return np.mean(accs), np.std(accs)


@pytest.mark.parametrize("seed", range(3))
def test_kfold_accuracy_matches_brute_force(seed):
    s, y = _toy(seed, n=600, ties=seed == 2)
    folds = np.repeat(np.arange(10), 60)
    r = verification_accuracy(s, y, folds=folds)
    m, sd = _brute_force_kfold(s, y.astype(bool), folds)
    assert r.mean == pytest.approx(m) and r.std == pytest.approx(sd)
    assert len(r.per_fold) == 10


def test_kfold_accuracy_scale_invariant():
    s, y = _toy(5, n=500)
    a = verification_accuracy(s, y)
    b = verification_accuracy(s * 1000 - 7, y)
    assert a.mean == b.mean and a.std == b.std


def test_best_threshold_balanced():
    # 1 genuine, 9 impostors: plain accuracy rejects everything, balanced accuracy does not.
    s = np.r_[0.5, np.linspace(0, 0.6, 9)]
    y = np.r_[1, np.zeros(9)]
    t_plain, acc_plain = best_threshold(s, y)
    t_bal, acc_bal = best_threshold(s, y, balanced=True)
    assert acc_plain == pytest.approx(0.9) and t_plain > 0.5
    assert t_bal <= 0.5 and acc_bal > 0.5


def test_pair_scores_blocks_match_direct():
    rng = np.random.default_rng(1)
    E = rng.normal(size=(50, 12))
    ia, ib = rng.integers(0, 50, 333), rng.integers(0, 50, 333)
    for metric in ("cosine", "dot", "euclidean"):
        np.testing.assert_allclose(pair_scores(E, ia, ib, metric=metric, block=17),
                                   similarity(E[ia], E[ib], metric=metric))
    assert similarity([[3.0, 4.0]], [[0.0, 0.0]], metric="euclidean")[0] == -5.0


# ----------------------------------------------------------------------------- identification
@pytest.mark.parametrize("k", [1, 2, 5])
def test_rank_k_matches_sklearn(k):
    rng = np.random.default_rng(k)
    S = rng.normal(size=(200, 12))
    y = rng.integers(0, 12, 200)
    ranks = ranks_from_identity_scores(S, y)
    assert rank_k_accuracy(ranks, k) == pytest.approx(top_k_accuracy_score(y, S, k=k, labels=np.arange(12)))


def test_rank_ties_count_against_probe():
    assert ranks_from_identity_scores([[0.5, 0.5, 0.1]], [0]).tolist() == [2]


@pytest.mark.parametrize("rule", ["max", "mean"])
def test_identification_ranks_against_dense_reference(rule):
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(15, 10))
    gid = np.repeat(np.arange(15), 3)
    G = centers[gid] + rng.normal(scale=0.8, size=(45, 10))
    pid = rng.integers(0, 12, 80)  # identities 12..14 are distractors
    P = centers[pid] + rng.normal(scale=0.8, size=(80, 10))
    r = identification_ranks(P, pid, G, gid, rule=rule, block=7)
    Gn = G / np.linalg.norm(G, axis=1, keepdims=True)
    Pn = P / np.linalg.norm(P, axis=1, keepdims=True)
    if rule == "max":
        ident = (Pn @ Gn.T).reshape(80, 15, 3).max(2)
    else:
        T = Gn.reshape(15, 3, 10).mean(1)
        ident = Pn @ (T / np.linalg.norm(T, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(r.ranks, ranks_from_identity_scores(ident, pid))
    assert r.n_distractors == 3 and r.n_gallery_identities == 15 and r.n_gallery_images == 45
    cmc = cmc_curve(r.ranks, max_rank=15)
    assert cmc[-1] == 1.0 and np.all(np.diff(cmc) >= 0)
    assert cmc[4] == rank_k_accuracy(r.ranks, 5)


def test_identification_open_set_is_an_error():
    with pytest.raises(ValueError, match=re.escape("closed set), but 1 are absent: ['z']")):
        identification_ranks(np.ones((1, 2)), ["z"], np.ones((1, 2)), ["a"])


def test_cmc_hand_case_and_rank_ci():
    assert cmc_curve([1, 3, 2, 7], max_rank=3).tolist() == [0.25, 0.5, 0.75]
    ranks = np.r_[np.ones(50), np.full(50, 9)]
    lo, hi = bootstrap_rank_ci(ranks, np.arange(100) % 20, k=5, n_boot=500)
    assert lo < 0.5 < hi


@pytest.mark.parametrize("same", [False, True])
def test_streamed_roc_band_and_second_pass_are_exact(same):
    """Single pass with the sampled band, and the pass-2 fallback, both give the exact answer."""
    rng = np.random.default_rng(11)
    ids = rng.integers(0, 30, size=400)
    A = rng.normal(size=(30, 16))[ids] + rng.normal(scale=1.0, size=(400, 16))
    fars = [1e-3, 1e-2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FARResolutionWarning)
        ref = streamed_roc(A, None if same else A[::-1], ids, None if same else ids[::-1], far=fars, n_bins=512,
                           block=50, keep_scores=True)
        exact = operating_points(ref.info["scores"], ref.info["is_genuine"], far=fars)
        passes = set()
        for rows, seed in [(400, 0), (1, 0), (0, 0)]:
            st = streamed_roc(A, None if same else A[::-1], ids, None if same else ids[::-1], far=fars,
                              n_bins=512, block=50, sample_rows=rows, seed=seed)
            passes.add(st.info["passes"])
            np.testing.assert_array_equal(st.points.tar, exact.tar)
            np.testing.assert_array_equal(st.points.far_achieved, exact.far_achieved)
    assert passes == {1, 2}
