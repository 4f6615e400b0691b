"""SSIM/PSNR on the non-mask area, Frechet distance, KID, Inception features, `mfrbench quality`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import linalg
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mfrbench.metrics.quality import (fid_from_features, frechet_distance, kid_from_features, psnr_non_mask,
                                      ssim_non_mask)


def _imgs(seed=0, h=48, w=40):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    return a, b


def test_ssim_psnr_full_keep_match_skimage():
    a, b = _imgs()
    keep = np.ones(a.shape[:2])
    assert ssim_non_mask(a, b, keep) == pytest.approx(structural_similarity(a, b, channel_axis=-1, data_range=255))
    assert psnr_non_mask(a, b, keep) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255))


def test_masked_pixels_do_not_count():
    a, b = _imgs(1)
    keep = np.ones(a.shape[:2], bool)
    keep[20:, :] = False  # the "mask" region
    c = b.copy()
    c[20:, :] = 0  # changing only masked pixels ...
    assert psnr_non_mask(a, b, keep) == psnr_non_mask(a, c, keep)  # ... leaves PSNR unchanged
    mse = ((a.astype(float) - b.astype(float)) ** 2)[keep].mean()
    assert psnr_non_mask(a, b, keep) == pytest.approx(10 * math.log10(255 ** 2 / mse))
    assert psnr_non_mask(a, a, keep) == float("inf")
    assert math.isnan(ssim_non_mask(a, b, np.zeros(a.shape[:2])))
    with pytest.raises(ValueError, match="Expected `keep` of shape"):
        ssim_non_mask(a, b, np.ones((3, 3)))


def test_frechet_distance_hand_computation():
    # 1-D: (mu1 - mu2)^2 + s1 + s2 - 2 sqrt(s1 s2)
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 4 + 9 - 2 * 6)
    # Diagonal covariances: sum over dimensions of the 1-D formula.
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    d1, d2 = np.array([1.0, 2.0, 3.0]), np.array([4.0, 2.0, 0.5])
    want = ((mu1 - mu2) ** 2).sum() + (d1 + d2 - 2 * np.sqrt(d1 * d2)).sum()
    assert frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(want)


def test_fid_from_features_matches_direct_formula_and_is_zero_on_self():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    y = rng.normal(loc=0.5, scale=1.3, size=(200, 6))
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    want = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert fid_from_features(x, y) == pytest.approx(want, rel=1e-8)
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-6)


def test_kid_unbiased_near_zero_for_same_distribution():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    z = rng.normal(loc=1.0, size=(400, 8))
    same, _ = kid_from_features(x, y, n_subsets=20, subset_size=200)
    diff, _ = kid_from_features(x, z, n_subsets=20, subset_size=200)
    assert abs(same) < 0.02 < diff


def test_inception_features_shape_and_determinism():
    pytest.importorskip("torch")
    from mfrbench.errors import MfrbenchError
    from mfrbench.metrics.quality import inception_features, load_inception

    try:
        net = load_inception()
    except MfrbenchError as err:
        pytest.skip(str(err))
    imgs = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    f1 = inception_features(net, imgs)
    f2 = inception_features(net, imgs)
    assert f1.shape == (2, 2048) and np.isfinite(f1).all() and np.array_equal(f1, f2)


@pytest.mark.data
def test_quality_cli_on_a_generated_set(kit, tmp_path):
    """mtf on synthetic faces (known landmarks) -> SSIM/PSNR outside the mask maps -> a quality row."""
    if not (kit / "masktheface-templates").is_dir():
        pytest.skip("mask templates not in the data kit")
    from mfrbench.align import AlignConfig, align_dataset
    from mfrbench.datasets import create_dataset
    from mfrbench.generators.base import generate_dataset

    from mfrbench.cli import cli

    ds = create_dataset("synthetic", tmp_path / "syn", identities=3, per_identity=2)
    align_dataset(ds, tmp_path / "aligned", progress=False, cfg=AlignConfig(landmarker="none"))
    generate_dataset("mtf", tmp_path / "masked", manifest=tmp_path / "aligned", seed=0, progress=False)
    r = CliRunner().invoke(cli, ["quality", "--generated", str(tmp_path / "masked"), "--results",
                                 str(tmp_path / "res")])
    assert r.exit_code == 0, r.output
    row = pd.read_csv(tmp_path / "res" / "evals.csv").iloc[0]
    assert row.kind == "quality" and row.generator == "mtf" and row.n_images == 6
    assert 0.5 < row.ssim <= 1 and row.psnr > 20 and pd.isna(row.fid)
    assert "no --real set: FID/KID not computed" in row.notes
    bad = CliRunner().invoke(cli, ["quality", "--generated", str(tmp_path / "aligned")])
    assert bad.exit_code != 0 and "is a 'aligned' manifest" in bad.output
