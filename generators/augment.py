"""MaskAugment: on-the-fly MaskTheFace-style masking of aligned crops, for any PyTorch pipeline.

Method: the ``mtf`` overlay (:mod:`mfrbench.generators.mtf`; Anwar & Raychowdhury 2020,
https://arxiv.org/abs/2008.11104), applied as a data-loader transform instead of a dataset pass.
It uses the generator's own code: style draws (families, colours, textures), placement (the
wearing modes and their ``mask_outside`` rule), styling and compositing (light matching, alpha
blend, the exact mask map). What is new here is only *where the landmarks come from* and *what
is precomputed*:

* an aligned crop is in the ArcFace template frame, so its landmarks are known without a
  detector or landmarker: :data:`CROP_LMK68`, the mean 68-point shape of that frame (its five
  ArcFace points lie within 3 px of the template), scaled to the crop size. ``variants``
  geometries per family (the mean shape under small fixed similarity + face-length changes,
  ``jitter``) stand in for the spread of real faces;
* the template is warped onto each (family, geometry, wearing mode) once per process, and then
  every crop costs only a colour/texture blend and an alpha blend over the mask's box: no
  homography and no warp per image;
* a wearing mode is drawn only among the modes whose mask fits the crop (the generator's
  ``mask_outside`` rule): on a 112x112 ArcFace crop the chin is at y = 120, so ``chin`` never
  fits and ``mouth-nose-out`` fits most families (not ``gas``).

Randomness is a pure function of ``(seed, epoch, index)`` (:meth:`MaskAugment.rng`), so a
resumed epoch gives the same images whatever the worker count; called torchvision-style
(``aug(img)``), it draws from a per-process generator seeded from torch's per-worker seed.

    >>> aug = MaskAugment(p=1.0, mask_type="plain")
    >>> crop = np.full((112, 112, 3), 128, np.uint8)
    >>> out = aug(crop, seed=0, epoch=0, index=7)
    >>> out.shape, bool((out != crop).any()), bool((out == aug(crop, 0, 0, 7)).all())
    ((112, 112, 3), True, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from mfrbench.config import config_hash
from mfrbench.errors import MfrbenchError, SkipImage
from mfrbench.generate import GeneratorIdentity
from mfrbench.generators.mask_templates import KIT_TYPES, MIX_TYPE_WEIGHTS, WEARING_MODES, FaceFrame
from mfrbench.generators.mtf import TYPE_CHOICES, MTFConfig, MTFGenerator, Placement, draw_wearing

#: The mean 68 iBUG landmarks (x, y) of 957 aligned 112x112 crops (the kit's CelebA photos, ``mfrbench
#: align``, PFLD), rounded to 0.1 px: the landmarks of an ArcFace-aligned crop when none are measured.
CROP_LMK68 = np.array([
    16.9, 54.1, 17.1, 64.9, 18.3, 75.9, 20.7, 86.6, 24.9, 96.6, 31.2, 105.3, 39.0, 112.6, 47.8, 118.4,
    57.9, 120.0, 67.8, 117.8, 76.4, 111.8, 84.0, 104.4, 90.2, 95.6, 94.3, 85.6, 96.5, 74.8, 97.5, 64.0,
    97.6, 53.4, 24.5, 46.1, 29.7, 42.3, 36.5, 41.4, 43.4, 42.5, 49.6, 45.1, 63.8, 44.5, 70.2, 41.8,
    77.0, 40.5, 83.8, 41.4, 88.9, 45.0, 56.8, 53.2, 56.8, 60.2, 56.9, 67.0, 56.9, 74.0, 48.5, 79.2,
    52.6, 80.8, 57.1, 81.9, 61.6, 80.6, 65.6, 79.0, 32.0, 54.2, 36.8, 51.7, 42.0, 51.7, 46.5, 55.2,
    41.8, 56.3, 36.5, 56.2, 67.2, 54.8, 71.9, 51.1, 77.1, 51.0, 81.6, 53.5, 77.4, 55.6, 72.3, 55.8,
    41.4, 91.5, 47.2, 89.2, 53.3, 87.9, 57.2, 88.9, 61.5, 87.8, 67.7, 88.9, 73.6, 90.9, 68.2, 97.1,
    62.3, 100.4, 57.4, 101.1, 52.8, 100.6, 46.8, 97.5, 43.4, 91.8, 53.2, 91.5, 57.2, 92.0, 61.7, 91.4,
    71.6, 91.3, 61.9, 94.9, 57.3, 95.5, 53.1, 95.0,
], np.float64).reshape(68, 2)
CROP_SIZE = 112
#: Mixed into every per-image seed so the mask draws are independent of the trainer's flip/jitter
#: draws, which use ``default_rng([seed, epoch, index])``.
_SALT = 0x6D61736B
_GEOMETRY_SEED = 0x67656F


@dataclass
class _Layer:
    """One (family, geometry, wearing) mask warped onto the crop, ready to style and blend."""

    placement: Placement
    box: tuple[int, int, int, int]
    pm: np.ndarray       # (h, w, 3) uint8 premultiplied colour over the box
    alpha: np.ndarray    # (h, w) uint8
    shade: np.ndarray    # (h, w) uint8, the template's shading (luminance / 90th percentile, x200)


class MaskAugment:
    """Masks aligned face crops with MaskTheFace templates, with probability ``p``.

    Args:
        p: probability that a crop is masked.
        mask_type, color, color_weight, texture, texture_weight, match_light: as ``mtf``
            (``mfrbench generate --method mtf``; ``mix`` draws families, colours and textures).
        wearing: ``random`` (the ``mtf`` weights), one mode, or modes joined by ``|`` (equal
            weights); each crop draws among those that fit its geometry.
        variants: face geometries per family (0: the mean shape; the others fixed perturbations).
        jitter: size of those perturbations (relative scale, face length, rotation in radians,
            shift in half crop widths).
        seed: seed of the torchvision-style call ``aug(img)`` (default: torch's per-worker seed).
        templates_dir: the MaskTheFace kit (default ``<data root>/masktheface-templates``).
    """

    def __init__(self, p: float = 0.5, *, mask_type: str = "mix", color: str | None = None,
                 color_weight: float = 0.75, texture: str | None = None, texture_weight: float = 0.8,
                 wearing: str = "random", match_light: bool = True, variants: int = 8, jitter: float = 0.04,
                 seed: int | None = None, templates_dir: str | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise MfrbenchError(f"Expected MaskAugment p in [0, 1], but got {p}")
        if variants < 1 or not 0.0 <= jitter <= 0.2:
            raise MfrbenchError(f"Expected variants >= 1 and jitter in [0, 0.2], but got {variants} and {jitter}")
        self.p, self.variants, self.jitter, self.seed = float(p), int(variants), float(jitter), seed
        self.wearing = wearing
        self.weights = _wearing_weights(wearing)
        self._mtf_cfg = MTFConfig(mask_type=mask_type, color=color, color_weight=color_weight, texture=texture,
                                  texture_weight=texture_weight, wearing="correct", match_light=match_light,
                                  templates_dir=templates_dir)
        self._reset()
        fitting = [m for m in self.weights if any(self._variants_fitting(f, m, CROP_SIZE) for f in self.families())]
        if not fitting:
            raise MfrbenchError(f"wearing {wearing!r} does not fit an aligned {CROP_SIZE}x{CROP_SIZE} crop for "
                                f"mask type {mask_type!r} (the mask would lie below the crop); fitting modes: "
                                f"{', '.join(self.fitting_modes()) or 'none'}")

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self.gen = MTFGenerator(self._mtf_cfg)
        self._layers: dict[tuple[str, int, str, int], _Layer | None] = {}
        self._fit: dict[tuple[str, str, int], list[int]] = {}
        self._frames: dict[tuple[int, int], tuple[np.ndarray, FaceFrame]] = {}
        self._own_rng: tuple[Any, np.random.Generator] | None = None

    def __getstate__(self) -> dict:
        """Pickled for data-loader workers without the kit and caches (rebuilt in the worker)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("gen", "_layers", "_fit", "_frames", "_own_rng")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def config(self) -> dict:
        """Everything that changes the output (the spec's keys)."""
        c = self._mtf_cfg
        return {"p": self.p, "mask_type": c.mask_type, "color": c.color, "color_weight": c.color_weight,
                "texture": c.texture, "texture_weight": c.texture_weight, "wearing": self.wearing,
                "match_light": c.match_light, "variants": self.variants, "jitter": self.jitter}

    def identity(self) -> GeneratorIdentity:
        """The generator record of what this transform adds to a training set: ``mtf`` (its exact
        masks), hashed over :meth:`config`; join it with the data's
        (:meth:`~mfrbench.generate.GeneratorIdentity.join`) so a model trained with ``--mask-aug``
        is traced to mtf in the results."""
        return GeneratorIdentity(family="mtf", variant="mtf", maps="exact",
                                 config_hash=config_hash({"name": "mtf-augment", **self.config()}))

    def __repr__(self) -> str:
        return f"MaskAugment({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"

    def families(self) -> tuple[str, ...]:
        """The mask families this configuration can draw."""
        t = self._mtf_cfg.mask_type
        if t == "mix":
            fams = tuple(MIX_TYPE_WEIGHTS)
        elif t == "random":
            fams = KIT_TYPES
        else:
            fams = (t,)
        return fams

    def fitting_modes(self, size: int = CROP_SIZE) -> list[str]:
        """Wearing modes (of all four) whose mask fits a ``size`` crop for some family and geometry."""
        return [m for m in WEARING_MODES if any(self._variants_fitting(f, m, size) for f in self.families())]

    def _variants_fitting(self, family: str, wearing: str, size: int) -> list[int]:
        """The geometries in which ``family`` worn as ``wearing`` fits a ``size`` crop."""
        key = (family, wearing, size)
        if key not in self._fit:
            self._fit[key] = [v for v in range(self.variants) if self._layer(family, v, wearing, size) is not None]
        return self._fit[key]

    # ------------------------------------------------------------------ geometry (once per process)
    def landmarks(self, variant: int, size: int = CROP_SIZE) -> np.ndarray:
        """(68, 2) landmarks of geometry ``variant`` on a ``size`` x ``size`` crop."""
        return self._frame(variant, size)[0]

    def _frame(self, variant: int, size: int) -> tuple[np.ndarray, FaceFrame]:
        key = (variant, size)
        if key not in self._frames:
            pts = CROP_LMK68 * (size / CROP_SIZE)
            if variant > 0 and self.jitter > 0:
                r = np.random.default_rng([_GEOMETRY_SEED, variant])
                j = self.jitter
                scale, length, angle = 1 + r.uniform(-j, j), 1 + r.uniform(-j, j), r.uniform(-j, j)
                shift = r.uniform(-j, j, 2) * size / 2
                c = np.array([size / 2, size / 2])
                rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
                pts = scale * ((pts - c) * [1.0, length]) @ rot.T + c + shift
            self._frames[key] = (pts, FaceFrame.from_landmarks(pts))
        return self._frames[key]

    def _layer(self, family: str, variant: int, wearing: str, size: int) -> _Layer | None:
        """The warped mask of (family, geometry, wearing) on a ``size`` crop; None when it does not fit."""
        import cv2

        key = (family, variant, wearing, size)
        if key not in self._layers:
            pts, frame = self._frame(variant, size)
            pl = self.gen.place(frame, pts, family, "front", wearing, (size, size))
            layer = None
            if pl.fits:
                x0, y0, x1, y1 = pl.box
                T = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ pl.H
                lvl = pl.lvl
                # shading travels premultiplied too (warped with the alpha, divided after), so the
                # mask's edge keeps the template's shading instead of a dark fringe
                shade_pm = (lvl.shade.astype(np.uint16) * lvl.rgba[..., 3].astype(np.uint16) // 255).astype(np.uint8)
                src = np.concatenate([lvl.pm, shade_pm[..., None]], axis=2)
                warped = cv2.warpPerspective(np.ascontiguousarray(src), T, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                a = warped[..., 3]
                shade = np.where(a > 0, warped[..., 4].astype(np.float32) * 255.0 / np.maximum(a, 1), 0.0)
                if (a >= self._mtf_cfg.alpha_threshold * 255).any():
                    layer = _Layer(pl, pl.box, np.ascontiguousarray(warped[..., :3]), np.ascontiguousarray(a),
                                   np.clip(shade + 0.5, 0, 255).astype(np.uint8))
            self._layers[key] = layer
        return self._layers[key]

    # ------------------------------------------------------------------ one crop
    @staticmethod
    def rng(seed: int, epoch: int, index: int) -> np.random.Generator:
        """The generator of one crop: a pure function of ``(seed, epoch, index)``."""
        return np.random.default_rng([int(seed), int(epoch), int(index), _SALT])

    def mask(self, img: np.ndarray, rng: np.random.Generator, *, info: bool = False
             ) -> tuple[np.ndarray, np.ndarray, dict]:
        """Mask one crop with probability ``p``.

        Args:
            img: (S, S, 3) uint8 RGB aligned crop (ArcFace template frame scaled to S).
            rng: its generator (:meth:`rng`).
            info: also return the ``mtf`` manifest columns (template, covered parts, ...).

        Returns:
            (image, mask map (S, S) uint8 with 1 = mask, info); an unmasked crop is returned as
            it came, with an all-zero map and ``{"masked": False}``.
        """
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] != img.shape[1]:
            raise ValueError(f"Expected a square uint8 (S, S, 3) RGB crop, but got {img.dtype} {img.shape}")
        size = img.shape[0]
        none = (img, np.zeros(img.shape[:2], np.uint8), {"masked": False})
        if self.p <= 0.0 or (self.p < 1.0 and rng.random() >= self.p):
            return none
        style = self.gen.draw_style(rng)
        u_wearing, u_variant = rng.random(2)
        modes = [m for m in self.weights if self._variants_fitting(style.mask_type, m, size)]
        if not modes:  # this family cannot be worn so on this crop: it stays unmasked
            return img, none[1], {"masked": False, "skip": "mask_outside"}
        # the mode among those that fit some geometry, then a geometry in which it fits
        style.wearing = draw_wearing(float(u_wearing), lambda m: m in modes, self.weights)
        fits = self._variants_fitting(style.mask_type, style.wearing, size)
        variant = fits[min(int(u_variant * len(fits)), len(fits) - 1)]
        layer = self._layer(style.mask_type, variant, style.wearing, size)
        x0, y0, x1, y1 = layer.box
        alpha = layer.alpha.astype(np.float32) * (1.0 / 255.0)
        pm = layer.pm.astype(np.float32) * (1.0 / 255.0)
        if style.color or style.texture:
            pm = self.gen.style_premultiplied(pm, alpha, layer.shade.astype(np.float32) * (1.0 / 200.0), style,
                                              texture_size=(size, size), texture_box=(x0, y0))
        try:
            out, mask_map, gains = self.gen.composite(img, layer.box, pm, alpha)
        except SkipImage as skip:
            return img, none[1], {"masked": False, "skip": skip.reason}
        meta = {"masked": True, "mask_type": style.mask_type, "wearing": style.wearing, "variant": variant}
        if info:
            pts, frame = self._frame(variant, size)
            from mfrbench.generators.mask_templates import face_yaw_t

            meta.update(self.gen.info(layer.placement, style, pts, int(mask_map.sum()), gains, face_yaw_t(frame)))
        return out, mask_map, meta

    def __call__(self, img: Any, seed: int | None = None, epoch: int | None = None, index: int | None = None) -> Any:
        """The masked crop (same type as ``img``: numpy (S, S, 3) uint8 RGB, a PIL image, or a
        torch uint8 (3, S, S) tensor).

        With ``seed`` (and ``epoch``, ``index``) the result is a pure function of them: the
        trainer's per-sample hook. Without, it draws from this process's own generator.
        """
        rng = self.rng(seed, epoch or 0, index or 0) if seed is not None else self._process_rng()
        kind, arr = _to_numpy(img)
        out = self.mask(arr, rng)[0]
        return img if out is arr else _from_numpy(kind, out)

    def _process_rng(self) -> np.random.Generator:
        """torchvision-style: one generator per process, seeded from ``seed`` and the data-loader
        worker id, or from torch's per-worker seed (set by DataLoader from ``torch.manual_seed``)."""
        import torch

        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), info.id if info is not None else -1)
        if self._own_rng is None or self._own_rng[0] != key:
            base = [self.seed, key[1] + 1] if self.seed is not None else [torch.initial_seed()]
            self._own_rng = (key, np.random.default_rng(base))
        return self._own_rng[1]


