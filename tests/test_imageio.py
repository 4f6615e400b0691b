import io

import numpy as np
import pytest
from PIL import Image

from mfrbench.errors import SkipImage
from mfrbench.imageio import atomic_write_bytes, decode_rgb, load_rgb, save_image


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_modes_convert_to_uint8_rgb():
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    for mode in ("L", "P", "CMYK", "RGBA", "LA", "RGB"):
        img = Image.fromarray(rgb).convert(mode)
        buf = io.BytesIO()
        img.save(buf, format="TIFF" if mode == "CMYK" else "PNG")
        arr, src_mode = decode_rgb(buf.getvalue())
        assert arr.shape == (40, 50, 3) and arr.dtype == np.uint8
        assert src_mode == mode


def test_sixteen_bit_is_scaled_not_clipped():
    g16 = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    arr, mode = decode_rgb(_png(Image.fromarray(g16)))
    assert mode.startswith("I")
    expected = np.clip(g16.astype(np.float32) * 255 / 65535 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(arr[..., 0], expected)
    assert (arr == 255).mean() < 0.01  # clipping would saturate almost all of this ramp at 255


def test_rgba_transparent_becomes_white():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 3] = 0
    arr, _ = decode_rgb(_png(Image.fromarray(rgba, "RGBA")))
    assert (arr == 255).all()


@pytest.mark.parametrize("data,code", [
    (b"", "empty"),
    (b"hello, not an image", "not_image"),
    (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "corrupt"),
])
def test_bad_bytes_raise_skip(data, code):
    with pytest.raises(SkipImage) as err:
        decode_rgb(data)
    assert err.value.code == code


def test_truncated_jpeg_and_tiny_and_missing(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    with pytest.raises(SkipImage) as err:
        decode_rgb(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert err.value.code == "corrupt"
    with pytest.raises(SkipImage) as err:
        decode_rgb(_png(Image.fromarray(rgb[:10, :10])))
    assert err.value.code == "too_small"
    with pytest.raises(SkipImage) as err:
        load_rgb(tmp_path / "nope.jpg")
    assert err.value.code == "missing"


def test_exif_orientation_applied():
    rgb = np.zeros((40, 80, 3), np.uint8)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    arr, _ = decode_rgb(buf.getvalue())
    assert arr.shape[:2] == (80, 40)


def test_atomic_writes_leave_no_temp_files(tmp_path):
    save_image(tmp_path / "a" / "x.png", np.zeros((8, 8, 3), np.uint8))
    atomic_write_bytes(tmp_path / "a" / "y.bin", b"123")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.png", "y.bin"]
    assert load_rgb(tmp_path / "a" / "x.png", min_side=1).shape == (8, 8, 3)
