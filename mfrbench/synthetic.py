"""A built-in synthetic face source: procedurally drawn faces with known landmarks.

Like arcface_torch's ``synthetic`` data source, it lets every pipeline stage run on a fresh
machine with no dataset. Unlike random tensors, these are *faces in the geometric sense*:
each identity has its own fixed geometry (face shape, eye spacing, nose and mouth size) and
colours (skin, hair, eyes), and each image of it is a new pose (rotation, scale, shift),
expression, lighting and background. The 68 iBUG landmarks are known by construction (the
face is drawn *from* them), so alignment and landmark-driven mask placement can be tested
without a detector.

Everything is deterministic given the seed. Outputs are labelled synthetic everywhere:
identities are named ``synthetic-NNNN``, manifest rows carry ``source=synthetic`` and
manifest metadata ``"synthetic": true``. Detectors trained on photos (YuNet) may or may not
fire on these drawings, so pipelines use the known landmarks (``landmarks="auto"``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from mfrbench.imageio import atomic_write_bytes, encode_image

SYNTH_VERSION = 1


def _identity_params(rng: np.random.Generator) -> dict:
    return {
        "face_w": rng.uniform(0.30, 0.40), "face_h": rng.uniform(0.40, 0.50),
        "eye_dx": rng.uniform(0.13, 0.19), "eye_w": rng.uniform(0.055, 0.08), "eye_h": rng.uniform(0.018, 0.032),
        "brow_dy": rng.uniform(0.06, 0.10), "brow_tilt": rng.uniform(-0.02, 0.03),
        "nose_len": rng.uniform(0.16, 0.24), "nose_w": rng.uniform(0.05, 0.09),
        "mouth_y": rng.uniform(0.30, 0.36), "mouth_w": rng.uniform(0.10, 0.16), "lip_h": rng.uniform(0.015, 0.03),
        # skin along a natural dark-to-light tone axis, hair from black to blond
        "skin": np.array([90, 58, 40]) + rng.uniform(0, 1) * np.array([160, 155, 150]) + rng.normal(0, 8, 3),
        "hair": np.array([15, 12, 10]) + rng.uniform(0, 1) ** 2 * np.array([190, 150, 90]),
        "iris": rng.uniform([20, 20, 20], [120, 140, 160]),
        "lips": rng.uniform([120, 40, 40], [210, 110, 110]),
        "hair_top": rng.uniform(0.08, 0.2),
    }


def landmarks68(p: dict, smile: float = 0.0, mouth_open: float = 0.0) -> np.ndarray:
    """The 68 iBUG landmarks of a frontal face, in face units (centre at eye level, y down)."""
    pts = np.zeros((68, 2))
    a = np.linspace(-0.1 * np.pi, 1.1 * np.pi, 17)
    pts[0:17] = np.stack([-p["face_w"] * np.cos(a), 0.02 + p["face_h"] * 0.9 * np.sin(a) ** 1.0
                          * np.where(np.sin(a) > 0, 1.0, 0.35)], 1)
    for side, sl in ((-1, slice(17, 22)), (1, slice(22, 27))):
        t = np.linspace(-1, 1, 5) * side
        cx = side * p["eye_dx"]
        brow_y = -p["brow_dy"] - 0.02 * (1 - t ** 2) + p["brow_tilt"] * t * side
        pts[sl] = np.stack([cx + t * p["eye_w"] * 1.3, brow_y], 1)
    pts[27:31] = np.stack([np.zeros(4), np.linspace(0.0, p["nose_len"], 4)], 1)
    pts[31:36] = np.stack([np.linspace(-p["nose_w"], p["nose_w"], 5),
                           p["nose_len"] + 0.03 - 0.012 * np.abs(np.linspace(-2, 2, 5)) ** 0.5], 1)
    for side, sl in ((-1, slice(36, 42)), (1, slice(42, 48))):
        cx = side * p["eye_dx"]
        ang = np.array([180, 240, 300, 0, 60, 120]) * np.pi / 180  # outer corner, top, ..., as iBUG
        ex = np.cos(ang) * p["eye_w"]
        pts[sl] = np.stack([cx + ex, np.sin(ang) * p["eye_h"]], 1)
    my, mw, lh = p["mouth_y"], p["mouth_w"], p["lip_h"]
    ang = np.linspace(np.pi, -np.pi, 13)[:12]  # 48 left corner, top lip 49-53, 54 right, bottom 55-59
    outer = np.stack([np.cos(ang) * mw, my - np.sin(ang) * (lh + mouth_open / 2) - smile * np.cos(ang) ** 2 * 0.02], 1)
    pts[48:60] = outer
    ang_i = np.array([180, 120, 90, 60, 0, 300, 270, 240]) * np.pi / 180
    pts[60:68] = np.stack([np.cos(ang_i) * mw * 0.75, my - np.sin(ang_i) * (0.004 + mouth_open / 2)], 1)
    return pts


def five_from_68(l68: np.ndarray) -> np.ndarray:
    """ArcFace-order 5 points from 68: eye centres, nose tip, mouth corners."""
    return np.stack([l68[36:42].mean(0), l68[42:48].mean(0), l68[30], l68[48], l68[54]])


def render_face(p: dict, rng: np.random.Generator, size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image of identity ``p`` with a random pose; return (RGB uint8, 68 landmarks px)."""
    import cv2

    l68 = landmarks68(p, smile=rng.uniform(0, 1), mouth_open=rng.uniform(0, 0.02))
    angle = rng.uniform(-12, 12) * np.pi / 180
    scale = size * rng.uniform(0.85, 1.05)
    centre = np.array([size / 2, size * 0.45]) + rng.uniform(-0.05, 0.05, 2) * size
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def to_px(pts: np.ndarray) -> np.ndarray:
        return (pts @ rot.T) * scale + centre

    gain = rng.uniform(0.75, 1.15)
    bg_a, bg_b = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
    ramp = np.linspace(0, 1, size)[:, None, None]
    img = (bg_a * (1 - ramp) + bg_b * ramp) * np.ones((size, size, 3))
    img = np.ascontiguousarray(img.astype(np.uint8))

    def col(c: np.ndarray) -> tuple[int, ...]:
        return tuple(int(v) for v in np.clip(np.asarray(c) * gain, 0, 255))

    # hair: a large ellipse behind the head
    head_c = to_px(np.array([[0.0, -0.05]]))[0]
    axes = (int(p["face_w"] * scale * 1.2), int((p["face_h"] * 0.55 + p["hair_top"] + 0.2) * scale))
    cv2.ellipse(img, tuple(int(v) for v in head_c), axes, np.degrees(angle), 0, 360, col(p["hair"]), -1, cv2.LINE_AA)
    # face: jaw polygon closed by a forehead arc
    fa = np.linspace(1.1 * np.pi, 1.9 * np.pi, 12)  # right temple, over the top, to the left temple
    forehead = np.stack([-p["face_w"] * np.cos(fa), 0.02 + p["face_h"] * 0.75 * np.sin(fa)], 1)
    face_poly = np.concatenate([l68[0:17], forehead])
    cv2.fillPoly(img, [np.round(to_px(face_poly) * 16).astype(np.int32)], col(p["skin"]), cv2.LINE_AA, 4)
    # brows, eyes, nose, mouth
    for sl in (slice(17, 22), slice(22, 27)):
        cv2.polylines(img, [np.round(to_px(l68[sl]) * 16).astype(np.int32)], False, col(p["hair"] * 0.7),
                      max(1, int(size / 60)), cv2.LINE_AA, 4)
    for sl in (slice(36, 42), slice(42, 48)):
        eye = to_px(l68[sl])
        cv2.fillPoly(img, [np.round(eye * 16).astype(np.int32)], col([235, 235, 230]), cv2.LINE_AA, 4)
        c = eye.mean(0)
        r = max(1, int(p["eye_h"] * scale * 0.9))
        cv2.circle(img, (int(c[0]), int(c[1])), r, col(p["iris"]), -1, cv2.LINE_AA)
        cv2.circle(img, (int(c[0]), int(c[1])), max(1, r // 2), (15, 15, 15), -1, cv2.LINE_AA)
    shade = col(p["skin"] * 0.7)
    cv2.polylines(img, [np.round(to_px(l68[27:31]) * 16).astype(np.int32)], False, shade, max(1, int(size / 80)),
                  cv2.LINE_AA, 4)
    cv2.polylines(img, [np.round(to_px(l68[31:36]) * 16).astype(np.int32)], False, shade, max(1, int(size / 70)),
                  cv2.LINE_AA, 4)
    cv2.fillPoly(img, [np.round(to_px(l68[48:60]) * 16).astype(np.int32)], col(p["lips"]), cv2.LINE_AA, 4)
    cv2.fillPoly(img, [np.round(to_px(l68[60:68]) * 16).astype(np.int32)], col(p["lips"] * 0.45), cv2.LINE_AA, 4)
    noise = rng.normal(0, 3.0, img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img, to_px(l68)


def load_table(root: Path) -> pd.DataFrame | None:
    """The landmark table of a synthetic set written earlier (e.g. by ``mfrbench synth``)."""
    path = Path(root) / "landmarks.json"
    if not path.is_file():
        return None
    return pd.DataFrame(json.loads(path.read_text())["rows"])


def default_root(identities: int, per_identity: int, size: int, seed: int) -> Path:
    name = f"v{SYNTH_VERSION}_s{seed}_i{identities}_p{per_identity}_z{size}"
    return Path(tempfile.gettempdir()) / "mfrbench-synthetic" / name


def materialize(root: Path | None, *, identities: int = 20, per_identity: int = 5, size: int = 160,
                seed: int = 0) -> tuple[Path, pd.DataFrame]:
    """Write the synthetic set as ``<root>/synthetic-NNNN/NNNN.png`` + ``landmarks.json`` once.

    Returns the folder and a table with ``key, identity, lmk5, lmk68``. Reuses an existing
    folder made with the same parameters (the parameters are stored in ``landmarks.json``).
    """
    root = Path(root) if root is not None else default_root(identities, per_identity, size, seed)
    params = {"version": SYNTH_VERSION, "identities": identities, "per_identity": per_identity,
              "size": size, "seed": seed}
    table_path = root / "landmarks.json"
    if table_path.is_file():
        saved = json.loads(table_path.read_text())
        if saved.get("params") == params:
            return root, pd.DataFrame(saved["rows"])
    rows = []
    for i in range(identities):
        ident = f"synthetic-{i:04d}"
        p = _identity_params(np.random.default_rng([seed, i, 0]))
        for j in range(per_identity):
            img, l68 = render_face(p, np.random.default_rng([seed, i, j + 1]), size)
            key = f"{ident}/{j:04d}.png"
            atomic_write_bytes(root / key, encode_image(img, ".png"))
            rows.append({"key": key, "identity": ident, "lmk5": five_from_68(l68).ravel().round(3).tolist(),
                         "lmk68": l68.ravel().round(3).tolist()})
    atomic_write_bytes(table_path, json.dumps({"params": params, "synthetic": True, "rows": rows}).encode())
    return root, pd.DataFrame(rows)
