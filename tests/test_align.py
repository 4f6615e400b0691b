import numpy as np
import pytest

from mfrbench.align import ARCFACE_TEMPLATE, AlignConfig, align_dataset, norm_crop, transform_points, umeyama_similarity
from mfrbench.datasets import create_dataset
from mfrbench.manifest import read_manifest, read_manifest_meta


def test_umeyama_recovers_a_similarity_exactly():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    ang, s, t = 0.3, 1.7, np.array([12.0, -5.0])
    R = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = src @ R.T + t
    M = umeyama_similarity(src, dst)
    np.testing.assert_allclose(M[:, :2], R, atol=1e-4)
    np.testing.assert_allclose(M[:, 2], t, atol=1e-3)


def test_umeyama_is_least_squares_over_all_points():
    """With noise, every point influences the fit (RANSAC would drop some): residuals sum to 0."""
    rng = np.random.default_rng(1)
    src = ARCFACE_TEMPLATE * 2 + 30
    dst = ARCFACE_TEMPLATE + rng.normal(0, 2.0, (5, 2))
    M = umeyama_similarity(src, dst)
    res = transform_points(M, src) - dst
    np.testing.assert_allclose(res.sum(0), 0, atol=1e-3)  # the centroid is matched exactly
    assert np.all(np.abs(res) > 1e-4)  # and no point is fitted exactly (nothing was dropped)


def test_norm_crop_puts_landmarks_on_template():
    """Dots drawn at template-shaped landmarks (rotated, scaled, shifted) land on the template."""
    import cv2

    ang, s, t = -0.4, 2.3, np.array([40.0, 25.0])
    R = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = ARCFACE_TEMPLATE @ R.T + t
    img = np.zeros((400, 400, 3), np.uint8)
    for x, y in pts:
        cv2.circle(img, (int(round(x)), int(round(y))), 6, (255, 255, 255), -1)
    crop, M = norm_crop(img, pts)
    assert crop.shape == (112, 112, 3)
    np.testing.assert_allclose(transform_points(M, pts), ARCFACE_TEMPLATE, atol=1e-3)
    for x, y in ARCFACE_TEMPLATE:  # the drawn dots are where the template says
        assert crop[int(round(y)), int(round(x))].min() > 200


def test_align_synthetic_uses_known_landmarks(tmp_path):
    ds = create_dataset("synthetic", tmp_path / "s", identities=3, per_identity=2)
    meta = align_dataset(ds, tmp_path / "out", progress=False)
    assert (meta["inputs"], meta["ok"], meta["synthetic"]) == (6, 6, True)
    df = read_manifest(tmp_path / "out")
    assert set(df.lmk_source) == {"annotation"} and set(df.source) == {"synthetic"}
    assert len(df.lmk68_crop[0]) == 136


def test_broken_files_all_accounted_for(broken_dir, models_root, tmp_path):
    ds = create_dataset("folder", broken_dir)
    n = ds.count()
    meta = align_dataset(ds, tmp_path / "out", progress=False)
    df = read_manifest(tmp_path / "out")
    assert meta["inputs"] == n == len(df) == meta["ok"] + meta["skipped"]
    status = dict(zip(df.key.str.split("/").str[1], df.status))
    reasons = dict(zip(df.key.str.split("/").str[1], df.reason.str.split(":").str[0]))
    for name, st in status.items():
        assert st == ("ok" if name.startswith("ok_") else "skipped"), (name, st, reasons[name])
    assert reasons["bad_empty.jpg"] == "empty"
    assert reasons["bad_truncated.jpg"] == "corrupt"
    assert reasons["bad_corrupt.jpg"] == "corrupt"
    assert reasons["bad_notimage.png"] == "not_image"
    assert reasons["bad_tiny.png"] == "too_small"
    assert reasons["bad_noface.png"] == "no_face"
    assert reasons["dup_copy.jpg"] == "duplicate"
    ok = df[df.status == "ok"]
    assert set(ok.src_mode) >= {"L", "CMYK", "RGBA", "RGB"}
    for p in ok.abs_out_path:
        assert (tmp_path / "out" / p).exists()
    assert not (tmp_path / "out" / "images" / "person_b" / "dup_copy.jpg").exists()


def test_resume_after_kill_completes_without_redoing(tmp_path, models_root, celeba_root):
    ds = create_dataset("celeba", celeba_root)
    out = tmp_path / "out"
    align_dataset(ds, out, limit=6, progress=False)
    lines = (out / "rows.jsonl").read_text().splitlines(keepends=True)
    # simulate a kill: journal holds 3 full rows and half a row, no final CSV
    (out / "rows.jsonl").write_text("".join(lines[:3]) + lines[3][:25])
    (out / "manifest.csv").unlink()
    first = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.jpg")}
    meta = align_dataset(ds, out, limit=6, progress=False)
    assert meta["inputs"] == 6 and meta["ok"] == 6
    df = read_manifest(out)
    assert df.key.is_unique and len(df) == 6
    redone = [p for p, t in first.items() if p.stat().st_mtime_ns != t]
    assert len(redone) == 3  # rows 4-6 redone, rows 1-3 kept
    assert read_manifest_meta(out)["finished"]


@pytest.mark.parametrize("dataset", ["celeba", "lfw"])
def test_real_data_align_is_eye_aligned(dataset, kit, models_root, tmp_path):
    ds = create_dataset(dataset)
    meta = align_dataset(ds, tmp_path / dataset, limit=40, workers=2, progress=False)
    assert meta["inputs"] == 40 and meta["ok"] + meta["skipped"] == 40 and meta["ok"] >= 38
    df = read_manifest(tmp_path / dataset, status="ok")
    l5 = np.stack([np.array(v).reshape(5, 2) for v in df.lmk5_crop])
    # eyes land on the template's eye row; the crop is level and the right size
    assert np.median(np.abs(l5[:, :2] - ARCFACE_TEMPLATE[:2]).max(axis=(1, 2))) < 3.0
    from mfrbench.imageio import load_rgb

    assert load_rgb(df.abs_out_path[0]).shape == (112, 112, 3)
    assert df.lmk68.map(len).eq(136).all()


def test_workers_give_identical_outputs(tmp_path, models_root, celeba_root):
    ds = create_dataset("celeba", celeba_root)
    align_dataset(ds, tmp_path / "w1", limit=8, workers=1, progress=False)
    align_dataset(ds, tmp_path / "w2", limit=8, workers=2, progress=False)
    a, b = read_manifest(tmp_path / "w1"), read_manifest(tmp_path / "w2")
    assert a.key.tolist() == b.key.tolist() and a.lmk5.tolist() == b.lmk5.tolist()
    for p in a.out_path:
        assert (tmp_path / "w1" / p).read_bytes() == (tmp_path / "w2" / p).read_bytes()


def test_annotations_mode_without_annotations_skips(tmp_path, celeba_root):
    meta = align_dataset(create_dataset("celeba", celeba_root), tmp_path / "o", limit=2,
                         cfg=AlignConfig(landmarks="annotations"), progress=False)
    assert meta["skip_reasons"] == {"no_annotation": 2}
