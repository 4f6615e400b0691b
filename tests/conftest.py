"""Shared fixtures: the data kit (skipped with a clear message when absent) and bad inputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mfrbench.paths import data_root


@pytest.fixture(scope="session")
def kit() -> Path:
    """The shared data kit root; tests needing real data skip when it is absent."""
    root = data_root()
    if root is None:
        pytest.skip("shared data kit not found (set MFRBENCH_DATA or place it at ../shared/data)")
    return root


def _kit_sub(kit: Path, name: str) -> Path:
    p = kit / name
    if not p.exists():
        pytest.skip(f"{name}/ not in the data kit at {kit}")
    return p


@pytest.fixture(scope="session")
def celeba_root(kit: Path) -> Path:
    return _kit_sub(kit, "celeba")


@pytest.fixture(scope="session")
def lfw_root(kit: Path) -> Path:
    return _kit_sub(kit, "lfw")


@pytest.fixture(scope="session")
def rmfrd_root(kit: Path) -> Path:
    return _kit_sub(kit, "rmfrd")


@pytest.fixture(scope="session")
def masked_photos_root(kit: Path) -> Path:
    return _kit_sub(kit, "masked-faces")


@pytest.fixture(scope="session")
def models_root(kit: Path) -> Path:
    p = _kit_sub(kit, "models")
    if not (p / "yunet" / "face_detection_yunet_2023mar.onnx").is_file():
        pytest.skip("YuNet model not in the data kit")
    return p


def face_photo() -> np.ndarray:
    """A real one-face photo that needs no data kit (scikit-image's astronaut, public domain)."""
    from skimage import data

    return data.astronaut()


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **kw)
    return buf.getvalue()


@pytest.fixture()
def broken_dir(tmp_path: Path) -> Path:
    """An identity-folder tree holding every kind of bad (and awkward-but-fine) input.

    Good-but-awkward files (must end ``ok``): grayscale, CMYK, RGBA, 16-bit, a ``.jpeg``.
    Bad files (must end ``skipped`` with the reason in the name): empty, truncated, corrupt,
    not an image, tiny, no face, duplicate.
    """
    face = face_photo()
    d = tmp_path / "broken"
    a, b = d / "person_a", d / "person_b"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    good = _jpeg(face, quality=92)
    (a / "ok_rgb.jpg").write_bytes(good)
    (a / "ok_ext.jpeg").write_bytes(_jpeg(face, quality=80))
    Image.fromarray(face).convert("L").save(a / "ok_gray.png")
    Image.fromarray(face).convert("CMYK").save(a / "ok_cmyk.jpg")
    rgba = np.dstack([face, np.full(face.shape[:2], 255, np.uint8)])
    rgba[:40, :40, 3] = 0
    Image.fromarray(rgba, "RGBA").save(a / "ok_rgba.png")
    gray16 = np.asarray(Image.fromarray(face).convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray16).save(b / "ok_16bit.png")
    (b / "bad_empty.jpg").write_bytes(b"")
    (b / "bad_truncated.jpg").write_bytes(good[: len(good) // 2])
    (b / "bad_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20)
    (b / "bad_notimage.png").write_text("this is not an image\n")
    Image.fromarray(face[:20, :20]).save(b / "bad_tiny.png")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(b / "bad_noface.png")
    (b / "dup_copy.jpg").write_bytes(good)  # same bytes as person_a/ok_rgb.jpg
    return d


def synthetic_aligned(tmp: Path) -> Path:
    """``mfrbench synth`` (3 identities x 2) into ``tmp/s``, aligned into ``tmp/a``; returns ``tmp/a``."""
    from click.testing import CliRunner

    from mfrbench.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["synth", "--out", str(tmp / "s"), "--identities", "3", "--per-identity", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["align", "--dataset", "synthetic", "--root", str(tmp / "s"), "--out", str(tmp / "a"),
                              "--no-grid"])
    assert res.exit_code == 0, res.output
    return tmp / "a"
