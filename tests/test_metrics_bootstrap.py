"""Identity (cluster) bootstrap: the weighting rule, hand cases, and coverage under identity effects."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from scipy.stats import norm

from mfrbench.metrics import FARResolutionWarning, bootstrap_rank_ci, bootstrap_tar_ci, operating_points
from mfrbench.metrics.bootstrap import ci_method, draw_identities, rank_replicates, tar_replicates


def _weighted_reference(s, g, a, b, counts, fars):
    """TAR@FAR of each replicate by expanding every pair into its weight's copies."""
    _, inv = np.unique(np.r_[a, b], return_inverse=True)
    ca, cb = inv[: len(a)], inv[len(a):]
    out = []
    for c in counts:
        w = np.where(ca == cb, c[ca], c[ca] * c[cb])
        ss, gg = np.repeat(s, w), np.repeat(g, w)
        out.append(operating_points(ss, gg, far=fars).tar if gg.any() and not gg.all() else np.full(len(fars), np.nan))
    return np.array(out)


@pytest.mark.parametrize("seed", range(6))
def test_tar_replicates_equal_operating_points_on_weighted_pairs(seed):
    """A replicate is the exact TAR@FAR rule on pairs weighted c_i (genuine) / c_i * c_j (impostor), ties included."""
    rng = np.random.default_rng(seed)
    n_ids, n = int(rng.integers(3, 12)), int(rng.integers(50, 400))
    a = rng.integers(0, n_ids, n)
    b = np.where(rng.random(n) < 0.3, a, rng.integers(0, n_ids, n))
    s = np.round(rng.normal((a == b) * 1.0, 1.0), int(rng.integers(1, 4)))  # coarse rounding: many ties
    fars = [0.01, 0.1, 0.3]
    counts = draw_identities(len(np.unique(np.r_[a, b])), n_boot=25, seed=seed)
    counts[0] = 1  # the identity draw: the plain estimate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FARResolutionWarning)
        got = tar_replicates(s, a == b, a, b, far=fars, counts=counts)
        ref = _weighted_reference(s, a == b, a, b, counts, fars)
        np.testing.assert_allclose(got[0], operating_points(s, a == b, far=fars).tar)
    np.testing.assert_allclose(got, ref)


def test_impostor_weight_is_product_of_draw_counts():
    # Genuine pair of "a" at 0.75; impostors a-b at 0.8 and b-c at 0.7; target FAR <= 0.5.
    s, g = [0.75, 0.8, 0.7], [1, 0, 0]
    a, b = ["a", "a", "b"], ["a", "b", "c"]
    # Each drawn once: both impostors weigh 1, the 0.8 one may be accepted -> threshold above 0.7, TAR 1.
    assert tar_replicates(s, g, a, b, far=[0.5], counts=np.array([[1, 1, 1]])).tolist() == [[1.0]]
    # a twice, b once, c never: a-b weighs 2 * 1 = 2 of N = 2, b-c weighs 0 -> 0.8 cannot be accepted, TAR 0.
    assert tar_replicates(s, g, a, b, far=[0.5], counts=np.array([[2, 1, 0]])).tolist() == [[0.0]]
    # "a" never drawn: no genuine pair -> an undefined replicate (left out of the interval).
    assert np.isnan(tar_replicates(s, g, a, b, far=[0.5], counts=np.array([[0, 2, 1]]))).all()


def test_draws_and_messages():
    c = draw_identities(7, n_boot=30, seed=1)
    assert c.shape == (30, 7) and (c.sum(1) == 7).all() and (c >= 0).all()
    np.testing.assert_array_equal(c, draw_identities(7, n_boot=30, seed=1))
    with pytest.raises(ValueError, match=re.escape("Expected one identity per pair side, but got (2,) and (2,) for "
                                                   "(3,) pairs")):
        bootstrap_tar_ci([0.1, 0.2, 0.3], [0, 1, 0], ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="Expected both sides of every genuine pair to have the same identity"):
        bootstrap_tar_ci([0.1, 0.2, 0.3], [0, 1, 0], ["a", "b", "a"], ["b", "c", "b"])
    with pytest.raises(ValueError, match=re.escape("Expected one identity per probe, but got (1,) for (2,) ranks")):
        rank_replicates([1, 2], ["a"], 1, counts=np.ones((1, 1), np.int64))
    assert ci_method(200) == "identity bootstrap (cluster), 200 resamples of identities, percentile 95 %"


