"""insightface verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...), read without running code.

A ``.bin`` is a pickle of ``(bins, issame_list)``: ``bins`` holds 2·P encoded images (JPEG bytes;
Python 2 ``str`` in the public files), images ``2i`` and ``2i + 1`` form pair ``i``, and
``issame_list`` holds P booleans (``../shared/reference/formats.md``). insightface's
``recognition/arcface_torch/eval/verification.py`` writes them with
``pickle.dump((bins, issame_list), f, protocol=pickle.HIGHEST_PROTOCOL)`` and scores them as:

* every image decoded to 112x112 RGB, embedded as is and mirrored; the two embeddings summed,
  then L2-normalised;
* 10 folds of consecutive pairs (``sklearn.model_selection.KFold(10, shuffle=False)``: the first
  ``P % 10`` folds one pair longer); on each fold, the threshold on the squared distance that is
  best on the other 9 folds (a grid ``0, 0.01, ..., 3.99``; ``dist < t`` accepts) scores the fold;
  accuracy = mean (and std) over the 10 folds.

``mfrbench eval`` runs the same protocol through :mod:`mfrbench.protocols` (``--benchmark bin:PATH``
or a named set such as ``cfp-fp``) with one change: the threshold is taken from the sorted unique
training scores instead of the 0.01 grid (:mod:`mfrbench.metrics.verification`), so it does not
depend on the score scale. :func:`arcface_accuracy` is arcface_torch's grid version, for
comparing with published numbers.

A file a user points at is untrusted: :class:`BinUnpickler` refuses every global except numpy's
array, dtype and scalar constructors (boolean and integer dtypes only) and ``latin1`` bytes, so
a pickle that asks for anything else (a function to call) is a one-line error, and nothing in
the file runs.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfrbench.errors import MfrbenchError

#: the standard files: benchmark name -> file name (insightface's training-set folders ship them)
BIN_SETS = {"lfw-bin": "lfw.bin", "cfp-fp": "cfp_fp.bin", "cfp-ff": "cfp_ff.bin", "agedb-30": "agedb_30.bin",
            "calfw": "calfw.bin", "cplfw": "cplfw.bin", "vgg2-fp": "vgg2_fp.bin"}
SIZE = 112


# ------------------------------------------------------------------------------ restricted unpickling
class Refused(pickle.UnpicklingError):
    """The pickle asks for something a verification set never holds (a global, an object array)."""


def _dtype(spec: Any, *args: Any) -> np.dtype:
    dt = np.dtype(spec)
    if dt.kind not in "biu":  # bool labels and uint8 image buffers; never object arrays
        raise Refused(f"numpy dtype {dt.str!r} refused (only boolean and integer arrays)")
    return np.dtype(spec, *args)


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, and nothing else."""
    if encoding != "latin1" or not isinstance(text, str):
        raise Refused(f"_codecs.encode with {encoding!r} refused")
    return codecs.encode(text, "latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _dtype,
                                       ("_codecs", "encode"): _latin1}
    for pkg in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 pickles name different packages
        out[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{pkg}.multiarray", "scalar")] = multiarray.scalar
        out[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer
    return out


class BinUnpickler(pickle.Unpickler):
    """Unpickles lists, tuples, bytes, str, bools, ints, and boolean/integer numpy arrays; refuses every
    other global, so no code named by the file is ever called."""

    _ALLOWED = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise Refused(f"global {module}.{name} refused") from None

    def persistent_load(self, pid: Any) -> Any:
        raise Refused("persistent ids refused")


def safe_load(data: bytes, *, where: str = "the file") -> Any:
    """Unpickle ``data`` with :class:`BinUnpickler` (Python 2 ``str`` read as bytes); one-line errors."""
    try:
        return BinUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Refused as err:
        raise MfrbenchError(f"{where}: refused to unpickle it ({err}); a verification .bin holds only images "
                            "and booleans, so nothing else is loaded") from None
    except Exception as err:  # truncated, not a pickle, a refused dtype raised from numpy
        raise MfrbenchError(f"{where} is not a readable verification .bin ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''})") from None


# ------------------------------------------------------------------------------------ the set
@dataclass(frozen=True)
class VerificationBin:
    """A verification set: ``images[2i]``/``images[2i + 1]`` (encoded bytes) form pair ``i``."""

    images: list[bytes]
    issame: np.ndarray      # (P,) bool
    path: str = ""

    @property
    def n_pairs(self) -> int:
        return len(self.issame)

    def digests(self) -> list[str]:
        """SHA-1 of each encoded image (10 hex digits): names a crop by its content."""
        return [hashlib.sha1(b).hexdigest()[:10] for b in self.images]


def _as_bytes(x: Any) -> bytes | None:
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 1:  # some writers store uint8 buffers
        return x.tobytes()
    return None


def _as_bool(x: Any) -> bool | None:
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)) and int(x) in (0, 1):
        return bool(x)
    return None


def parse_bin(obj: Any, *, where: str = "the file") -> VerificationBin:
    """Check an unpickled ``(bins, issame_list)`` and return it as a :class:`VerificationBin`."""
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        got = f"a {type(obj).__name__} of length {len(obj)}" if isinstance(obj, (tuple, list)) else type(obj).__name__
        raise MfrbenchError(f"{where}: expected a pair (images, issame_list), but got {got}")
    bins, same = obj
    same = list(same) if isinstance(same, (list, tuple, np.ndarray)) else None
    if same is None:
        raise MfrbenchError(f"{where}: expected issame_list to be a list of booleans, but got {type(obj[1]).__name__}")
    flags = [_as_bool(s) for s in same]
    if any(f is None for f in flags):
        bad = next(s for s, f in zip(same, flags) if f is None)
        raise MfrbenchError(f"{where}: expected issame_list to hold booleans, but found {bad!r}")
    if not isinstance(bins, (list, tuple)):
        raise MfrbenchError(f"{where}: expected a list of encoded images, but got {type(bins).__name__}")
    images = [_as_bytes(b) for b in bins]
    if any(b is None for b in images):
        bad = next(type(b).__name__ for b, i in zip(bins, images) if i is None)
        raise MfrbenchError(f"{where}: expected every image to be encoded bytes, but found a {bad}")
    if len(images) != 2 * len(flags) or not flags:
        raise MfrbenchError(f"{where}: expected 2 images per pair, but got {len(images)} images for "
                            f"{len(flags)} pairs")
    return VerificationBin(images, np.array(flags, bool), where)