# ---------------------------------------------------------------------------- spec strings
def _wearing_weights(wearing: str) -> dict[str, float]:
    if wearing == "random":
        from mfrbench.generators.mask_templates import WEARING_RANDOM_WEIGHTS

        return dict(WEARING_RANDOM_WEIGHTS)
    modes = [m.strip() for m in wearing.split("|") if m.strip()]
    bad = [m for m in modes if m not in WEARING_MODES]
    if not modes or bad:
        raise MfrbenchError(f"Expected wearing 'random', one of {', '.join(WEARING_MODES)} or several joined by '|', "
                            f"but got {wearing!r}")
    return {m: 1.0 for m in dict.fromkeys(modes)}


_SPEC_TYPES = {"p": float, "mask_type": str, "color": str, "color_weight": float, "texture": str,
               "texture_weight": float, "wearing": str, "match_light": bool, "variants": int, "jitter": float,
               "templates_dir": str}


def _typed(key: str, text: str) -> Any:
    kind = _SPEC_TYPES[key]
    if kind is bool:
        if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise MfrbenchError(f"--mask-aug {key}: expected true or false, but got {text!r}")
        return text.lower() in ("1", "true", "yes", "on")
    if kind is str:
        return None if text.lower() in ("", "none") else text
    try:
        return kind(text)
    except ValueError:
        raise MfrbenchError(f"--mask-aug {key}: expected {'an integer' if kind is int else 'a number'}, "
                            f"but got {text!r}") from None


