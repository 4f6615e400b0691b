"""MaskTheFace-style landmark overlay (``mtf``): a mask template warped onto the face.

Method: Anwar & Raychowdhury, "Masked Face Recognition for Secure Authentication", 2020,
https://arxiv.org/abs/2008.11104 (tool: github.com/aqeelanwar/MaskTheFace, MIT). Only the
template kit is reused (see :mod:`mfrbench.generators.mask_templates`); the placement is ours:

1. six anchors from the 68 landmarks (nose bridge, jaw at nose-tip and lower-lip height, under
   the chin), moved by the wearing mode (``correct``, ``nose-out``, ``mouth-nose-out``, ``chin``);
   ``--wearing random`` draws only among the modes whose mask fits the image (not ``mask_outside``:
   on a 112x112 ArcFace crop the chin is at y = 120, so ``chin`` hangs below the crop);
2. the front/left/right template chosen from the nose position between the jaw outlines (yaw
   bin: nose in the left/right 35 % -> the turned view);
3. a least-squares homography from the template's six anchors to the face's, the template
   warped **only over the mask's bounding box** from a pre-downscaled template level;
4. optional colour (hex + weight) or texture, applied to the template's shading so pleats and
   folds survive; no colour is applied unless asked for;
5. brightness and saturation matched to the skin the mask covers, in HSV: ``V`` scaled by the
   skin's brightness, ``S`` by the skin's **saturation** (so a grayscale photo gets a gray mask);
6. alpha compositing. The mask map is ``warped alpha >= 0.5``: the pixels the mask visibly
   owns, so it lines up with the drawn mask exactly: every map pixel is drawn, and the only
   drawn pixels off the map are the anti-aliased edge (alpha < 0.5), cut at ``RIM`` = 2 px.

Differences from the original tool on purpose: no default tint (MaskTheFace blends a colour
into every mask), saturation from the S channel (it used V), ``.jpeg`` and any other format
``load_rgb`` reads are fine, and a face that cannot be masked becomes a ``skipped`` row with a
reason instead of silently disappearing. Templates are decoded once per process.

:meth:`MTFGenerator.mask_face` runs in steps that :mod:`mfrbench.generators.augment` (MaskAugment,
on-the-fly masking of aligned crops) reuses: :meth:`~MTFGenerator.draw_style`,
:meth:`~MTFGenerator.place`, :meth:`~MTFGenerator.style_premultiplied`,
:meth:`~MTFGenerator.composite` and :meth:`~MTFGenerator.info`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np

from mfrbench.config import config_hash
from mfrbench.errors import MfrbenchError, SkipImage
from mfrbench.generate import GeneratorIdentity
from mfrbench.generators.base import GeneratedBatch, MaskGenerator, register_generator
from mfrbench.generators.mask_templates import (
    KIT_TYPES,
    MASK_TYPES,
    MIX_P_COLOUR,
    MIX_P_TEXTURE,
    MIX_PALETTE,
    MIX_RECOLOURABLE,
    MIX_TYPE_WEIGHTS,
    MIX_WEIGHT_RANGE,
    WEARING_MODES,
    WEARING_RANDOM_WEIGHTS,
    FaceFrame,
    Template,
    TemplateLevel,
    face_yaw_t,
    hex_to_rgb,
    homography_lsq,
    load_kit,
    part_points,
    plain_template,
    six_anchors,
    template_name,
    yaw_bin,
    yaw_degrees,
)

TYPE_CHOICES = MASK_TYPES + ("random", "mix")
RIM = 2  # px: drawn pixels off the mask map lie at most this far from it
#: Parts an incorrect fit must leave visible, and how the mask is lowered until it does.
_EXPOSED = {"nose-out": ("nose",), "mouth-nose-out": ("nose", "mouth"), "chin": ("nose", "mouth")}
_LOWER_STEP = 0.03   # face units (bridge-chin distance) per step
_MAX_LOWERINGS = 8
_RIM_KERNEL = np.ones((2 * RIM + 1, 2 * RIM + 1), np.uint8)
WEARING_CHOICES = tuple(WEARING_MODES) + ("random",)


@dataclass(frozen=True)
class MTFConfig:
    mask_type: str = "surgical"      # a family, 'random' (uniform family) or 'mix' (families + colours + textures)
    color: str | None = None         # '#rrggbb': blend this colour into the mask's shading
    color_weight: float = 0.75       # 0 = template colours, 1 = fully recoloured
    texture: str | None = None       # texture name (file stem under masks/textures/), or 'random'
    texture_weight: float = 0.8
    wearing: str = "correct"         # correct | nose-out | mouth-nose-out | chin | random
    match_light: bool = True         # scale mask brightness/saturation to the covered skin
    light_ref_v: float = 0.65        # skin V (0-1) at which the mask keeps its own brightness
    light_ref_s: float = 0.35        # skin S (0-1) at which the mask keeps its own saturation
    light_strength: float = 0.8      # 0 = no brightness matching, 1 = full ratio
    alpha_threshold: float = 0.5     # mask map = warped alpha >= this
    min_visible: float = 0.2         # skip (mask_outside) when less of the mask than this is in the frame
    templates_dir: str | None = None  # default: <data root>/masktheface-templates

    def __post_init__(self) -> None:
        if self.mask_type not in TYPE_CHOICES:
            raise MfrbenchError(f"Expected --mask-type in {', '.join(TYPE_CHOICES)}, but got {self.mask_type!r}")
        if self.wearing not in WEARING_CHOICES:
            raise MfrbenchError(f"Expected --wearing in {', '.join(WEARING_CHOICES)}, but got {self.wearing!r}")
        if self.color is not None:
            hex_to_rgb(self.color)
        for k in ("color_weight", "texture_weight", "light_strength"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise MfrbenchError(f"Expected {k} in [0, 1], but got {getattr(self, k)}")


@dataclass
class Style:
    mask_type: str
    color: str | None
    color_weight: float
    texture: str | None
    texture_weight: float
    wearing: str


def draw_wearing(u: float, fits: Callable[[str], bool] | None = None,
                 weights: dict[str, float] | None = None) -> str:
    """``--wearing random``: the mode at uniform draw ``u`` under ``weights`` (default
    :data:`WEARING_RANDOM_WEIGHTS`), renormalised over the modes for which ``fits(mode)`` holds
    (all when ``fits`` is None).

    What ``rng.choice(modes, p=weights)`` draws from the same uniform; the first mode when none
    fits (the face is then skipped as ``mask_outside`` as before).
    """
    weights = WEARING_RANDOM_WEIGHTS if weights is None else weights
    modes = [m for m in weights if fits is None or fits(m)]
    if not modes:
        return next(iter(weights))
    cdf = np.cumsum([weights[m] for m in modes])
    return modes[min(int(np.searchsorted(cdf / cdf[-1], u, side="right")), len(modes) - 1)]


@dataclass
class Placement:
    """A template placed on one face (no pixels drawn yet): :meth:`MTFGenerator.place`."""

    tpl: Template
    lvl: TemplateLevel               # the template level the warp reads
    H: np.ndarray                    # (3, 3) homography, level pixels -> image pixels
    anchors: np.ndarray              # (6, 2) a..f on the face, image pixels
    wearing: str
    box: tuple[int, int, int, int] | None  # (x0, y0, x1, y1) clipped to the image; None: outside it
    visible: float                   # share of the mask inside the image
    min_visible: float

    @property
    def fits(self) -> bool:
        """The mask is drawn, not skipped as ``mask_outside``."""
        return self.box is not None and self.visible >= self.min_visible

    def check(self) -> None:
        """Raise the ``mask_outside`` skip of a placement that does not fit."""
        if self.box is None:
            raise SkipImage("mask_outside", "the placed mask falls outside the image")
        if self.visible < self.min_visible:  # a sliver at the frame edge is not a masked face
            raise SkipImage("mask_outside", f"only {self.visible:.0%} of the placed mask is inside the image "
                                            f"(wearing {self.wearing})")


class MTFGenerator(MaskGenerator):
    """Landmark-driven template overlay; works on any frame (photos or aligned crops)."""

    name = "mtf"
    input_frame = "any"
    needs_landmarks = True
    per_image_rng = True

    def __init__(self, cfg: MTFConfig | None = None) -> None:
        self.cfg = cfg or MTFConfig()
        needs_kit = self.cfg.mask_type != "plain" or self.cfg.texture is not None
        self._kit = load_kit(self.cfg.templates_dir) if needs_kit else None
        if self._kit is not None and self.cfg.texture not in (None, "random") \
                and self.cfg.texture not in self._kit.textures:
            raise MfrbenchError(f"Unknown texture {self.cfg.texture!r}. Available: random, "
                                f"{', '.join(self._kit.texture_names())}")

    def config(self) -> dict:
        return {"name": self.name, **asdict(self.cfg)}

    def identity(self) -> GeneratorIdentity:
        """mtf has no presets or runs; its mask maps are the drawn masks themselves (``exact``)."""
        return GeneratorIdentity(family="mtf", variant="mtf", config_hash=config_hash(self.config()), maps="exact")

    # ------------------------------------------------------------------ style
    def draw_style(self, rng: np.random.Generator, fits: Callable[[str, str], bool] | None = None) -> Style:
        """The style of one image: fixed options, or drawn from ``rng`` for random/mix.

        ``fits(mask_type, wearing)`` (optional) says whether a wearing mode places this family's mask
        inside the image; ``--wearing random`` then draws only among the modes that fit (their
        weights renormalised; the same single uniform draw, so with every mode fitting the
        choice is what it was without ``fits``).
        """
        c = self.cfg
        color, cw, texture, tw = c.color, c.color_weight, c.texture, c.texture_weight
        if c.mask_type == "random":
            mtype = KIT_TYPES[int(rng.integers(len(KIT_TYPES)))]
        elif c.mask_type == "mix":
            names, probs = zip(*MIX_TYPE_WEIGHTS.items())
            mtype = names[int(rng.choice(len(names), p=np.array(probs) / sum(probs)))]
            if color is None and texture is None and mtype in MIX_RECOLOURABLE:
                r = rng.random()
                if r < MIX_P_COLOUR:
                    hexes, hp = zip(*MIX_PALETTE)
                    color = hexes[int(rng.choice(len(hexes), p=np.array(hp) / sum(hp)))]
                    cw = float(np.round(rng.uniform(*MIX_WEIGHT_RANGE), 3))
                elif r < MIX_P_COLOUR + MIX_P_TEXTURE and self._kit is not None and self._kit.textures:
                    texture = "random"
        else:
            mtype = c.mask_type
        if texture == "random":
            assert self._kit is not None
            names = self._kit.texture_names()
            texture = names[int(rng.integers(len(names)))]
        if c.wearing == "random":
            wearing = draw_wearing(float(rng.random()), None if fits is None else (lambda m: fits(mtype, m)))
        else:
            wearing = c.wearing
        return Style(mtype, color, cw if color else 0.0, texture, tw if texture else 0.0, wearing)

    def _template(self, mtype: str, side: str) -> Template:
        if mtype == "plain":
            return plain_template()
        assert self._kit is not None
        name = template_name(mtype, side)
        if name not in self._kit.entries:  # a family without side views: use its front view
            name = mtype
        return self._kit.template(name)

    # ------------------------------------------------------------------ one face
    def mask_face(self, image: np.ndarray, lmk68: np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, dict]:
        """Mask one face. Returns (masked image, mask map (H, W) uint8, info columns)."""
        import cv2

        try:
            frame = FaceFrame.from_landmarks(lmk68)
        except ValueError as err:
            raise SkipImage("bad_landmarks", str(err)) from err
        h, w = image.shape[:2]
        t_face = face_yaw_t(frame)
        side = yaw_bin(t_face)  # the template view matches the recorded yaw bin
        placed: dict[tuple[str, str], Placement] = {}

        def place(mtype: str, wearing: str) -> Placement:
            if (mtype, wearing) not in placed:
                placed[mtype, wearing] = self.place(frame, lmk68, mtype, side, wearing, (w, h))
            return placed[mtype, wearing]

        style = self.draw_style(rng, fits=lambda mtype, wearing: place(mtype, wearing).fits)
        pl = place(style.mask_type, style.wearing)
        pl.check()
        x0, y0, x1, y1 = pl.box
        # Warp only the mask's bounding box, premultiplied uint8 (no colour fringes at the edge).
        T = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ pl.H
        warped = cv2.warpPerspective(self._styled(pl.lvl, style), T, (x1 - x0, y1 - y0),
                                     flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        alpha = warped[..., 3].astype(np.float32) * (1.0 / 255.0)
        pm = warped[..., :3].astype(np.float32) * (1.0 / 255.0)            # premultiplied colour
        out, mask_map, gains = self.composite(image, pl.box, pm, alpha)
        return out, mask_map, self.info(pl, style, lmk68, int(mask_map.sum()), gains, t_face)

    def place(self, frame: FaceFrame, lmk68: np.ndarray, mask_type: str, side: str, wearing: str,
              size: tuple[int, int]) -> Placement:
        """Where the ``mask_type`` template (view ``side``) lands for ``wearing`` in a ``size = (w, h)`` image.

        No pixels are drawn: the homography, the clipped bounding box and the share of the mask
        inside the frame (:attr:`Placement.fits` is the generator's own ``mask_outside`` rule).
        """
        import cv2

        tpl = self._template(mask_type, side)
        mode = WEARING_MODES[wearing]
        # An incorrect fit must leave its parts visible whatever the template's outline (a turned
        # KN95's top edge rises past anchor b): lower the mask step by step until it does.
        for _ in range(_MAX_LOWERINGS):
            dst, lvl, Hm = self._place(frame, mode, tpl)
            if self._exposes(wearing, lmk68, lvl.rgba, np.linalg.inv(Hm)):
                break
            mode = replace(mode, top_off=mode.top_off + _LOWER_STEP, bottom_off=mode.bottom_off + _LOWER_STEP / 2)
        w, h = size
        th, tw = lvl.rgba.shape[:2]
        corners = cv2.perspectiveTransform(np.array([[[0, 0], [tw, 0], [tw, th], [0, th]]], np.float64), Hm)[0]
        x0, y0 = np.floor(corners.min(0)).astype(int)
        x1, y1 = np.ceil(corners.max(0)).astype(int)
        x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), w), min(int(y1), h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return Placement(tpl, lvl, Hm, dst, wearing, None, 0.0, self.cfg.min_visible)
        visible = self._visible_fraction(lvl, Hm, corners, w, h)
        return Placement(tpl, lvl, Hm, dst, wearing, (x0, y0, x1, y1), visible, self.cfg.min_visible)

    def composite(self, image: np.ndarray, box: tuple[int, int, int, int], pm: np.ndarray, alpha: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """Draw a warped mask onto ``image`` and return (masked image, mask map, light gains).

        Args:
            image: (H, W, 3) uint8 RGB (not modified).
            box: ``(x0, y0, x1, y1)`` of the warped mask in ``image``.
            pm: (y1 - y0, x1 - x0, 3) float32 premultiplied colour in [0, 1] (modified in place).
            alpha: (y1 - y0, x1 - x0) float32 in [0, 1] (modified in place).
        """
        import cv2

        x0, y0, x1, y1 = box
        inside = alpha >= self.cfg.alpha_threshold
        if not inside.any():
            raise SkipImage("mask_outside", "the placed mask falls outside the image")
        # Keep the anti-aliased edge only within RIM px of the map: faint sub-pixel fragments
        # (a strap thinner than a pixel) would be drawn but not be on the map.
        near = cv2.dilate(inside.astype(np.uint8), _RIM_KERNEL).astype(bool)
        alpha[~near] = 0.0
        pm[~near] = 0.0
        roi = image[y0:y1, x0:x1]
        gains = (1.0, 1.0)
        if self.cfg.match_light:
            pm, gains = self._match_light(pm, alpha, roi, inside)
        out = image.copy()
        blended = roi.astype(np.float32) * (1.0 - alpha)[..., None] + pm * 255.0
        out[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        mask_map = np.zeros(image.shape[:2], np.uint8)
        mask_map[y0:y1, x0:x1] = inside
        return out, mask_map, gains

    def info(self, pl: Placement, style: Style, lmk68: np.ndarray, area: int, gains: tuple[float, float],
             t_face: float) -> dict:
        """The manifest columns of one masked face."""
        covered = self._covered_parts(lmk68, pl.lvl.rgba, np.linalg.inv(pl.H))
        return {
            "mask_type": style.mask_type, "template": pl.tpl.name, "color": style.color or "",
            "color_weight": style.color_weight, "texture": style.texture or "",
            "texture_weight": style.texture_weight, "wearing": style.wearing,
            "anchors": np.round(pl.anchors, 2).ravel().tolist(), "yaw_bin": yaw_bin(t_face),
            "yaw_deg": round(yaw_degrees(t_face), 1), "v_gain": round(gains[0], 3), "s_gain": round(gains[1], 3),
            "mask_area": area, "mask_visible": round(pl.visible, 3),
            **{f"covers_{p}": bool(v) for p, v in covered.items()},
            "covered_parts": [p for p, v in covered.items() if v],
        }

    def _styled(self, lvl: TemplateLevel, style: Style) -> np.ndarray:
        """The level's premultiplied RGBA uint8, styled in template space (see :func:`style_premultiplied`)."""
        if not style.color and not style.texture:
            return lvl.pm
        a = lvl.rgba[..., 3].astype(np.float32) * (1.0 / 255.0)
        pm = lvl.rgba[..., :3].astype(np.float32) * (a[..., None] * (1.0 / 255.0))
        shade = lvl.shade.astype(np.float32) * (1.0 / 200.0)
        pm = self.style_premultiplied(pm, a, shade, style)
        return np.concatenate([np.clip(pm * 255.0 + 0.5, 0, 255), lvl.rgba[..., 3:4]], axis=2).astype(np.uint8)

    def style_premultiplied(self, pm: np.ndarray, alpha: np.ndarray, shade: np.ndarray, style: Style,
                            texture_size: tuple[int, int] | None = None, texture_box: tuple[int, int] = (0, 0)
                            ) -> np.ndarray:
        """Blend the style's texture and colour into a mask's shading, so pleats and folds survive.

        Works in any frame (template pixels for :meth:`mask_face`, crop pixels for MaskAugment):
        ``pm`` (h, w, 3) premultiplied colour and ``alpha``, ``shade`` (h, w) (luminance over its
        90th percentile on the mask), all float32. The texture is tiled over ``texture_size =
        (W, H)`` (default: ``pm``'s size), one tile per half its width, and ``pm`` is its window at
        ``texture_box = (x0, y0)``. Returns the styled premultiplied colour.
        """
        if not style.color and not style.texture:
            return pm
        h, w = pm.shape[:2]
        a = alpha[..., None]
        sh = shade[..., None]
        if style.texture:
            assert self._kit is not None
            tw, th = texture_size or (w, h)
            tx, ty = texture_box
            tex = self._kit.texture(style.texture, tw, th)[ty:ty + h, tx:tx + w]
            pm = (1 - style.texture_weight) * pm + style.texture_weight * np.minimum(tex * sh, 1.0) * a
        if style.color:
            col = hex_to_rgb(style.color)
            pm = (1 - style.color_weight) * pm + style.color_weight * np.minimum(col * sh, 1.0) * a
        return pm.astype(np.float32, copy=False)

    def _match_light(self, pm: np.ndarray, alpha: np.ndarray, roi: np.ndarray, inside: np.ndarray
                     ) -> tuple[np.ndarray, tuple[float, float]]:
        """Scale the mask's V by the covered skin's brightness and its S by the skin's saturation.

        Works on premultiplied colour: S is unchanged by premultiplying and V scales with
        alpha, so the gains apply directly and V is capped at alpha.
        """
        import cv2

        skin = cv2.cvtColor(roi, cv2.COLOR_RGB2HSV_FULL)[inside]  # S, V in 0..255
        v_skin = float(skin[:, 2].mean()) / 255.0
        s_skin = float(skin[:, 1].mean()) / 255.0
        c = self.cfg
        g_v = 1.0 + c.light_strength * (float(np.clip(v_skin / c.light_ref_v, 0.35, 1.15)) - 1.0)
        g_s = float(np.clip(s_skin / c.light_ref_s, 0.0, 1.0))
        hsv = cv2.cvtColor(pm, cv2.COLOR_RGB2HSV)  # float: H 0..360, S, V 0..1
        hsv[..., 1] *= g_s
        hsv[..., 2] = np.minimum(hsv[..., 2] * g_v, alpha)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), (g_v, g_s)

    def _place(self, frame: FaceFrame, mode, tpl: Template) -> tuple[np.ndarray, TemplateLevel, np.ndarray]:
        """Anchors on the face, the template level to warp from, and the homography."""
        dst = six_anchors(frame, mode)
        # Template level: the smallest 2x-downscale still >= the drawn size, so the warp never
        # shrinks by more than 2x (no aliasing) and styling works on few pixels.
        dst_w = float(np.linalg.norm(dst[2] - dst[0]) + 1e-6)
        src_w = float(np.linalg.norm(tpl.anchors[2] - tpl.anchors[0]) + 1e-6)
        k = max(0, int(math.floor(math.log2(max(src_w / dst_w, 1.0)))))
        lvl = tpl.level(k)
        Hm = homography_lsq(lvl.anchors, dst)
        if Hm is None:
            raise SkipImage("bad_landmarks", "no homography from the template anchors to this face")
        return dst, lvl, Hm

    def _visible_fraction(self, lvl: TemplateLevel, Hm: np.ndarray, corners: np.ndarray, w: int, h: int) -> float:
        """Share of the placed mask that lies inside the image (1.0 when nothing is cut off).

        The whole mask is warped once more at about 64 px (alpha only, cheap) and its pixels
        are counted inside and outside the image frame.
        """
        import cv2

        (bx0, by0), (bx1, by1) = corners.min(0), corners.max(0)
        if bx0 >= 0 and by0 >= 0 and bx1 <= w and by1 <= h:
            return 1.0
        s = 64.0 / max(bx1 - bx0, by1 - by0, 1.0)
        S = np.array([[s, 0, -s * bx0], [0, s, -s * by0], [0, 0, 1]]) @ Hm
        size = (int(np.ceil((bx1 - bx0) * s)) + 1, int(np.ceil((by1 - by0) * s)) + 1)
        a = cv2.warpPerspective(np.ascontiguousarray(lvl.rgba[..., 3]), S, size, flags=cv2.INTER_LINEAR)
        ys, xs = np.nonzero(a >= self.cfg.alpha_threshold * 255)
        if len(xs) == 0:
            return 0.0
        X, Y = (xs + 0.5) / s + bx0, (ys + 0.5) / s + by0
        return float(((X >= 0) & (X < w) & (Y >= 0) & (Y < h)).mean())

    def _on_mask(self, pts: np.ndarray, rgba: np.ndarray, Hinv: np.ndarray) -> np.ndarray:
        """Whether each image point falls on the mask (template alpha >= threshold), judged in
        template space, so points outside the image frame (a chin below a tight crop) count too."""
        import cv2

        th, tw = rgba.shape[:2]
        tp = cv2.perspectiveTransform(np.asarray(pts, np.float64).reshape(1, -1, 2), Hinv)[0]
        xi, yi = np.round(tp[:, 0]).astype(int), np.round(tp[:, 1]).astype(int)
        ok = (xi >= 0) & (xi < tw) & (yi >= 0) & (yi < th)
        on = np.zeros(len(tp), bool)
        on[ok] = rgba[yi[ok], xi[ok], 3] >= self.cfg.alpha_threshold * 255
        return on

    def _covered_parts(self, lmk68: np.ndarray, rgba: np.ndarray, Hinv: np.ndarray) -> dict[str, bool]:
        """A part is covered when at least half its points fall on the mask."""
        return {part: bool(self._on_mask(pts, rgba, Hinv).mean() >= 0.5) for part, pts in part_points(lmk68).items()}

    def _exposes(self, wearing: str, lmk68: np.ndarray, rgba: np.ndarray, Hinv: np.ndarray) -> bool:
        """An incorrect fit leaves its parts (and the nose tip) off the mask."""
        parts = _EXPOSED.get(wearing)
        if not parts:
            return True
        pp = part_points(lmk68)
        if self._on_mask(np.asarray(lmk68, np.float64).reshape(68, 2)[[30]], rgba, Hinv)[0]:
            return False
        return not any(self._on_mask(pp[p], rgba, Hinv).mean() >= 0.5 for p in parts)

    # ------------------------------------------------------------------ contract
    def generate(self, images: np.ndarray, landmarks: np.ndarray | None, *,
                 rng: np.random.Generator | list[np.random.Generator]) -> GeneratedBatch:
        if landmarks is None:
            raise MfrbenchError("mtf places masks from 68 landmarks; got landmarks=None")
        rngs = _rng_list(rng, len(images))
        outs, maps, infos = [], [], []
        for img, lmk, r in zip(images, landmarks, rngs):
            try:
                o, m, info = self.mask_face(np.asarray(img), np.asarray(lmk), r)
            except SkipImage as skip:  # this face only; the rest of the batch goes on
                o, m, info = np.asarray(img), np.zeros(img.shape[:2], np.uint8), {"skip": skip.reason}
            outs.append(o)
            maps.append(m)
            infos.append(info)
        return GeneratedBatch(np.stack(outs), np.stack(maps), infos)


def _rng_list(rng, n: int) -> list[np.random.Generator]:
    if isinstance(rng, (list, tuple)):
        if len(rng) != n:
            raise ValueError(f"Expected {n} per-image generators, but got {len(rng)}")
        return list(rng)
    return list(rng.spawn(n))


@register_generator
def mtf(mask_type: str = "surgical", color: str | None = None, color_weight: float = 0.75,
        texture: str | None = None, texture_weight: float = 0.8, wearing: str = "correct",
        match_light: bool = True, templates_dir: str | None = None, **kw) -> MTFGenerator:
    """MaskTheFace-style template overlay from 68 landmarks (see the module docstring)."""
    return MTFGenerator(MTFConfig(mask_type=mask_type, color=color, color_weight=color_weight, texture=texture,
                                  texture_weight=texture_weight, wearing=wearing, match_light=match_light,
                                  templates_dir=templates_dir, **kw))