def _allpairs_benchmark(rng, n_ids=30, per=4, su=1.0, sv=0.3, mu=2.0):
    """All probe x gallery pairs of ``n_ids`` people with ``per`` images on each side.

    Identity effects: person i's genuine scores are N(mu + u_i, 1), u_i ~ N(0, su); an impostor
    pair (i, j) scores N(v_i + v_j, 1), v ~ N(0, sv). So the truth is known in closed form:
    impostors ~ N(0, sqrt(2 sv^2 + 1)), genuine ~ N(mu, sqrt(1 + su^2)).
    """
    u, v = rng.normal(0, su, n_ids), rng.normal(0, sv, n_ids)
    pid = np.repeat(np.arange(n_ids), per)
    a, b = np.repeat(pid, len(pid)), np.tile(pid, len(pid))
    g = a == b
    return np.where(g, mu + u[a], v[a] + v[b]) + rng.normal(size=len(a)), g, a, b


def test_identity_bootstrap_tar_ci_covers_the_truth():
    """Nominal 95 % CI of TAR@FAR=1e-2 covers the true TAR in >= 90 % of 200 simulated benchmarks.

    30 people x 4 probes against 30 x 4 gallery images (480 genuine, 13,920 impostor pairs), identity
    effects on genuine and impostor scores. Measured: 191/200 (95.5 %). The old pair bootstrap
    (4139fb7 ``roc.bootstrap_tar_ci``: genuine and impostor pairs resampled independently) covered
    101/200 (50.5 %) of the same benchmarks.
    """
    far, su, sv, mu = 0.01, 1.0, 0.3, 2.0
    truth = norm.sf((np.sqrt(2 * sv ** 2 + 1) * norm.ppf(1 - far) - mu) / np.sqrt(1 + su ** 2))
    hits = 0
    for d in range(200):
        s, g, a, b = _allpairs_benchmark(np.random.default_rng(d), su=su, sv=sv, mu=mu)
        lo, hi = bootstrap_tar_ci(s, g, a, b, far=[far], n_boot=200, seed=d)
        hits += bool(lo[0] <= truth <= hi[0])
    assert hits >= 180, f"identity bootstrap covered the true TAR in {hits}/200 benchmarks"


def test_identity_bootstrap_rank_ci_covers_the_truth():
    """Nominal 95 % CI of Rank-1 covers the true rate in >= 90 % of 200 simulated benchmarks.

    60 people, 5 probes each; person i's probes hit with probability p_i ~ Beta(0.5, 0.5) (true
    Rank-1 = 0.5). Measured: 190/200. The old probe bootstrap (4139fb7 ``bootstrap_rank_ci``:
    Binomial(n_probes, mean)) covered 134/200; resampling probes, not people, covers 136/200 here.
    """
    hits = probe_hits = 0
    for d in range(200):
        rng = np.random.default_rng(5000 + d)
        ids = np.repeat(np.arange(60), 5)
        ranks = np.where(rng.random(300) < rng.beta(0.5, 0.5, 60)[ids], 1, 3)
        lo, hi = bootstrap_rank_ci(ranks, ids, 1, n_boot=200, seed=d)
        hits += lo <= 0.5 <= hi
        lo, hi = bootstrap_rank_ci(ranks, np.arange(300), 1, n_boot=200, seed=d)  # one "identity" per probe
        probe_hits += lo <= 0.5 <= hi
    assert hits >= 180, f"identity bootstrap covered the true Rank-1 in {hits}/200 benchmarks"
    assert probe_hits <= 160, f"probe bootstrap covered {probe_hits}/200: the simulation lacks identity effects"


def test_cluster_mean_ci_is_the_rank_ci_of_the_same_draws_and_needs_clusters():
    """A share's face-bootstrap CI (the GAN read-outs') equals Rank-1's identity-bootstrap CI on the same
    correct/incorrect outcomes and clusters (same seed: the same draws); resampling clusters, not outputs,
    widens the CI when a cluster's outputs agree."""
    from mfrbench.metrics.bootstrap import bootstrap_mean_ci

    rng = np.random.default_rng(3)
    faces = np.repeat(np.arange(16), 4)                       # 16 faces x 4 references
    correct = (rng.random(16) < 0.7)[faces] ^ (rng.random(64) < 0.1)
    ranks = np.where(correct, 1, 2)
    assert bootstrap_mean_ci(correct, faces, seed=5) == bootstrap_rank_ci(ranks, faces, 1, seed=5)
    lo, hi = bootstrap_mean_ci(correct, faces)
    lo_o, hi_o = bootstrap_mean_ci(correct, np.arange(64))    # as if the 64 outputs were independent
    assert lo <= correct.mean() <= hi and (hi - lo) > (hi_o - lo_o)
    assert bootstrap_mean_ci([0.25] * 8, np.arange(8)) == (0.25, 0.25)
