"""The gallery of bad inputs the ``test_bad_input_*`` sweep runs every command over (issue 12).

:func:`make_gallery` writes an ``<identity>/<image>`` tree of tiny synthetic images: good-but-awkward
files (must end ``ok``) and bad ones (must end ``skipped`` with a known reason code), and returns what
each input must become. :func:`fixed_face_plugins` registers a detector and a landmark model that find
one face in the middle of any image, so the sweep needs no data kit and no model file.

The tests here check the gallery itself at the two layers every command reads through: the listing
(every entry becomes one record, nothing hangs or raises) and :func:`mfrbench.imageio.read_bytes` /
``decode_rgb`` (each file gets its expected outcome).
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mfrbench.datasets import create_dataset
from mfrbench.errors import SkipImage
from mfrbench.imageio import decode_rgb, read_bytes

FIXED = "fixed-test"  # the detector / landmark model name of fixed_face_plugins()
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _face(seed: int, size: int = 64) -> np.ndarray:
    from mfrbench.synthetic import _identity_params, render_face

    rng = np.random.default_rng(seed)
    return render_face(_identity_params(rng), rng, size=size)[0]


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _bomb_png(side: int = 40000) -> bytes:
    """A valid PNG header claiming ``side`` x ``side`` pixels (a decompression bomb) over a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED-by-gallery",))


MALICIOUS_PICKLE = pickle.dumps({"state": _Evil()})


