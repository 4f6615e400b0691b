"""Mask templates, styles and landmark anchors for the ``mtf`` overlay generator.

The template kit is MaskTheFace's (Anwar & Raychowdhury 2020, MIT, ``<data root>/masktheface-templates/``):
RGBA mask pictures plus, in ``masks/masks.cfg``, six anchor points per template:

====  ======================================================================
a     upper left end of the mask (image-left jaw at nose-tip height)
b     top centre (on the nose bridge)
c     upper right end (image-right jaw at nose-tip height)
d     lower left (image-left jaw at lower-lip height)
e     bottom centre (under the chin)
f     lower right (image-right jaw at lower-lip height)
====  ======================================================================

This module only reads that kit; the placement code is ours. Everything is loaded once per
process and cached (:func:`load_kit`): MaskTheFace re-reads its template and config for every
face, which costs more than the warp itself.

Face geometry works in a face frame built from the 68 iBUG landmarks: origin at the top of
the nose bridge (point 27), ``u`` pointing to the chin (point 8), ``v`` across the face
towards image-right, lengths in units of the bridge-chin distance. A *level* is the ``u``
coordinate: 0 at the bridge top, 1 at the chin. Each wearing mode places the mask's top and
bottom at levels read off the face's own landmarks (see :data:`WEARING_MODES`), so the same
mode fits long and short faces alike.
"""

from __future__ import annotations

import configparser
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mfrbench.errors import DataNotFoundError, MfrbenchError

TEMPLATE_SUBDIR = "masktheface-templates"
ANCHOR_NAMES = ("a", "b", "c", "d", "e", "f")
SIDES = ("front", "left", "right")

#: Mask families (``--mask-type``); each has front/left/right templates in the kit.
#: ``plain`` is drawn procedurally (no kit needed).
MASK_TYPES = ("surgical", "surgical_blue", "surgical_green", "N95", "KN95", "cloth", "gas", "plain")
KIT_TYPES = MASK_TYPES[:-1]

#: ``mix`` mode: per-image mask family drawn with these weights (roughly what people wore).
MIX_TYPE_WEIGHTS = {"surgical": 0.25, "surgical_blue": 0.15, "surgical_green": 0.05, "N95": 0.08,
                    "KN95": 0.15, "cloth": 0.27, "gas": 0.05}
#: ``mix`` mode: chance of a colour / a texture for the families where fabric makes sense.
MIX_RECOLOURABLE = ("surgical", "KN95", "cloth", "plain")
MIX_P_COLOUR = 0.35
MIX_P_TEXTURE = 0.2
#: ``mix`` palette: (hex, probability).
MIX_PALETTE = (("#1f3a93", 0.2), ("#111111", 0.2), ("#f2f2f2", 0.1), ("#e8a0bf", 0.1), ("#4a7c59", 0.1),
               ("#8e8e8e", 0.1), ("#b22222", 0.1), ("#87ceeb", 0.1))
MIX_WEIGHT_RANGE = (0.5, 0.9)

# 68-point groups (iBUG order).
JAW_LEFT = list(range(0, 9))          # image-left half of the outline, top to chin
JAW_RIGHT = list(range(16, 7, -1))    # image-right half, top to chin
MIDLINE = [27, 28, 29, 30, 33, 51, 62, 66, 57, 8]
PARTS = {
    "eyes": list(range(36, 48)),
    "nose": list(range(30, 36)),      # tip and nostrils: the part a mask must cover
    "mouth": list(range(48, 68)),
    "chin": [7, 8, 9],                 # pulled 10 % towards the lower lip (see part_points)
}


@dataclass(frozen=True)
class WearingMode:
    """Where the mask sits: its top (anchor b) and bottom (anchor e) as face levels.

    ``top`` is ``(i, j, t)``: the level ``t`` of the way from landmark ``i``'s level to landmark
    ``j``'s, plus ``top_off``; ``bottom`` is the chin level (1) plus ``bottom_off``. The side
    anchors keep their relative heights from the correct fit, so a lowered mask is compressed
    the way a pulled-down mask is. Levels below the jaw line use a minimum half-width of
    ``neck_width`` times the jaw half-width at lower-lip height (a mask hanging under the chin
    spans the neck, not a point).
    """

    top: tuple[int, int, float]
    top_off: float
    bottom_off: float
    neck_width: float = 0.75