def parse_spec(spec: str) -> dict[str, Any]:
    """``"mtf:p=0.5,mask_type=mix,wearing=correct|nose-out"`` -> MaskAugment keyword arguments.

    The method is ``mtf`` (the only one); keys are :class:`MaskAugment`'s arguments (``-`` and
    ``_`` interchangeable); a key given twice is an error.

        >>> parse_spec("mtf:p=0.3,mask-type=surgical,wearing=correct|nose-out")
        {'p': 0.3, 'mask_type': 'surgical', 'wearing': 'correct|nose-out'}
    """
    method, _, rest = spec.strip().partition(":")
    if method.strip() != "mtf":
        raise MfrbenchError(f"--mask-aug: expected 'mtf[:KEY=VALUE,...]' (mtf is the on-the-fly method), "
                            f"but got {spec!r}")
    out: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, sep, val = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in _SPEC_TYPES:
            raise MfrbenchError(f"--mask-aug: expected KEY=VALUE with KEY in {', '.join(_SPEC_TYPES)}, "
                                f"but got {item!r}")
        if key in out:
            raise MfrbenchError(f"--mask-aug: {key} given twice in {spec!r}")
        out[key] = _typed(key, val.strip())
    if "mask_type" in out and out["mask_type"] not in TYPE_CHOICES:
        raise MfrbenchError(f"--mask-aug mask_type: expected one of {', '.join(TYPE_CHOICES)}, "
                            f"but got {out['mask_type']!r}")
    return out


def parse_mask_aug(spec: str) -> MaskAugment:
    """The :class:`MaskAugment` of a ``train-fr --mask-aug`` spec string (:func:`parse_spec`)."""
    return MaskAugment(**parse_spec(spec))



# ---------------------------------------------------------------------------- image types
def _to_numpy(img: Any) -> tuple[str, np.ndarray]:
    if isinstance(img, np.ndarray):
        return "numpy", img
    mod = type(img).__module__
    if mod.startswith("PIL."):
        return "pil", np.asarray(img.convert("RGB"))
    if mod.startswith("torch"):
        if img.dtype.is_floating_point or img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"Expected a torch uint8 (3, S, S) tensor, but got {img.dtype} {tuple(img.shape)}")
        return "torch", img.permute(1, 2, 0).cpu().numpy()
    raise ValueError(f"Expected a numpy array, PIL image or torch tensor, but got {type(img).__name__}")


def _from_numpy(kind: str, arr: np.ndarray) -> Any:
    if kind == "pil":
        from PIL import Image

        return Image.fromarray(arr)
    if kind == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    return arr