def make_gallery(root: Path) -> dict[str, str]:
    """Write the gallery under ``root``; return ``{key: "ok" | reason code}`` for every input.

    Keys are paths relative to ``root`` (what the ``folder`` adapter calls them). Codes are those of
    :mod:`mfrbench.imageio` (and ``duplicate`` from the pipeline, ``no_identity`` from the listing).
    """
    p1, p2, p3 = root / "p1", root / "p2 spaced", root / "p3"
    for d in (p1, p2, p3):
        d.mkdir(parents=True)
    exp: dict[str, str] = {}

    def put(rel: str, data: bytes, expect: str) -> None:
        (root / rel).write_bytes(data)
        exp[rel] = expect

    a, b, c, d = _face(1), _face(2), _face(3), _face(4)
    put("p1/ok_rgb.jpg", _jpeg(a, quality=90), "ok")
    put("p1/ok_gray.png", _png(np.asarray(Image.fromarray(b).convert("L"))), "ok")
    cmyk = io.BytesIO()
    Image.fromarray(c).convert("CMYK").save(cmyk, format="JPEG")
    put("p1/ok_cmyk.jpg", cmyk.getvalue(), "ok")
    rgba = np.dstack([d, np.full(d.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    put("p1/ok_rgba.png", _png(rgba, "RGBA"), "ok")
    put("p1/ok_16bit.png", _png(np.asarray(Image.fromarray(a).convert("L")).astype(np.uint16) * 257), "ok")
    put("p1/ok name with spaces.jpg", _jpeg(b), "ok")
    put("p1/ünïcødé 名前.jpg", _jpeg(c), "ok")
    put("p1/shot.v1.jpg", _jpeg(d), "ok")  # several dots: two outputs, not one "shot.jpg"
    put("p1/shot.v2.jpg", _jpeg(_face(5)), "ok")
    put("p1/face.jpg", _jpeg(_face(6)), "ok")  # same stem, three extensions: three outputs
    put("p1/face.png", _png(_face(7)), "ok")
    put("p1/face.JPEG", _jpeg(_face(8)), "ok")
    put("p1/new\nline, \"quoted\"\ttab.jpg", _jpeg(_face(13)), "ok")  # CSV-hostile characters
    put("p1/-leading dash.jpg", _jpeg(_face(14)), "ok")
    with open(os.fsencode(p1) + b"/latin1-\xe9.jpg", "wb") as f:  # not UTF-8: no manifest can hold the name
        f.write(_jpeg(_face(15)))
    exp["p1/latin1-\\xe9.jpg"] = "bad_name"  # listed under its printable name
    put("p1/x.png", _png(_face(9)), "ok")  # a name that is another name plus the output extension
    put("p1/x.png.jpg", _jpeg(_face(10)), "ok")
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[1000:2000, 1500:2500] = np.asarray(Image.fromarray(_face(11)).resize((1000, 1000)))
    put("p3/huge.jpg", _jpeg(big, quality=70), "ok")

    good = _jpeg(a, quality=90)
    put("p2 spaced/empty.jpg", b"", "empty")
    put("p2 spaced/truncated.jpg", good[: len(good) // 2], "corrupt")
    put("p2 spaced/corrupt.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, "corrupt")
    put("p2 spaced/not_an_image.png", b"this is not an image\n", "not_image")
    put("p2 spaced/tiny.png", _png(a[:8, :8]), "too_small")
    put("p2 spaced/bomb.png", _bomb_png(), "corrupt")
    put("p2 spaced/pickle.jpg", MALICIOUS_PICKLE, "not_image")
    put("p2 spaced/dup_copy.jpg", good, "duplicate")  # same bytes as p1/ok_rgb.jpg
    os.mkfifo(p2 / "fifo.jpg")
    exp["p2 spaced/fifo.jpg"] = "not_regular"
    os.symlink("loop.jpg", p2 / "loop.jpg")
    exp["p2 spaced/loop.jpg"] = "symlink_loop"
    os.symlink("nowhere.jpg", p2 / "dangling.jpg")
    exp["p2 spaced/dangling.jpg"] = "dangling_link"
    (p2 / "sub").mkdir()
    os.symlink("../..", p2 / "sub" / "up")  # a folder loop: walked once, never forever
    if not IS_ROOT:  # root reads anything: no unreadable file to be had
        put("p2 spaced/unreadable.jpg", _jpeg(b), "unreadable")
        os.chmod(root / "p2 spaced/unreadable.jpg", 0)
    put("loose.jpg", _jpeg(_face(12)), "no_identity")  # outside any identity folder
    (p1 / "notes.txt").write_text("not an image name: not an input\n")
    (p1 / ".hidden.jpg").write_bytes(good)  # hidden: not an input
    return exp


def fixed_face_plugins() -> str:
    """Register (once) a detector and a landmark model that put one frontal face in the middle of any image."""
    from mfrbench.faces import DETECTORS, LANDMARKERS, Face
    from mfrbench.synthetic import _identity_params, five_from_68, landmarks68

    if FIXED in DETECTORS:
        return FIXED
    unit = landmarks68(_identity_params(np.random.default_rng(0)))  # face units, centre at eye level

    def points(shape) -> np.ndarray:
        h, w = shape[:2]
        return (unit * 0.9 * min(h, w) + [w / 2, 0.42 * h]).astype(np.float32)

    class _Det:
        name = FIXED

        def __init__(self, **kw) -> None:
            pass

        def detect(self, rgb):
            p = points(rgb.shape)
            return [Face(np.array([*p.min(0), *p.max(0)], np.float32), 0.99, five_from_68(p).astype(np.float32))]

    class _Lm:
        name = FIXED

        def landmarks(self, rgb, face):
            return points(rgb.shape)

    DETECTORS.register(lambda **kw: _Det(), name=FIXED)
    LANDMARKERS.register(lambda **kw: _Lm(), name=FIXED)
    return FIXED


@pytest.fixture()
def gallery(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "gallery"
    return root, make_gallery(root)


def test_listing_accounts_for_every_input_and_refuses_unreadable_ones_without_opening_them(gallery):
    root, exp = gallery
    recs = list(create_dataset("folder", root).records())
    assert sorted(r.key for r in recs) == sorted(exp)
    listed = {r.key: r.skip.split(":")[0] for r in recs if r.skip}
    assert listed == {k: v for k, v in exp.items()
                      if v in ("not_regular", "symlink_loop", "dangling_link", "no_identity", "bad_name")}


def test_every_gallery_file_reads_as_expected(gallery):
    """read_bytes + decode_rgb (what align/generate/quality/segment read through) give each file its outcome."""
    root, exp = gallery
    for key, want in exp.items():
        if want in ("duplicate", "no_identity"):  # decided by the pipeline / the listing, not by reading
            want = "ok"
        if want == "bad_name":  # the key is a printable stand-in, not the file's name
            continue
        try:
            decode_rgb(read_bytes(root / key), name=key)
            got = "ok"
        except SkipImage as skip:
            got = skip.code
        assert got == want, key


def test_read_bytes_refuses_a_fifo_that_replaced_a_listed_file(tmp_path):
    """The listing is not the only guard: a FIFO opened later is refused at open, not read (which would hang)."""
    os.mkfifo(tmp_path / "late.jpg")
    with pytest.raises(SkipImage, match=r"not_regular: .*late.jpg is a FIFO"):
        read_bytes(tmp_path / "late.jpg")


def test_flat_folder_to_the_folder_adapter_says_it_wants_identity_folders(tmp_path):
    from mfrbench.errors import MfrbenchError

    (tmp_path / "a.jpg").write_bytes(_jpeg(_face(1)))
    with pytest.raises(MfrbenchError, match=r"has no <identity>/ subfolders \(1 images directly inside\)"):
        create_dataset("folder", tmp_path)