WEARING_MODES: dict[str, WearingMode] = {
    "correct": WearingMode(top=(28, 29, 0.5), top_off=0.0, bottom_off=0.03),
    "nose-out": WearingMode(top=(33, 51, 0.45), top_off=0.0, bottom_off=0.06),
    "mouth-nose-out": WearingMode(top=(57, 8, 0.12), top_off=0.0, bottom_off=0.12),
    "chin": WearingMode(top=(57, 8, 0.4), top_off=0.0, bottom_off=0.26, neck_width=0.95),
}
#: ``--wearing random``: correct fits are the majority, each incorrect mode equally likely.
WEARING_RANDOM_WEIGHTS = {"correct": 0.4, "nose-out": 0.2, "mouth-nose-out": 0.2, "chin": 0.2}
# Correct-fit levels of the side anchors, as landmarks: a/c at the nose tip, d/f at the lower lip.
_SIDE_LEVEL_LMK = {"upper": 30, "lower": 57}


# --------------------------------------------------------------------------- kit
@dataclass
class TemplateLevel:
    """One resolution of a template, in the forms the warp needs (computed once, cached).

    ``uint8`` throughout (5 bytes per pixel): a float copy of every level of 21 templates
    would cost hundreds of MB per worker.
    """

    rgba: np.ndarray        # (H, W, 4) uint8, straight (non-premultiplied) colour
    anchors: np.ndarray     # (6, 2) float32, a..f in this level's pixels
    pm: np.ndarray          # (H, W, 4) uint8, colour premultiplied by alpha: warps without fringes
    _shade: np.ndarray | None = None

    @property
    def shade(self) -> np.ndarray:
        """(H, W) uint8: luminance / its 90th percentile over the mask, x200 (only styled masks need it)."""
        if self._shade is None:
            gray = self.rgba[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            vis = self.rgba[::2, ::2, 3] > 127
            ref = float(np.percentile(gray[::2, ::2][vis], 90)) if vis.any() else 255.0
            self._shade = np.clip(gray / max(ref, 1.0) * 200.0 + 0.5, 0, 255).astype(np.uint8)
        return self._shade


@dataclass
class Template:
    """One template: full resolution plus a cache of downscaled levels (``2**k`` smaller)."""

    name: str
    rgba: np.ndarray                 # (H, W, 4) uint8
    anchors: np.ndarray              # (6, 2) float32, order a..f, template pixels
    _levels: dict | None = None

    def level(self, k: int) -> TemplateLevel:
        """The template downscaled by ``2**k`` (premultiplied INTER_AREA: no aliasing, no dark
        fringes) and its anchors; built on first use and cached."""
        import cv2

        if self._levels is None:
            self._levels = {}
        if k not in self._levels:
            if k <= 0:
                self._levels[k] = _make_level(self.rgba, self.anchors)
            else:
                prev = self.level(k - 1).pm  # each level from the one above: geometric cost
                h, w = self.rgba.shape[:2]
                nw, nh = max(2, round(w / 2 ** k)), max(2, round(h / 2 ** k))
                pm = cv2.resize(prev, (nw, nh), interpolation=cv2.INTER_AREA)
                sx, sy = nw / w, nh / h
                anc = ((self.anchors + 0.5) * np.array([sx, sy], np.float32) - 0.5).astype(np.float32)
                self._levels[k] = _make_level(_unpremultiply(pm), anc, pm)
        return self._levels[k]


def _premultiply(rgba: np.ndarray) -> np.ndarray:
    import cv2

    a = np.ascontiguousarray(rgba[..., 3])
    pm = cv2.multiply(np.ascontiguousarray(rgba[..., :3]), cv2.merge([a, a, a]), scale=1.0 / 255.0)
    return cv2.merge([*cv2.split(pm), a])


def _unpremultiply(pm: np.ndarray) -> np.ndarray:
    a = pm[..., 3:4].astype(np.float32)
    rgb = np.where(a > 0, pm[..., :3].astype(np.float32) * 255.0 / np.maximum(a, 1.0), 0.0)
    return np.concatenate([np.clip(rgb + 0.5, 0, 255).astype(np.uint8), pm[..., 3:4]], axis=2)


def _make_level(rgba: np.ndarray, anchors: np.ndarray, pm: np.ndarray | None = None) -> TemplateLevel:
    return TemplateLevel(rgba, anchors, _premultiply(rgba) if pm is None else pm)


class TemplateKit:
    """Templates (lazily decoded, cached), anchors and textures of one kit folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        cfg_path = root / "masks" / "masks.cfg"
        if not cfg_path.is_file():
            raise DataNotFoundError(f"mask template config not found at {cfg_path}; the kit folder "
                                    f"{TEMPLATE_SUBDIR}/ needs masks/masks.cfg (or use --mask-type plain)")
        cp = configparser.ConfigParser()
        cp.read(cfg_path)
        self.entries: dict[str, tuple[Path, np.ndarray]] = {}
        for sec in cp.sections():
            s = cp[sec]
            if "template" not in s:
                continue  # 'empty' / 'inpaint' sections of the original tool
            pts = np.array([[float(v) for v in s[f"mask_{k}"].split(",")] for k in ANCHOR_NAMES], np.float32)
            self.entries[sec] = (root / s["template"].strip(), pts)
        self._cache: dict[str, Template] = {}
        self._lock = threading.Lock()
        tex_dir = root / "masks" / "textures"
        self.textures: dict[str, Path] = {}
        if tex_dir.is_dir():
            for p in sorted(tex_dir.rglob("*")):
                if p.suffix.lower() in (".png", ".jpg", ".jpeg"):
                    self.textures[p.stem] = p
        self._tex_cache: dict[tuple, np.ndarray] = {}
        self._tex_src: dict[str, np.ndarray] = {}

    def names(self) -> list[str]:
        return sorted(self.entries)

    def template(self, name: str) -> Template:
        with self._lock:
            if name not in self._cache:
                if name not in self.entries:
                    raise MfrbenchError(f"Unknown mask template {name!r}. Available: {', '.join(self.names())}")
                path, pts = self.entries[name]
                self._cache[name] = Template(name, _read_rgba(path), pts)
            return self._cache[name]

    def texture_names(self) -> list[str]:
        return list(self.textures)

    def texture(self, name: str, width: int, height: int) -> np.ndarray:
        """Texture ``name`` tiled to ``(height, width, 3)`` float32 RGB in [0, 1], one tile per
        half template width (decoded once; tilings cached per size)."""
        import cv2

        if name not in self.textures:
            raise MfrbenchError(f"Unknown texture {name!r}. Available: {', '.join(self.textures) or 'none'}")
        key = (name, width, height)
        if key not in self._tex_cache:
            with self._lock:
                if name not in self._tex_src:  # decoded once, kept at <= 512 px (tiles are smaller)
                    src = _read_rgba(self.textures[name])[..., :3]
                    f = min(1.0, 512 / max(src.shape[:2]))
                    self._tex_src[name] = src if f == 1.0 else cv2.resize(
                        src, (round(src.shape[1] * f), round(src.shape[0] * f)), interpolation=cv2.INTER_AREA)
            tex = self._tex_src[name]
            tw = max(4, width // 2)
            th = max(4, round(tex.shape[0] * tw / tex.shape[1]))
            tile = cv2.resize(tex, (tw, th), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
            reps = (-(-height // th), -(-width // tw), 1)
            if len(self._tex_cache) > 64:  # bounded: a worker's memory must stay flat
                self._tex_cache.clear()
            self._tex_cache[key] = np.tile(tile, reps)[:height, :width]
        return self._tex_cache[key]


def _read_rgba(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGBA"))


@lru_cache(maxsize=4)
def load_kit(root: str | None = None) -> TemplateKit:
    """The template kit under ``root`` (default ``<data root>/masktheface-templates``), cached per process."""
    from mfrbench.paths import data_root

    if root is None:
        base = data_root()
        if base is None or not (base / TEMPLATE_SUBDIR).is_dir():
            where = f"{base / TEMPLATE_SUBDIR}" if base is not None else f"<data root>/{TEMPLATE_SUBDIR}"
            raise DataNotFoundError(f"MaskTheFace templates not found at {where}; set MFRBENCH_DATA to a data root "
                                    f"holding {TEMPLATE_SUBDIR}/, pass templates_dir=, or use --mask-type plain")
        root = str(base / TEMPLATE_SUBDIR)
    p = Path(root)
    if not p.is_dir():
        raise DataNotFoundError(f"MaskTheFace templates folder {p} does not exist")
    return TemplateKit(p)


@lru_cache(maxsize=1)
def plain_template() -> Template:
    """A procedurally drawn pleated surgical-style mask (no kit needed), anchors like ``surgical``."""
    import cv2

    w, h = 600, 480
    anchors = np.array([[20, 100], [300, 24], [580, 100], [24, 320], [300, 462], [576, 320]], np.float32)
    rgba = np.zeros((h, w, 4), np.uint8)
    a, b, c, d, e, f = anchors
    top = [a + (b - a) * t + np.array([0, -18 * np.sin(np.pi * t)]) for t in np.linspace(0, 1, 12)]
    top += [b + (c - b) * t + np.array([0, -18 * np.sin(np.pi * t)]) for t in np.linspace(0, 1, 12)[1:]]
    bottom = [f + (e - f) * t + np.array([0, 30 * np.sin(np.pi * t)]) for t in np.linspace(0, 1, 12)]
    bottom += [e + (d - e) * t + np.array([0, 30 * np.sin(np.pi * t)]) for t in np.linspace(0, 1, 12)[1:]]
    poly = np.round(np.array(top + [c, f] + bottom + [d, a])).astype(np.int32)
    cv2.fillPoly(rgba, [poly], (232, 236, 240, 255), lineType=cv2.LINE_AA)
    shade = rgba[..., :3].astype(np.float32)
    for y in (170, 235, 300):  # pleats: a dark crease and a light fold under it
        cv2.line(shade, (40, y), (560, y), (170, 176, 184), 6, cv2.LINE_AA)
        cv2.line(shade, (40, y + 7), (560, y + 7), (250, 252, 254), 4, cv2.LINE_AA)
    rgba[..., :3] = np.where(rgba[..., 3:4] > 0, np.clip(shade, 0, 255), 0).astype(np.uint8)
    return Template("plain", rgba, anchors)


def template_name(mask_type: str, side: str) -> str:
    return mask_type if side == "front" else f"{mask_type}_{side}"


def template_side_t(anchors: np.ndarray) -> float:
    """Where anchor b sits between a and c (0 = at a, 1 = at c): the template's own yaw."""
    a, b, c = anchors[0], anchors[1], anchors[2]
    ac = c - a
    return float(np.dot(b - a, ac) / max(float(np.dot(ac, ac)), 1e-6))


# --------------------------------------------------------------------------- geometry
@dataclass
class FaceFrame:
    """Face coordinates from 68 landmarks (see the module docstring)."""

    origin: np.ndarray   # (2,)
    u: np.ndarray        # (2,) unit, bridge -> chin
    v: np.ndarray        # (2,) unit, towards image-right
    length: float        # bridge-chin distance, pixels
    sw: np.ndarray       # (68, 2) landmarks in (level, across) face units

    @classmethod
    def from_landmarks(cls, lmk68: np.ndarray) -> "FaceFrame":
        p = np.asarray(lmk68, np.float64).reshape(68, 2)
        if not np.isfinite(p).all():
            raise ValueError("landmarks contain NaN or inf")
        d = p[8] - p[27]
        length = float(np.hypot(*d))
        if length < 4:
            raise ValueError(f"face too small or landmarks degenerate (bridge-chin {length:.1f} px)")
        u = d / length
        v = np.array([-u[1], u[0]]) * -1.0  # u=(0,1) -> v=(1,0)
        q = (p - p[27]) / length
        return cls(p[27], u, v, length, np.stack([q @ u, q @ v], axis=1))

    def level(self, i: int) -> float:
        return float(self.sw[i, 0])

    def to_image(self, s: np.ndarray, w: np.ndarray) -> np.ndarray:
        s, w = np.asarray(s, np.float64), np.asarray(w, np.float64)
        return self.origin + self.length * (s[..., None] * self.u + w[..., None] * self.v)

    def midline_w(self, s: float) -> float:
        if not hasattr(self, "_mid"):
            ms = self.sw[MIDLINE, 0]
            order = np.argsort(ms, kind="stable")
            self._mid = (ms[order], self.sw[MIDLINE, 1][order])
        return float(np.interp(s, *self._mid))

    def jaw_w(self, s: float, side: str) -> float | None:
        """Across-coordinate where the jaw outline crosses level ``s`` (None below the chin)."""
        idx = JAW_LEFT if side == "left" else JAW_RIGHT
        js, jw = self.sw[idx, 0], self.sw[idx, 1]
        if s <= js[0]:
            return float(jw[0])
        for i in range(len(idx) - 1):
            s0, s1 = js[i], js[i + 1]
            if (s0 - s) * (s1 - s) <= 0 and s0 != s1:
                t = (s - s0) / (s1 - s0)
                return float(jw[i] + t * (jw[i + 1] - jw[i]))
        return None


def six_anchors(frame: FaceFrame, mode: WearingMode) -> np.ndarray:
    """The six anchors (a..f, image pixels, ``(6, 2)``) for ``mode`` on this face."""
    f = frame
    top_c = f.level(28) * 0.5 + f.level(29) * 0.5
    bot_c = 1.0 + WEARING_MODES["correct"].bottom_off
    i, j, t = mode.top
    top = f.level(i) + t * (f.level(j) - f.level(i)) + mode.top_off
    bot = 1.0 + mode.bottom_off
    scale = (bot - top) / max(bot_c - top_c, 1e-6)
    lv_upper = top + (f.level(_SIDE_LEVEL_LMK["upper"]) - top_c) * scale
    lv_lower = top + (f.level(_SIDE_LEVEL_LMK["lower"]) - top_c) * scale
    lip = f.level(_SIDE_LEVEL_LMK["lower"])
    pts = []
    for lv in (lv_upper, lv_lower):
        m = f.midline_w(lv)
        row = []
        for side, sign in (("left", -1.0), ("right", 1.0)):
            ref = f.jaw_w(lip, side)
            min_half = mode.neck_width * abs((ref if ref is not None else m) - f.midline_w(lip))
            jw = f.jaw_w(lv, side)
            half = abs(jw - m) if jw is not None else 0.0
            row.append(m + sign * max(half, min_half))
        pts.append(row)
    (wa, wc), (wd, wf) = pts
    s = np.array([lv_upper, top, lv_upper, lv_lower, bot, lv_lower])
    w = np.array([wa, f.midline_w(top), wc, wd, f.midline_w(bot), wf])
    return f.to_image(s, w).astype(np.float32)


def homography_lsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """Least-squares homography ``src -> dst`` over all points (normalised DLT, Hartley 1997).

    What ``cv2.findHomography(src, dst, 0)`` computes, about 10x cheaper for six points.
    Returns ``None`` for a degenerate configuration.
    """

    def norm(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = p.mean(0)
        d = np.sqrt(((p - c) ** 2).sum(1)).mean()
        k = np.sqrt(2) / max(d, 1e-9)
        return (p - c) * k, np.array([[k, 0, -k * c[0]], [0, k, -k * c[1]], [0, 0, 1]])

    s, Ts = norm(np.asarray(src, np.float64))
    d, Td = norm(np.asarray(dst, np.float64))
    n = len(s)
    A = np.zeros((2 * n, 9))
    A[0::2, 0:2], A[0::2, 2] = s, 1
    A[0::2, 6:8], A[0::2, 8] = -d[:, :1] * s, -d[:, 0]
    A[1::2, 3:5], A[1::2, 5] = s, 1
    A[1::2, 6:8], A[1::2, 8] = -d[:, 1:] * s, -d[:, 1]
    _, sv, Vt = np.linalg.svd(A)
    Hn = Vt[-1].reshape(3, 3)
    H = np.linalg.inv(Td) @ Hn @ Ts
    if not np.isfinite(H).all() or abs(H[2, 2]) < 1e-12 or sv[-2] < 1e-9:
        return None
    return H / H[2, 2]


def face_yaw_t(frame: FaceFrame) -> float:
    """Where the nose tip sits between the jaw outlines at its own level (0.5 = frontal)."""
    s = frame.level(30)
    wl, wr = frame.jaw_w(s, "left"), frame.jaw_w(s, "right")
    if wl is None or wr is None or wr - wl < 1e-6:
        return 0.5
    return float(np.clip((frame.sw[30, 1] - wl) / (wr - wl), 0.0, 1.0))


def yaw_bin(t: float, thresholds: tuple[float, float] = (0.35, 0.65)) -> str:
    """``left`` when the face turns towards image-left (nose near the left outline), etc."""
    return "left" if t < thresholds[0] else ("right" if t > thresholds[1] else "front")


def yaw_degrees(t: float) -> float:
    """Rough yaw from the nose position, treating the lower face as a cylinder (sign: + = right)."""
    return float(np.degrees(np.arcsin(np.clip(2 * t - 1, -1, 1))))


def part_points(lmk68: np.ndarray) -> dict[str, np.ndarray]:
    """Points whose coverage decides each part's label (chin points moved off the outline)."""
    p = np.asarray(lmk68, np.float64).reshape(68, 2)
    out = {k: p[v] for k, v in PARTS.items()}
    out["chin"] = out["chin"] + 0.1 * (p[57] - out["chin"])
    return out


def wearing_regions(lmk68: np.ndarray, size: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Where a correctly worn mask must be, and must not be, on one face: ``(cover, eyes)`` bool ``(size, size)``.

    ``cover``: the box from the lower nose bridge (point 29) to just below the lower lip (57, plus 2 %
    of the side), between the outer nostrils (31, 35) or mouth corners (48, 54), whichever is wider:
    the nose tip, nostrils and mouth of this face. ``eyes``: the box around the twelve eye points
    (36-47) grown by 3 % of the side, the eyes and their lids. ``scale`` maps the points' pixels to
    ``size`` (e.g. 64 / 112 for points found on a 112-px crop).

    >>> pts = np.zeros((68, 2)); pts[29] = (50, 60); pts[[31, 35]] = [(44, 70), (68, 70)]
    >>> pts[[48, 54]] = [(40, 85), (72, 85)]; pts[57] = (56, 95); pts[36:48] = [(30, 45)] * 6 + [(80, 47)] * 6
    >>> cover, eyes = wearing_regions(pts, 112)
    >>> (bool(cover[60:98, 40:72].all()), int(cover.sum()) == 38 * 32, bool(eyes[45, 30]), bool(eyes[70, 56]))
    (True, True, True, False)
    """
    p = np.asarray(lmk68, np.float64).reshape(68, 2) * scale
    m = 0.02 * size
    x0 = min(p[[31, 48], 0].min(), p[[35, 54], 0].min())
    x1 = max(p[[31, 48], 0].max(), p[[35, 54], 0].max())
    y0, y1 = p[29, 1], p[57, 1] + m
    cover, eyes = np.zeros((size, size), bool), np.zeros((size, size), bool)
    cover[_span(y0, y1, size), _span(x0, x1, size)] = True
    e, g = p[36:48], 1.5 * m
    eyes[_span(e[:, 1].min() - g, e[:, 1].max() + g, size), _span(e[:, 0].min() - g, e[:, 0].max() + g, size)] = True
    return cover, eyes


def _span(a: float, b: float, size: int) -> slice:
    return slice(int(np.clip(np.floor(a), 0, size)), int(np.clip(np.ceil(b), 0, size)))


def hex_to_rgb(color: str) -> np.ndarray:
    """``#rrggbb`` / ``rrggbb`` / ``#rgb`` -> float RGB in [0, 1]."""
    s = color.strip().lstrip("#")
    if len(s) == 3:
        s = "".join(ch * 2 for ch in s)
    if len(s) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in s):
        raise MfrbenchError(f"Expected a colour like '#1f3a93', but got {color!r}")
    return np.array([int(s[i:i + 2], 16) for i in (0, 2, 4)], np.float32) / 255.0
