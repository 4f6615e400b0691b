"""Models that ``mfrbench eval`` can score: trained runs, ONNX files, and reference embedders.

:func:`load_model` resolves ``spec``:

* a registered reference embedder name (``mfrbench list`` -> ``reference-embedders``), today
  ``dlib``: dlib's ResNet (``<models>/dlib/dlib_face_recognition_resnet_model_v1.dat``, CC0,
  128-d, trained by Davis King on about 3M unmasked faces), runnable offline, so benchmarks
  work without training anything;
* ``insightface:PATH.onnx``: a user's insightface model-zoo recognizer, through
  ``insightface.model_zoo`` (:class:`InsightFaceEmbedder`, optional extra ``[insightface]``);
* a ``train-fr`` run directory, checkpoint or ``.onnx`` file, through the loader registered with
  :func:`register_run_loader` (the CLI registers :func:`mfrbench.recognizers.embed.load_embedder`;
  the core never imports the recognizers) or given as ``run_loader``.

Every model exposes ``embed(images uint8 (N, 112, 112, 3) RGB, *, flip=False) -> float32 (N, D)``,
``embedding_dim``, ``info`` (``backbone``, ``loss``, ``train_data``, ``generator``,
``config_hash``, ...) and ``metric`` (the similarity it was trained for: ``cosine`` unless
the model declares otherwise).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mfrbench.errors import MfrbenchError
from mfrbench.registry import Registry

REFERENCE_EMBEDDERS: Registry = Registry("reference embedder")

#: dlib's 150x150 chip, in the frame dlib.get_face_chip(padding=0.25) produces, for the five
#: ArcFace-order points (measured; ``../shared/data/models/README.md``).
DLIB_TEMPLATE = np.array([[45.36, 45.81], [103.81, 45.65], [75.54, 76.72], [51.43, 102.53], [100.06, 102.43]],
                         np.float32)
DLIB_CHIP = 150


def _file_hash(path: Path, n: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(n))
    h.update(str(path.stat().st_size).encode())
    return h.hexdigest()[:12]


class DlibEmbedder:
    """dlib's face-recognition ResNet over ArcFace-aligned 112x112 crops.

    dlib expects its own 150x150 chip: each crop is re-warped with the similarity transform
    taking the ArcFace template onto :data:`DLIB_TEMPLATE` (least squares; the two 5-point
    templates differ by about 3 px after the fit). dlib's chip reaches further down the chin than
    the ArcFace crop: its bottom 15 rows lie outside the crop and are black. Where the original
    photos are at hand, a chip cut from them is slightly better (models README); the crop route
    keeps masked and unmasked images on one path. dlib was trained for the
    Euclidean distance of raw descriptors (same person below 0.6), so ``metric`` is
    ``euclidean``; ``flip=True`` averages the descriptors of the crop and its mirror image.
    """

    metric = "euclidean"
    embedding_dim = 128

    def __init__(self, model: str | os.PathLike | None = None, batch_size: int = 16) -> None:
        try:
            import dlib
        except ImportError as err:
            raise MfrbenchError("the dlib reference embedder needs dlib: pip install dlib-bin") from err
        from mfrbench.align import ARCFACE_TEMPLATE, umeyama_similarity
        from mfrbench.paths import model_file

        path = Path(model) if model else model_file("dlib/dlib_face_recognition_resnet_model_v1.dat")
        if not path.is_file():
            raise MfrbenchError(f"no dlib model at {path}")
        self._net = dlib.face_recognition_model_v1(str(path))
        self._M = umeyama_similarity(ARCFACE_TEMPLATE, DLIB_TEMPLATE)
        self.batch_size = batch_size
        self.info: dict[str, Any] = {
            "model": "dlib", "backbone": "dlib-resnet29", "loss": "metric-loss (dlib)", "embedding_dim": 128,
            "train_data": "dlib (about 3M unmasked faces)", "generator": "none", "generator_family": "none",
            "generator_hash": "", "run_dir": "",
            "config_hash": _file_hash(path), "model_path": str(path), "metric": "euclidean",
        }

    def chips(self, images: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) ArcFace crops -> (N, 150, 150, 3) dlib chips."""
        import cv2

        return np.stack([cv2.warpAffine(im, self._M, (DLIB_CHIP, DLIB_CHIP), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT) for im in images])

    def embed(self, images: np.ndarray, *, flip: bool = False) -> np.ndarray:
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
                or images.shape[1:] != (112, 112, 3):
            got = f"{images.dtype} array of shape {images.shape}" if isinstance(images, np.ndarray) else type(images)
            raise ValueError(f"Expected uint8 images of shape (N, 112, 112, 3) RGB, but got {got}")
        out = np.zeros((len(images), 128), np.float32)
        for i in range(0, len(images), self.batch_size):
            chips = self.chips(images[i:i + self.batch_size])
            emb = np.asarray(self._net.compute_face_descriptor(list(chips)), np.float32)
            if flip:
                emb = (emb + np.asarray(self._net.compute_face_descriptor(
                    [np.ascontiguousarray(c[:, ::-1]) for c in chips]), np.float32)) / 2
            out[i:i + len(chips)] = emb
        return out


