"""Robust image reading and atomic image writing.

Every pipeline reads pixels through :func:`load_rgb`, which turns the zoo of real-world files
into one thing (``uint8`` RGB, ``(H, W, 3)``) or raises :class:`~mfrbench.errors.SkipImage` with
a reason code. What is converted rather than skipped, and why:

* grayscale (``L``/``LA``, e.g. the LFW-a images), palette (``P``) and CMYK -> RGB: the pixels
  are fine, only the storage differs;
* RGBA / LA -> composited over white: ``convert("RGB")`` would paint transparent areas black,
  which a face detector reads as hair or background edges;
* 16-bit (``I;16``, ``I``) -> scaled to 8 bits by the maximum of the type, not clipped (PIL's
  own conversion clips everything above 255 to white);
* EXIF orientation is applied, so phone photos are upright.

Skipped: unreadable paths (``unreadable``), non-images (``not_image``), corrupt or truncated
files (``corrupt``), images smaller than ``min_side`` (``too_small``), empty files (``empty``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mfrbench.errors import SkipImage

Image.MAX_IMAGE_PIXELS = 20000 * 20000  # real photos only; still guards decompression bombs
_MAGIC = (b"\xff\xd8", b"\x89PNG", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def is_image_name(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTS)


def read_bytes(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as err:
        raise SkipImage("missing", f"{path} does not exist") from err
    except OSError as err:
        raise SkipImage("unreadable", f"{path}: {err.strerror or err}") from err


def content_hash(data: bytes) -> str:
    """Content hash of a file's bytes (sha1: fast, and collisions are irrelevant here)."""
    return hashlib.sha1(data).hexdigest()


def decode_rgb(data: bytes, *, min_side: int = 32, name: str = "image") -> tuple[np.ndarray, str]:
    """Decode bytes to ``(H, W, 3) uint8`` RGB; return the array and the source PIL mode."""
    import io

    if not data:
        raise SkipImage("empty", f"{name} is an empty file")
    try:
        img = Image.open(io.BytesIO(data))
        mode = img.mode
        img.load()  # force the full decode: truncated files fail here, not later
    except UnidentifiedImageError as err:
        if data.startswith(_MAGIC):  # the header says image, the body does not decode
            raise SkipImage("corrupt", f"{name} has an image header but does not decode") from err
        raise SkipImage("not_image", f"{name} is not an image PIL can read") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise SkipImage("corrupt", f"{name}: {err}") from err
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF must not lose an otherwise good image
        pass
    if img.width < min_side or img.height < min_side:
        raise SkipImage("too_small", f"{name} is {img.width}x{img.height}, below {min_side} px")
    return to_rgb_array(img), mode


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert any PIL image mode to ``uint8`` RGB (see the module docstring for the rules)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr.astype(np.float32) * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        hi = 1.0 if arr.max() <= 1.0 else 255.0
        arr = np.clip(arr * (255.0 / hi) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def load_rgb(path: str | os.PathLike, *, min_side: int = 32) -> np.ndarray:
    """Read ``path`` as ``uint8`` RGB ``(H, W, 3)`` or raise :class:`SkipImage`."""
    return decode_rgb(read_bytes(path), min_side=min_side, name=str(path))[0]


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` only when the block ends without an error.

    The one atomic-write primitive of the code base (temp file in the same folder + ``os.replace``):
    readers never see half a file, and a kill mid-write leaves the previous version.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_writer`)."""
    with atomic_writer(path) as f:
        f.write(data)


def encode_image(rgb: np.ndarray, ext: str, *, quality: int = 95) -> bytes:
    """Encode ``uint8`` RGB (or single-channel) to bytes in the format given by ``ext``."""
    import cv2

    arr = rgb if rgb.ndim == 2 else rgb[..., ::-1]
    ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(arr), params)
    if not ok:
        raise OSError(f"could not encode image as {ext}")
    return buf.tobytes()


def save_image(path: str | os.PathLike, rgb: np.ndarray, *, quality: int = 95) -> None:
    """Atomically write ``uint8`` RGB (or a single-channel map) to ``path``."""
    atomic_write_bytes(path, encode_image(rgb, Path(path).suffix, quality=quality))
