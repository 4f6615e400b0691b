"""Face detection and landmarks: detectors give boxes + 5 points, landmarkers give 68 points.

Backends (registries ``DETECTORS`` and ``LANDMARKERS``):

* ``yunet`` (default detector): OpenCV's ``FaceDetectorYN`` with the MIT YuNet model from
  ``<models>/yunet/``. Box + 5 points in the ArcFace template's order (image-left eye first),
  3-15 ms per image here, finds >90 % of real masked faces.
* ``pfld`` (default landmarker when present): PFLD 68-point ONNX (``<models>/pfld68/``); the
  most accurate small model here, also under masks. Research use only (see models README).
* ``mediapipe``: MediaPipe face mesh (Apache-2.0, ``<models>/mediapipe/``) run with
  ``ai-edge-litert``, 468 -> 68 points through the kit's index map. Permissive fallback.
* ``none``: no 68 points (alignment only needs 5).
* ``insightface`` (detector): SCRFD from a user's insightface model pack (``--model-pack DIR``),
  through ``insightface.model_zoo`` (optional extra ``[insightface]``).

Images are RGB ``uint8`` everywhere in this module. Big photos are downscaled to at most
``max_side`` px for detection only (coordinates are mapped back), which keeps detection time
flat for megapixel inputs. Tight face crops (RMFRD-style, where the face fills the frame) are
retried once on a zero-padded canvas when the first pass finds nothing: detectors trained on
WIDER FACE rarely fire on a face that touches all four borders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import numpy as np

from mfrbench.errors import MfrbenchError
from mfrbench.paths import model_file
from mfrbench.registry import Registry


@dataclass
class Face:
    bbox: np.ndarray            # (4,) x1, y1, x2, y2 in image pixels
    score: float
    lmk5: np.ndarray            # (5, 2) ArcFace order: eye (image left), eye, nose, mouth L, mouth R
    lmk68: np.ndarray | None = None  # (68, 2) iBUG order


def template_face(side: int) -> Face:
    """The face box of an aligned ``side``-px crop (the ArcFace 112-px template's, scaled): what a landmarker is
    given for a crop that was aligned, not detected (the read-out's mtf, MFGAN's wearing regions)."""
    return Face(np.array([15, 12, 97, 116], np.float32) * (side / 112.0), 1.0, np.zeros((5, 2), np.float32))


class Detector:
    name = "detector"

    def detect(self, rgb: np.ndarray) -> list[Face]:  # pragma: no cover - interface
        raise NotImplementedError


class Landmarker:
    name = "landmarker"

    def landmarks(self, rgb: np.ndarray, face: Face) -> np.ndarray:  # pragma: no cover - interface
        """Return (68, 2) iBUG landmarks in image pixels for ``face``."""
        raise NotImplementedError


DETECTORS: Registry[Detector] = Registry("face detector")
LANDMARKERS: Registry[Landmarker | None] = Registry("landmark model")


def _cv2():
    import cv2

    cv2.setLogLevel(2) if hasattr(cv2, "setLogLevel") else None
    return cv2


# --------------------------------------------------------------------------- YuNet
class YuNet(Detector):
    name = "yunet"

    def __init__(self, model: str | None = None, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 max_side: int = 640, pad_retry: bool = True) -> None:
        cv2 = _cv2()
        path = model or str(model_file("yunet/face_detection_yunet_2023mar.onnx"))
        self._det = cv2.FaceDetectorYN.create(path, "", (320, 320), score_threshold, nms_threshold, 5000)
        self.max_side = max_side
        self.pad_retry = pad_retry

    def _run(self, bgr: np.ndarray) -> np.ndarray:
        h, w = bgr.shape[:2]
        self._det.setInputSize((w, h))
        _, faces = self._det.detect(bgr)
        return np.zeros((0, 15), np.float32) if faces is None else faces

    def detect(self, rgb: np.ndarray) -> list[Face]:
        cv2 = _cv2()
        h, w = rgb.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        small = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else bgr
        raw, off = self._run(small), 0.0
        if len(raw) == 0 and self.pad_retry:
            pad = int(0.25 * max(small.shape[:2]))
            raw = self._run(cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0))
            off = float(pad)
        out = []
        for r in raw:
            x, y, bw, bh = (r[:4] - [off, off, 0, 0]) / s
            pts = (r[4:14].reshape(5, 2) - off) / s
            out.append(Face(np.array([x, y, x + bw, y + bh], np.float32), float(r[14]), pts.astype(np.float32)))
        return out


@DETECTORS.register
def yunet(**kw) -> Detector:
    return YuNet(**kw)


# --------------------------------------------------------------------------- insightface (issue 15)
def _insightface_model_zoo():
    try:
        from insightface import model_zoo
    except ImportError as err:
        raise MfrbenchError("the insightface backends need insightface: pip install 'mfrbench[insightface]'") from err
    return model_zoo


class InsightFaceDetector(Detector):
    """The face detector of a user's insightface model pack (SCRFD ``det_*.onnx``), through ``insightface.model_zoo``.

    The packs (``buffalo_l``, ...) are the user's own: insightface downloads them at run time and licenses
    them for non-commercial research, so mfrbench never fetches one. Box + 5 points in ArcFace order.
    """

    name = "insightface"

    def __init__(self, model_pack: str | None = None, score_threshold: float = 0.5, det_size: int = 640,
                 **_: object) -> None:  # max_side / pad_retry (YuNet's) do not apply: SCRFD letterboxes itself
        from pathlib import Path

        if not model_pack:
            raise MfrbenchError("--detector insightface needs --model-pack DIR (a folder holding the pack's "
                                "det_*.onnx, e.g. ~/.insightface/models/buffalo_l)")
        pack = Path(model_pack).expanduser()
        cands = sorted(pack.glob("det*.onnx")) if pack.is_dir() else [pack]
        if not cands or not cands[0].is_file():
            raise MfrbenchError(f"no detector in the model pack {pack} (expected a det_*.onnx file)")
        m = _insightface_model_zoo().get_model(str(cands[0]), providers=["CPUExecutionProvider"])
        if getattr(m, "taskname", "") != "detection":
            raise MfrbenchError(f"{cands[0]} is not a face detector (insightface reads it as "
                                f"{getattr(m, 'taskname', type(m).__name__)})")
        m.prepare(ctx_id=-1, input_size=(det_size, det_size), det_thresh=score_threshold)
        self._m = m

    def detect(self, rgb: np.ndarray) -> list[Face]:
        bboxes, kpss = self._m.detect(_cv2().cvtColor(rgb, _cv2().COLOR_RGB2BGR), max_num=0)
        if kpss is None:
            raise MfrbenchError("this insightface detector gives no 5 points: use a pack with an SCRFD *_kps model")
        return [Face(np.asarray(b[:4], np.float32), float(b[4]), np.asarray(k, np.float32).reshape(5, 2))
                for b, k in zip(bboxes, kpss)]


@DETECTORS.register
def insightface(**kw) -> Detector:
    """SCRFD from a user's insightface model pack (``--model-pack DIR``; ``pip install 'mfrbench[insightface]'``)."""
    return InsightFaceDetector(**kw)


# --------------------------------------------------------------------------- 68 points
def _square_crop(rgb: np.ndarray, bbox: np.ndarray, scale: float, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Square crop of side ``scale * max(w, h)`` centred on ``bbox``, zero padded, resized.

    Returns the crop and the 2x3 affine mapping image -> crop pixels.
    """
    cv2 = _cv2()
    x1, y1, x2, y2 = bbox
    side = scale * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    k = out / side
    M = np.array([[k, 0, out / 2 - k * cx], [0, k, out / 2 - k * cy]], np.float32)
    crop = cv2.warpAffine(rgb, M, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, M


def _invert_points(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    A, t = M[:, :2], M[:, 2]
    return (pts - t) @ np.linalg.inv(A).T


def _onnx_session(path: str, threads: int = 1):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    ort.set_default_logger_severity(3)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class PFLD(Landmarker):
    """PFLD 68 points: crop 1.1 x box, RGB/255 at 112x112, output normalised to the crop."""

    name = "pfld"

    def __init__(self, model: str | None = None, threads: int = 1) -> None:
        path = model or str(model_file("pfld68/pfld.onnx"))
        self._sess = _onnx_session(path, threads)
        if self._sess is None:  # onnxruntime not installed: OpenCV's DNN module runs it too
            self._net = _cv2().dnn.readNetFromONNX(path)

    def landmarks(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        crop, M = _square_crop(rgb, face.bbox, 1.1, 112)
        x = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        if self._sess is not None:
            y = self._sess.run(None, {self._sess.get_inputs()[0].name: x})[0]
        else:
            self._net.setInput(x)
            y = self._net.forward()
        pts = np.asarray(y, np.float32).reshape(68, 2) * 112
        return _invert_points(M, pts).astype(np.float32)


class MediaPipeMesh(Landmarker):
    """MediaPipe 468-point mesh (Apache-2.0), mapped to iBUG 68 with the kit's index map."""

    name = "mediapipe"

    def __init__(self, model: str | None = None, index_map: str | None = None, threads: int = 1) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as err:
            raise MfrbenchError("the mediapipe landmarker needs `pip install ai-edge-litert`") from err
        self._it = Interpreter(model or str(model_file("mediapipe/face_landmark.tflite")), num_threads=threads)
        self._it.allocate_tensors()
        self._in = self._it.get_input_details()[0]["index"]
        outs = {d["name"]: d["index"] for d in self._it.get_output_details()}
        self._out = outs.get("conv2d_21", list(outs.values())[0])
        idx = json.loads(open(index_map or model_file("mediapipe/mp468_to_ibug68.json")).read())
        self._idx = np.asarray(idx["mp468_index_for_ibug68"] if isinstance(idx, dict) else idx, int)

    def landmarks(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        cv2 = _cv2()
        x1, y1, x2, y2 = face.bbox
        side = 1.5 * max(x2 - x1, y2 - y1)
        c = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        d = face.lmk5[1] - face.lmk5[0]
        ang = np.degrees(np.arctan2(d[1], d[0]))
        M = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), float(ang), 192.0 / side)
        M[:, 2] += np.array([96.0, 96.0]) - c
        crop = cv2.warpAffine(rgb, M, (192, 192), flags=cv2.INTER_LINEAR, borderValue=0)
        self._it.set_tensor(self._in, (crop.astype(np.float32) / 255.0)[None])
        self._it.invoke()
        mesh = self._it.get_tensor(self._out).reshape(468, 3)[:, :2]
        return _invert_points(M.astype(np.float32), mesh[self._idx]).astype(np.float32)


@LANDMARKERS.register
def pfld(**kw) -> Landmarker:
    return PFLD(**kw)


@LANDMARKERS.register
def mediapipe(**kw) -> Landmarker:
    return MediaPipeMesh(**kw)


@LANDMARKERS.register
def none(**kw) -> None:
    return None


def create_landmarker(name: str = "auto", **kw) -> Landmarker | None:
    """``auto``: PFLD if its model is present, else MediaPipe, else no 68 points."""
    if name != "auto":
        return LANDMARKERS.create(name, **kw)
    for cand in ("pfld", "mediapipe"):
        try:
            return LANDMARKERS.create(cand, **kw)
        except MfrbenchError:
            continue
    return None


def pick_main_face(faces: list[Face], shape: tuple[int, ...]) -> Face | None:
    """The face to keep when several are found: large and central (insightface's rule:
    box area minus twice the squared offset of its centre from the image centre)."""
    if not faces:
        return None
    h, w = shape[:2]

    def key(f: Face) -> float:
        x1, y1, x2, y2 = f.bbox
        off = ((x1 + x2) / 2 - w / 2) ** 2 + ((y1 + y2) / 2 - h / 2) ** 2
        return float((x2 - x1) * (y2 - y1) - 2.0 * off)

    return max(faces, key=key)


def bbox_from_points(pts: np.ndarray, margin: float = 0.6) -> np.ndarray:
    """A face box around landmarks (used when landmarks come from annotations)."""
    lo, hi = pts.min(0), pts.max(0)
    size = max(hi - lo) * (1 + 2 * margin)
    c = (lo + hi) / 2 + np.array([0, 0.1 * size])
    return np.array([c[0] - size / 2, c[1] - size / 2, c[0] + size / 2, c[1] + size / 2], np.float32)


DetectorFactory = Callable[..., Detector]
