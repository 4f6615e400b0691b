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
files (``corrupt``), images smaller than ``min_side`` (``too_small``), empty files (``empty``), and
anything that is not a regular file (:func:`file_problem`: ``not_regular`` for a FIFO or device,
``symlink_loop``, ``dangling_link``, ``missing``): only regular files are ever read.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
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


def file_problem(path: str | os.PathLike) -> SkipImage | None:
    """Why ``path`` cannot be read as an input file, or ``None`` when it is a regular file.

    The one classification of inputs that are not regular files: a FIFO or a device (which
    ``open`` + ``read`` would block on or read forever), a symlink loop, a dangling symlink, a
    missing or unreadable path. Listings attach it to their records; :func:`read_bytes` applies it
    again to what it opens.
    """
    try:
        st = os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return SkipImage("symlink_loop", f"{path} is a symlink loop")
        if err.errno == errno.ENOENT and os.path.islink(path):
            return SkipImage("dangling_link", f"{path} is a symlink to {os.readlink(path)}, which does not exist")
        if err.errno == errno.ENOENT:
            return SkipImage("missing", f"{path} does not exist")
        return SkipImage("unreadable", f"{path}: {err.strerror or err}")
    if not stat.S_ISREG(st.st_mode):
        return SkipImage("not_regular", f"{path} is {_kind(st.st_mode)}, not a regular file")
    return None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of the regular file ``path``, or :class:`SkipImage` (see :func:`file_problem`).

    Opened non-blocking and checked with ``fstat`` on the open descriptor, so a FIFO named
    ``*.jpg`` is refused instead of hanging the run, even if it replaced a file after listing.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise (file_problem(path) or SkipImage("unreadable", f"{path}: {err.strerror or err}")) from err
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SkipImage("not_regular", f"{path} is {_kind(mode)}, not a regular file")
        try:
            return f.read()
        except OSError as err:
            raise SkipImage("unreadable", f"{path}: {err.strerror or err}") from err


def printable_name(name: str) -> str:
    """``name`` with the bytes of a file name that is not UTF-8 written as ``\\xNN`` (what a UTF-8 CSV can hold).

    Python hands such names (a latin-1 name from an old archive) over as strings with surrogates, which
    UTF-8 files refuse and some libraries crash on (``cv2.imread``).
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def output_rel(key: str, ext: str, folder: str = "images") -> str:
    """The output path (relative, POSIX) of the input ``key`` written in format ``ext``, under ``folder``.

    Unique per key, so no two inputs share an output file, and readable from the key: the whole
    file name is kept and ``ext`` is added only when the input's own extension differs (case aside)
    (``p1/face.jpg`` -> ``images/p1/face.jpg``, ``p1/face.png`` -> ``images/p1/face.png.jpg``,
    ``p1/shot.v1.jpg`` -> ``images/p1/shot.v1.jpg``). The one name this leaves ambiguous, a key that is
    another image name plus ``ext`` (``x.png.jpg`` next to ``x.png``), gets 8 hex digits of the key's
    hash before ``ext``. Whether the result stays inside the output folder is :func:`safe_output_path`'s
    check.
    """
    ext = ext if ext.startswith(".") else "." + ext
    name = key
    if not name.lower().endswith(ext.lower()):
        name += ext
    elif is_image_name(name[: -len(ext)]):
        name = f"{name[: -len(ext)]}.{hashlib.sha1(key.encode()).hexdigest()[:8]}{ext}"
    return f"{folder}/{name}" if folder else name


def sibling_rel(out_rel: str, folder: str, ext: str) -> str:
    """The path of a companion output (a mask map) of the output ``out_rel``: same name, ``folder`` and ``ext``.

    ``images/p1/face.png.jpg`` -> ``maps/p1/face.png.png``: unique because the outputs it derives from are.
    """
    _, _, rest = out_rel.partition("/")
    return f"{folder}/{rest[: rest.rfind('.')]}{ext}"


def safe_output_path(out_dir: str | os.PathLike, rel: str) -> Path:
    """``out_dir / rel``, refused unless it lies inside ``out_dir`` once resolved.

    A key such as ``../../x.jpg`` or ``/etc/x.jpg`` (a hand-edited or hostile manifest), or a symlink
    inside ``out_dir`` that points elsewhere, would otherwise write outside the output folder. Empty,
    ``.`` and ``..`` parts are refused even where the path stays inside (``p1/../p2/x.jpg`` would take
    ``p2/x.jpg``'s file, ``images//etc/x.jpg`` is what an absolute key becomes).

    Raises:
        SkipImage: ``unsafe_path``; the input becomes a skipped row and nothing is written.
    """
    base = Path(out_dir).resolve()
    target = (base / rel).resolve()
    if rel.startswith("/") or any(part in ("", ".", "..") for part in rel.split("/")) \
            or base not in target.parents:
        raise SkipImage("unsafe_path", f"output {rel!r} would lie outside the output folder {base}")
    return target


def refuse_output_inside(out_dir: str | os.PathLike, root: str | os.PathLike) -> None:
    """Refuse an output folder inside the folder the inputs are listed from (``--out`` under ``--root``).

    Its outputs would be listed as inputs the next time (an ``images`` identity, masked crops masked
    again), and a rerun would no longer match its own manifest.

    Raises:
        MfrbenchError: ``out_dir`` is ``root`` or lies inside it.
    """
    from mfrbench.errors import MfrbenchError

    out, base = Path(out_dir).resolve(), Path(root).resolve()
    if out == base or base in out.parents:
        raise MfrbenchError(f"the output folder {out_dir} lies inside the input folder {root}: the next run would "
                            "read its outputs as inputs; choose an --out outside it")


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