@REFERENCE_EMBEDDERS.register
def dlib(**kw) -> DlibEmbedder:
    """dlib ResNet (CC0, 128-d, Euclidean), from ``<models>/dlib/``."""
    return DlibEmbedder(**kw)


# --------------------------------------------------------------------------- insightface interop (issue 15)
INSIGHTFACE_PREFIX = "insightface:"


class InsightFaceEmbedder:
    """A user's insightface model-zoo recognizer (``w600k_r50.onnx``, ``glintr100.onnx``, ...) through
    ``insightface.model_zoo`` (``pip install 'mfrbench[insightface]'``; ``eval --model insightface:FILE.onnx``).

    insightface's own ``ArcFaceONNX.get_feat`` does the preprocessing (BGR in, RGB to the network, its
    ``(x - 127.5) / 127.5`` unless the graph normalises itself), so a model behaves as it does in
    insightface; on an ONNX file of ours it gives our ONNX path's embeddings (tests/test_insightface_interop.py).
    Raw embeddings, cosine similarity; ``flip=True`` adds the mirrored crop's embedding.
    """

    metric = "cosine"

    def __init__(self, path: str | os.PathLike, batch_size: int = 64, device: str | None = None) -> None:
        try:
            from insightface import model_zoo
        except ImportError as err:
            raise MfrbenchError("--model insightface:FILE needs insightface: pip install 'mfrbench[insightface]'") \
                from err
        from mfrbench.runs import choose_device

        p = Path(path).expanduser()
        if not p.is_file():
            raise MfrbenchError(f"no insightface model at {p} (give --model insightface:PATH.onnx)")
        cuda = choose_device(device).type == "cuda"
        providers = (["CUDAExecutionProvider"] if cuda else []) + ["CPUExecutionProvider"]
        m = model_zoo.get_model(str(p), providers=providers)
        if m is None or not hasattr(m, "get_feat"):
            raise MfrbenchError(f"{p} is not a recognizer: insightface.model_zoo reads it as "
                                f"{getattr(m, 'taskname', type(m).__name__)}")
        m.prepare(ctx_id=0 if cuda else -1)
        self._m = m
        self.batch_size = batch_size
        self.embedding_dim = int(m.output_shape[1])
        self.info: dict[str, Any] = {
            "model": f"insightface:{p.name}", "backbone": f"insightface:{p.stem}", "loss": "",
            "embedding_dim": self.embedding_dim, "train_data": "", "generator": "none", "generator_family": "none",
            "generator_hash": "", "run_dir": "", "config_hash": _file_hash(p), "model_path": str(p.resolve()),
            "metric": "cosine",
        }

    def embed(self, images: np.ndarray, *, flip: bool = False) -> np.ndarray:
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            got = f"{images.dtype} array of shape {images.shape}" if isinstance(images, np.ndarray) else type(images)
            raise ValueError(f"Expected uint8 images of shape (N, H, W, 3) RGB, but got {got}")
        out = np.zeros((len(images), self.embedding_dim), np.float32)
        for i in range(0, len(images), self.batch_size):
            bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images[i:i + self.batch_size]]
            emb = np.asarray(self._m.get_feat(bgr), np.float32)
            if flip:
                emb = emb + np.asarray(self._m.get_feat([np.ascontiguousarray(b[:, ::-1]) for b in bgr]), np.float32)
            out[i:i + len(bgr)] = emb
        return out


_RUN_LOADER: list[Callable[..., Any]] = []


def register_run_loader(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Set the loader of trained runs (``fn(path, **kw) -> embedder``); the CLI registers the recognizers' one."""
    _RUN_LOADER[:] = [fn]
    return fn


def load_model(spec: str | os.PathLike, *, run_loader: Callable[..., Any] | None = None, **kw) -> Any:
    """A reference embedder by name, or a trained run dir / checkpoint / ``.onnx`` file (via the run loader)."""
    s = str(spec)
    if s in REFERENCE_EMBEDDERS.names():
        return REFERENCE_EMBEDDERS.create(s, **kw)
    if s.startswith(INSIGHTFACE_PREFIX):  # issue 15: a user's insightface model-zoo recognizer
        return InsightFaceEmbedder(s[len(INSIGHTFACE_PREFIX):], **kw)
    p = Path(s)
    if not p.exists():
        raise MfrbenchError(f"no model {s!r}: expected a train-fr run directory, a checkpoint, an .onnx file or one "
                            f"of {', '.join(REFERENCE_EMBEDDERS.names())}")
    loader = run_loader or (_RUN_LOADER[0] if _RUN_LOADER else None)
    if loader is None:
        raise MfrbenchError(f"{s} is a trained model, and no run loader is registered: pass run_loader="
                            "mfrbench.recognizers.embed.load_embedder (the `mfrbench` CLI registers it)")
    emb = loader(p, **kw)
    if not hasattr(emb, "metric"):
        emb.metric = emb.info.get("metric", "cosine")
    emb.info.setdefault("model_path", str(p.resolve()))
    emb.info.setdefault("model", p.name)
    return emb
