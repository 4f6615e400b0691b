"""The mtf generator on single faces: placement, wearing modes, mask maps, styles, errors."""

from __future__ import annotations

import numpy as np
import pytest

from mfrbench.errors import DataNotFoundError, MfrbenchError
from mfrbench.generators.base import GeneratedBatch, create_generator, image_rng, list_generators
from mfrbench.generators.mask_templates import (
    KIT_TYPES,
    PARTS,
    WEARING_MODES,
    FaceFrame,
    homography_lsq,
    load_kit,
    part_points,
    six_anchors,
)
from mfrbench.generators.mtf import RIM, MTFConfig, MTFGenerator
from mfrbench.synthetic import _identity_params, render_face


def _faces(n: int = 4, size: int = 200):
    """Synthetic faces (drawn from known 68 landmarks): no data kit needed."""
    out = []
    for i in range(n):
        img, l68 = render_face(_identity_params(np.random.default_rng([7, i])), np.random.default_rng([7, i, 1]), size)
        out.append((img, l68))
    return out


def _on_map(mask_map: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Mask-map value at each (in-frame) landmark."""
    h, w = mask_map.shape
    xi = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
    yi = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
    return mask_map[yi, xi].astype(bool)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def _dilate(m: np.ndarray, r: int = 1) -> np.ndarray:
    import cv2

    return cv2.dilate(m.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)


def test_mtf_is_registered():
    assert "mtf" in list_generators()
    g = create_generator("mtf", mask_type="plain")
    assert isinstance(g, MTFGenerator) and g.input_frame == "any" and g.per_image_rng


@pytest.mark.parametrize("wearing", list(WEARING_MODES))
def test_plain_mask_wearing_modes_without_kit(wearing):
    """Correct wearing covers nose tip and mouth; nose-out leaves the nose tip visible and covers
    the mouth; mouth-nose-out and chin leave both visible. Read off the mask map at the landmarks."""
    g = MTFGenerator(MTFConfig(mask_type="plain", wearing=wearing))
    for img, l68 in _faces():
        out, m, info = g.mask_face(img, l68, np.random.default_rng(0))
        nose_tip, mouth = _on_map(m, l68[[30]])[0], _on_map(m, l68[48:68]).mean()
        eyes = _on_map(m, l68[36:48]).mean()
        assert eyes == 0.0, "a mask never covers the eyes"
        if wearing == "correct":
            assert nose_tip and mouth == 1.0
            assert info["covers_nose"] and info["covers_mouth"] and not info["covers_eyes"]
        elif wearing == "nose-out":
            assert not nose_tip and mouth > 0.8
            assert not info["covers_nose"] and info["covers_mouth"]
        else:
            assert not nose_tip and mouth < 0.2
            assert not info["covers_nose"] and not info["covers_mouth"]
            assert np.nonzero(m)[0].max() > l68[8, 1]  # hangs under the chin
            if wearing == "mouth-nose-out":
                assert info["covers_chin"]
        assert info["wearing"] == wearing and len(info["anchors"]) == 12


def _assert_map_is_drawn_mask(out, img, m):
    """Every map pixel was changed; changed pixels off the map are only the anti-aliased rim
    (alpha < 0.5, within RIM = 2 px of the map, a small fraction of its area)."""
    changed = _changed(out, img)
    on = m.astype(bool)
    assert set(np.unique(m)) <= {0, 1} and on.sum() > 200
    assert (changed & on).sum() / on.sum() > 0.99
    rim = changed & ~on
    assert not (rim & ~_dilate(on, RIM)).any()
    assert rim.sum() < 0.15 * on.sum()


def test_mask_map_is_exactly_the_drawn_mask():
    g = MTFGenerator(MTFConfig(mask_type="plain"))
    for img, l68 in _faces():
        out, m, _ = g.mask_face(img, l68, np.random.default_rng(0))
        _assert_map_is_drawn_mask(out, img, m)


@pytest.fixture(scope="module")
def kit_gen(kit):
    try:
        load_kit()
    except DataNotFoundError:
        pytest.skip("masktheface-templates/ not in the data kit")
    return kit


@pytest.mark.parametrize("mask_type", KIT_TYPES)
def test_every_template_family_covers_nose_and_mouth(kit_gen, mask_type):
    g = MTFGenerator(MTFConfig(mask_type=mask_type))
    for img, l68 in _faces(3):
        out, m, info = g.mask_face(img, l68, np.random.default_rng(0))
        assert _on_map(m, l68[[30, 33]]).all() and _on_map(m, l68[48:60]).mean() > 0.9, mask_type
        assert _on_map(m, l68[36:48]).mean() < 0.25  # at most a strap (N95) across an eye corner
        assert not info["covers_eyes"]
        assert info["template"].startswith(mask_type) and info["covers_nose"] and info["covers_mouth"]
        _assert_map_is_drawn_mask(out, img, m)


def test_yaw_picks_the_turned_template(kit_gen):
    """A face whose nose sits near the image-left outline gets the '_left' view and yaw bin."""
    img, l68 = _faces(1)[0]
    turned = l68.copy()
    nose = list(range(27, 36))
    jaw_l = l68[0:9, 0]
    turned[nose, 0] = l68[nose, 0] - 0.55 * (l68[nose, 0] - jaw_l.mean())
    g = MTFGenerator(MTFConfig(mask_type="surgical"))
    _, _, info = g.mask_face(img, turned, np.random.default_rng(0))
    assert info["yaw_bin"] == "left" and info["template"] == "surgical_left" and info["yaw_deg"] < -10
    _, _, info = g.mask_face(img, l68, np.random.default_rng(0))
    assert info["yaw_bin"] == "front" and info["template"] == "surgical"


def test_grayscale_photo_gets_a_gray_mask(kit_gen):
    """Saturation follows the skin's S channel: a gray photo gets no colour, even from a blue mask."""
    img, l68 = _faces(1)[0]
    gray = np.repeat(img.mean(2, keepdims=True).astype(np.uint8), 3, axis=2)
    g = MTFGenerator(MTFConfig(mask_type="surgical_blue"))
    out, m, info = g.mask_face(gray, l68, np.random.default_rng(0))
    assert info["s_gain"] == 0.0
    px = out[m.astype(bool)].astype(int)
    assert np.abs(px[:, 0] - px[:, 2]).max() <= 2  # R == B up to rounding: no blue left


def test_no_default_tint_and_colour_option(kit_gen):
    """Without --color the template's own colours are drawn; with one, the mask takes its hue."""
    img, l68 = _faces(1)[0]
    plain = MTFGenerator(MTFConfig(mask_type="surgical", match_light=False))
    out, m, info = plain.mask_face(img, l68, np.random.default_rng(0))
    assert info["color"] == "" and info["color_weight"] == 0.0
    px = out[m.astype(bool)].astype(float)
    assert np.abs(px.mean(0) - px.mean()).max() < 12  # the stock surgical mask is near-white/gray
    red = MTFGenerator(MTFConfig(mask_type="surgical", color="#c01010", color_weight=1.0, match_light=False))
    out, m, info = red.mask_face(img, l68, np.random.default_rng(0))
    r, g_, b = out[m.astype(bool)].astype(float).mean(0)
    assert info["color"] == "#c01010" and r > 2 * g_ and r > 2 * b


def test_mix_draws_styles_from_the_seed(kit_gen):
    g = MTFGenerator(MTFConfig(mask_type="mix", wearing="random"))
    styles = [g.draw_style(image_rng(3, f"k{i}")) for i in range(300)]
    again = [g.draw_style(image_rng(3, f"k{i}")) for i in range(300)]
    assert styles == again
    assert len({s.mask_type for s in styles}) >= 6
    assert {s.wearing for s in styles} == set(WEARING_MODES)
    assert any(s.color for s in styles) and any(s.texture for s in styles)
    assert 0.3 < np.mean([s.wearing == "correct" for s in styles]) < 0.5


def test_generate_batch_contract_and_per_image_skip():
    """generate(): same shapes out; a face that cannot be placed is reported in its info only."""
    faces = _faces(3)
    imgs = np.stack([f[0] for f in faces])
    lmks = np.stack([f[1] for f in faces]).astype(np.float32)
    lmks[1] = np.nan  # broken landmarks on one face
    g = MTFGenerator(MTFConfig(mask_type="plain"))
    out = g.generate(imgs, lmks, rng=[np.random.default_rng(i) for i in range(3)])
    assert isinstance(out, GeneratedBatch)
    assert out.images.shape == imgs.shape and out.mask_maps.shape == imgs.shape[:3] and out.mask_maps.dtype == np.uint8
    assert out.info[1]["skip"].startswith("bad_landmarks") and "skip" not in out.info[0]
    assert set(np.unique(out.mask_maps[0])) == {0, 1}


def test_part_labels_match_the_map_in_frame():
    """covered_parts (judged in template space) agrees with the mask map for in-frame points."""
    for wearing in WEARING_MODES:
        g = MTFGenerator(MTFConfig(mask_type="plain", wearing=wearing))
        for img, l68 in _faces(3):
            _, m, info = g.mask_face(img, l68, np.random.default_rng(0))
            for part, pts in part_points(l68).items():
                assert (_on_map(m, pts).mean() >= 0.5) == info[f"covers_{part}"], (wearing, part)
    assert set(PARTS) == {"eyes", "nose", "mouth", "chin"}


def test_anchor_geometry():
    """b on the nose bridge, a/c on the jaw at nose-tip height, e below the chin."""
    img, l68 = _faces(1)[0]
    f = FaceFrame.from_landmarks(l68)
    a, b, c, d, e, fpt = six_anchors(f, WEARING_MODES["correct"])
    assert l68[27, 1] < b[1] < l68[30, 1]
    assert abs(a[1] - l68[30, 1]) < 0.1 * f.length and abs(c[1] - l68[30, 1]) < 0.1 * f.length
    assert a[0] < l68[30, 0] < c[0] and d[0] < l68[57, 0] < fpt[0]
    assert e[1] > l68[8, 1]
    low = six_anchors(f, WEARING_MODES["nose-out"])
    assert low[1, 1] > l68[33, 1]  # top edge under the nostrils


def test_homography_matches_opencv_least_squares():
    import cv2

    rng = np.random.default_rng(0)
    H = np.array([[1.2, 0.1, 5], [0.05, 0.9, -3], [1e-4, 2e-4, 1]])
    for _ in range(5):
        src = rng.uniform(0, 600, (6, 2))
        dst = cv2.perspectiveTransform(src[None], H)[0] + rng.normal(0, 1, (6, 2))
        ours = homography_lsq(src, dst)
        ref, _ = cv2.findHomography(src, dst, 0)
        np.testing.assert_allclose(cv2.perspectiveTransform(src[None], ours), cv2.perspectiveTransform(src[None], ref),
                                   atol=0.2)


def test_user_mistakes_are_one_line_errors(monkeypatch, tmp_path):
    with pytest.raises(MfrbenchError, match="Expected --mask-type in"):
        MTFConfig(mask_type="bandana")
    with pytest.raises(MfrbenchError, match="Expected --wearing in"):
        MTFConfig(wearing="forehead")
    with pytest.raises(MfrbenchError, match="Expected a colour like"):
        MTFConfig(color="#12345z")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        MTFGenerator(MTFConfig(templates_dir=str(tmp_path / "nope")))
    import mfrbench.paths

    load_kit.cache_clear()
    monkeypatch.setattr(mfrbench.paths, "data_root", lambda *a, **k: None)
    try:
        with pytest.raises(DataNotFoundError, match="MaskTheFace templates not found.*--mask-type plain"):
            MTFGenerator(MTFConfig(mask_type="surgical"))
        MTFGenerator(MTFConfig(mask_type="plain"))  # needs no kit
    finally:
        load_kit.cache_clear()


@pytest.mark.parametrize("mask_type", ["KN95", "N95", "surgical"])
def test_incorrect_fit_exposes_the_nose_on_turned_views(kit_gen, mask_type):
    """Turned views whose top edge rises past anchor b (KN95_left) are lowered until the nose
    tip is off the mask, so a nose-out label never shows a covered nose."""
    img, l68 = _faces(1)[0]
    for shift in (-0.55, 0.55):
        turned = l68.copy()
        nose = list(range(27, 36))
        jaw = l68[0:9, 0] if shift < 0 else l68[8:17, 0]
        turned[nose, 0] = l68[nose, 0] + abs(shift) * (jaw.mean() - l68[nose, 0])
        g = MTFGenerator(MTFConfig(mask_type=mask_type, wearing="nose-out"))
        _, m, info = g.mask_face(img, turned, np.random.default_rng(0))
        assert info["yaw_bin"] != "front"
        assert not _on_map(m, turned[[30]])[0] and not info["covers_nose"] and info["covers_mouth"]
