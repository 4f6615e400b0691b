"""SSIM/PSNR on the non-mask area, Frechet distance, KID, Inception features (mfrbench.metrics.quality)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy import linalg
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mfrbench.metrics.quality import (
    fid_from_features,
    frechet_distance,
    kid_from_features,
    non_mask_ssim_psnr,
    psnr_non_mask,
    ssim_non_mask,
)


def _imgs(seed=0, h=48, w=40):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    return a, b


def face_like(seed=0, size=112):
    """A smooth RGB image with some texture: SSIM windows see structure, as on a face crop."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = np.stack([128 + 60 * np.sin(xx / 9) + 40 * np.cos(yy / 13), 100 + 50 * np.cos(xx / 7 + yy / 11),
                    90 + 30 * np.sin(yy / 5)], -1)
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def _sk_ssim(a, b):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1,
                                 data_range=255)


@pytest.mark.parametrize("seed,h,w", [(0, 48, 40), (1, 112, 112), (2, 11, 11), (3, 13, 30)])
def test_ssim_full_keep_matches_skimage_gaussian(seed, h, w):
    """With every pixel kept, SSIM is scikit-image's Wang et al. (2004) Gaussian SSIM (sigma 1.5, 11x11)."""
    a, b = _imgs(seed, h, w)
    assert ssim_non_mask(a, b, np.ones((h, w))) == pytest.approx(_sk_ssim(a, b), rel=1e-12, abs=1e-12)


def test_psnr_full_keep_matches_skimage():
    a, b = _imgs()
    assert psnr_non_mask(a, b, np.ones(a.shape[:2])) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255))


@pytest.mark.parametrize("top", [100, 80, 60, 40])
def test_identical_non_mask_pixels_give_ssim_one_for_every_mask_size(top):
    """Windows that straddle the mask see the input's pixels there, so identical non-mask pixels give 1.0.

    The old code averaged skimage's SSIM map over the non-mask pixels without pasting: windows near
    the mask boundary saw the mask, and the same image scored 0.979 / 0.966 / 0.950 / 0.914 for
    mask tops at rows 100 / 80 / 60 / 40 (7-41 % of the image), never 1.0.
    """
    img = face_like()
    keep = np.ones(img.shape[:2], bool)
    keep[top:, 20:92] = False
    out = img.copy()
    out[~keep] = (200, 220, 240)  # a flat light-blue mask
    assert ssim_non_mask(img, out, keep) == 1.0
    assert psnr_non_mask(img, out, keep) == float("inf")


def test_ssim_ignores_what_happens_inside_the_mask_but_sees_changes_next_to_it():
    img = face_like(1)
    keep = np.ones(img.shape[:2], bool)
    keep[60:, 20:92] = False
    a, b = img.copy(), img.copy()
    a[~keep] = 0
    b[~keep] = np.random.default_rng(0).integers(0, 256, (int((~keep).sum()), 3))
    assert ssim_non_mask(img, a, keep) == ssim_non_mask(img, b, keep) == 1.0
    c = a.copy()
    c[55:60, 20:92] = 255  # a bright seam just outside the mask: non-mask damage
    assert ssim_non_mask(img, c, keep) < 0.99


def test_masked_pixels_do_not_count_in_psnr():
    a, b = _imgs(1)
    keep = np.ones(a.shape[:2], bool)
    keep[20:, :] = False  # the "mask" region
    c = b.copy()
    c[20:, :] = 0  # changing only masked pixels ...
    assert psnr_non_mask(a, b, keep) == psnr_non_mask(a, c, keep)  # ... leaves PSNR unchanged
    mse = ((a.astype(float) - b.astype(float)) ** 2)[keep].mean()
    assert psnr_non_mask(a, b, keep) == pytest.approx(10 * math.log10(255 ** 2 / mse))
    assert psnr_non_mask(a, a, keep) == float("inf")
    assert non_mask_ssim_psnr(a, b, keep) == (ssim_non_mask(a, b, keep), psnr_non_mask(a, b, keep))


def test_no_kept_pixel_is_nan_and_bad_keep_shape_is_an_error():
    a, b = _imgs(1)
    assert math.isnan(ssim_non_mask(a, b, np.zeros(a.shape[:2])))
    assert math.isnan(psnr_non_mask(a, b, np.zeros(a.shape[:2])))
    edge_only = np.zeros(a.shape[:2])
    edge_only[:5] = 1  # kept pixels all within 5 px of the edge: their windows leave the image
    assert math.isnan(ssim_non_mask(a, b, edge_only))
    with pytest.raises(ValueError, match=re.escape("Expected `keep` of shape (48, 40), but got (3, 3)")):
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


def test_inception_resize_is_pytorch_fid_bilinear(monkeypatch):
    """The resize before Inception is torch bilinear F.interpolate (pytorch-fid's), as the notes say."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from mfrbench.metrics import quality as Q

    seen = {}

    def net(x):
        seen["x"] = x
        return x.mean(dim=(2, 3))

    imgs = np.random.default_rng(0).integers(0, 256, (2, 64, 48, 3), dtype=np.uint8)
    Q.inception_features(net, imgs)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0
    want = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    torch.testing.assert_close(seen["x"], want)
    assert "bilinear" in Q.FID_RESIZE and "pytorch-fid" in Q.FID_RESIZE and "StyleGAN" not in Q.__doc__


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