def read_bin(path: str | os.PathLike) -> VerificationBin:
    """Read a verification ``.bin`` (restricted unpickler: nothing in the file runs)."""
    p = Path(path)
    if not p.is_file():
        raise MfrbenchError(f"verification set {p} not found")
    vb = parse_bin(safe_load(p.read_bytes(), where=str(p)), where=str(p))
    return VerificationBin(vb.images, vb.issame, str(p.resolve()))


def write_bin(path: str | os.PathLike, images: list[bytes], issame: list[bool]) -> Path:
    """Write a ``.bin`` as arcface_torch's tools do (a pickle of ``(bins, issame_list)``, highest protocol)."""
    p = Path(path)
    parse_bin((list(images), list(issame)), where=str(p))
    with open(p, "wb") as f:
        pickle.dump((list(images), [bool(s) for s in issame]), f, protocol=pickle.HIGHEST_PROTOCOL)
    return p


def decode_rgb(data: bytes) -> np.ndarray | None:
    """An encoded image as (112, 112, 3) uint8 RGB (resized when another size), or None if it does not decode."""
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    if bgr.shape[:2] != (SIZE, SIZE):
        bgr = cv2.resize(bgr, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(bgr[..., ::-1])


def write_crops(vb: VerificationBin, folder: str | os.PathLike, keys: list[str]) -> dict[str, str]:
    """Write image i as ``folder/<keys[i]>.jpg`` (its bytes as they are when it is a 112x112 JPEG, else
    re-encoded as PNG); returns key -> path ('' for an image that does not decode). Existing files are kept."""
    import cv2

    from mfrbench.imageio import atomic_write_bytes

    out_dir = Path(folder)
    out: dict[str, str] = {}
    for key, data in zip(keys, vb.images):
        jpg, png = out_dir / f"{key}.jpg", out_dir / f"{key}.png"
        if jpg.is_file() or png.is_file():
            out[key] = str(jpg if jpg.is_file() else png)
            continue
        rgb = decode_rgb(data)
        if rgb is None:
            out[key] = ""
            continue
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if data[:3] == b"\xff\xd8\xff" and raw is not None and raw.shape[:2] == (SIZE, SIZE) and raw.ndim == 3:
            atomic_write_bytes(jpg, data)
            out[key] = str(jpg)
        else:  # another size, grey or another format: the decoded RGB crop, losslessly
            atomic_write_bytes(png, cv2.imencode(".png", rgb[..., ::-1])[1].tobytes())
            out[key] = str(png)
    return out


def pair_groups(vb: VerificationBin) -> np.ndarray:
    """A group id per image: connected components of genuine pairs and byte-identical images.

    A ``.bin`` names nobody; these groups stand in for identities (the identity-bootstrap CIs
    resample them). The same person in two unlinked pairs falls in two groups, so the CIs can be
    a little narrow.
    """
    n = len(vb.images)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    for i in np.flatnonzero(vb.issame):
        union(2 * i, 2 * i + 1)
    first: dict[str, int] = {}
    for i, d in enumerate(vb.digests()):
        union(first.setdefault(d, i), i)
    roots = np.array([find(i) for i in range(n)])
    return np.unique(roots, return_inverse=True)[1]


def kfold_folds(n_pairs: int, n_folds: int = 10) -> np.ndarray:
    """Fold of each pair as ``sklearn.model_selection.KFold(n_folds, shuffle=False)`` splits them.

    Example:
        >>> kfold_folds(12, 5).tolist()
        [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4]
    """
    sizes = np.full(n_folds, n_pairs // n_folds)
    sizes[: n_pairs % n_folds] += 1
    return np.repeat(np.arange(n_folds), sizes)


def arcface_accuracy(embeddings: np.ndarray, issame: np.ndarray, *, n_folds: int = 10) -> tuple[float, float]:
    """arcface_torch's verification accuracy (mean, std over folds) of image-order embeddings.

    ``embeddings``: (2P, D), row ``2i``/``2i + 1`` the pair ``i`` (flip-summed as arcface_torch does;
    normalised here). Thresholds: the grid ``0, 0.01, ..., 3.99`` on the squared distance, the first best
    on the other folds; ``dist < t`` accepts.
    """
    e = np.asarray(embeddings, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    same = np.asarray(issame, bool)
    dist = ((e[0::2] - e[1::2]) ** 2).sum(1)
    if len(dist) != len(same):
        raise ValueError(f"Expected {2 * len(same)} embeddings for {len(same)} pairs, but got {len(e)}")
    grid = np.arange(0, 4, 0.01)
    correct = (dist[:, None] < grid[None, :]) == same[:, None]     # (P, thresholds)
    folds = kfold_folds(len(same), n_folds)
    acc = np.zeros(n_folds)
    for k in range(n_folds):
        train, test = folds != k, folds == k
        best = int(np.argmax(correct[train].mean(0)))
        acc[k] = correct[test, best].mean()
    return float(acc.mean()), float(acc.std())
