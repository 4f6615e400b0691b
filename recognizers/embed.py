"""Using a trained recognizer: the backbone as a module, or an embedder over uint8 face crops.

Public API (other areas code against it):

* :func:`load_backbone` ``(run_dir_or_ckpt) -> (nn.Module, info)``: the trained backbone in
  eval mode, on the CPU, differentiable (e.g. for an identity loss in a GAN). Input
  ``(B, 3, 112, 112)`` float RGB in ``(x - 127.5) / 127.5``; output ``(B, D)`` raw embeddings.
* :func:`load_embedder` ``(path, *, device=None) -> Embedder``: ``path`` is a run dir / ``.pt``
  checkpoint (PyTorch) or an ``.onnx`` file from ``mfrbench export`` (onnxruntime).
  ``Embedder.embed(images uint8 (N, 112, 112, 3) RGB, *, flip=False) -> float32 (N, D)`` raw
  embeddings (with ``flip=True``: the sum of the image's and its mirror image's embeddings).

``info`` holds ``backbone``, ``loss`` (= ``head``), ``head_args``, ``embedding_dim``,
``train_data`` (manifest paths), ``generator`` (the generator that made the training data, from
the training manifest's ``config.method``/``kind``; ``"none"`` for unmasked data), ``run_dir``,
``config_hash``, ``epoch``, ``global_step`` and the last validation numbers (``val``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from mfrbench.errors import MfrbenchError
from mfrbench.recognizers.backbones import INPUT_SIZE, create_backbone
from mfrbench.runs import choose_device, load_checkpoint

ONNX_INFO_KEY = "mfrbench_info"


def load_backbone(run_dir_or_ckpt: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The trained backbone (eval mode, CPU, gradients enabled) and its ``info`` dict."""
    state = load_checkpoint(run_dir_or_ckpt)
    cfg = state["config"]
    model = create_backbone(cfg["backbone"], embedding_dim=int(cfg["embedding_dim"]),
                            input_size=int(cfg.get("input_size", INPUT_SIZE)))
    model.load_state_dict(state["backbone"])
    model.eval()
    info = dict(state["info"])
    info.setdefault("run_dir", str(Path(state["path"]).resolve().parent.parent))
    info["checkpoint"] = state["path"]
    return model, info


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, 112, 112, 3)`` RGB -> float32 ``(N, 3, 112, 112)`` in ``(x - 127.5) / 127.5``."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        got = (f"{images.dtype} array of shape {images.shape}" if isinstance(images, np.ndarray)
               else type(images).__name__)
        raise ValueError(f"Expected uint8 images of shape (N, {INPUT_SIZE}, {INPUT_SIZE}, 3) RGB, but got {got}")
    return ((images.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)


class Embedder:
    """Batched embedding of aligned 112x112 crops through a PyTorch module or an ONNX session."""

    def __init__(self, run_batch: Callable[[np.ndarray], np.ndarray], info: dict[str, Any], embedding_dim: int,
                 *, batch_size: int = 64, backend: str = "torch", device: str = "cpu") -> None:
        self._run = run_batch
        self.info = info
        self.embedding_dim = embedding_dim
        self.batch_size = batch_size
        self.backend = backend
        self.device = device

    def embed(self, images: np.ndarray, *, flip: bool = False) -> np.ndarray:
        """Raw embeddings ``(N, D)`` float32; ``flip=True`` adds the mirrored image's embedding."""
        x = preprocess(images)
        out = np.zeros((len(x), self.embedding_dim), np.float32)
        for i in range(0, len(x), self.batch_size):
            chunk = np.ascontiguousarray(x[i:i + self.batch_size])
            emb = self._run(chunk)
            if flip:
                emb = emb + self._run(np.ascontiguousarray(chunk[..., ::-1]))
            out[i:i + len(chunk)] = emb
        return out

    def __repr__(self) -> str:
        return (f"Embedder({self.info.get('backbone')}+{self.info.get('loss')}, dim={self.embedding_dim}, "
                f"backend={self.backend}, device={self.device})")


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d in an ``nn.Sequential`` into that
    convolution (in place; eval mode only: the running statistics become conv weights and bias).

    Same embeddings up to float rounding (about 1e-6 relative), one pass less over each feature
    map: MobileFaceNet's ConvBlocks and IResNet's projection shortcuts are such pairs.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError("Expected a model in eval mode: folding uses the BatchNorm running statistics")
    for mod in model.modules():
        if isinstance(mod, nn.Sequential):
            for i in range(len(mod) - 1):
                conv, bn = mod[i], mod[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                    mod[i], mod[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return model


def inference_module(model: nn.Module, device: torch.device) -> nn.Module:
    """The backbone as evaluation runs it: BatchNorm folded, ``channels_last`` (NOTE: on CPU,
    oneDNN's depthwise and 1x1 convolutions run about 1.5-2x faster in NHWC; with folding about
    2x over the plain module for MobileFaceNet, ``benchmarks/bench_eval.py``)."""
    model = fold_batchnorm(model.eval())
    return model.to(device=device, memory_format=torch.channels_last)


def _torch_embedder(path: str | os.PathLike, device: str | None, batch_size: int) -> Embedder:
    model, info = load_backbone(path)
    dev = choose_device(device)
    model = inference_module(model, dev)

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(x).to(dev).contiguous(memory_format=torch.channels_last)
        return model(xt).float().cpu().numpy()

    return Embedder(run, info, int(info["embedding_dim"]), batch_size=batch_size, backend="torch", device=str(dev))


def onnx_providers(device: str | None = None) -> list[str]:
    """CUDA provider first when onnxruntime offers it and :func:`~mfrbench.runs.choose_device` picks CUDA.

    onnxruntime-gpu lists ``CUDAExecutionProvider`` even on machines without a GPU, so the
    device is chosen by torch's view of CUDA (``--device cuda`` without one is an error, as for
    PyTorch models), and the CPU provider always follows.
    """
    import onnxruntime as ort

    if choose_device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _onnx_embedder(path: Path, device: str | None, batch_size: int) -> Embedder:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise MfrbenchError("onnxruntime is not installed: pip install 'mfrbench[cpu]' (or [gpu])") from err
    ort.set_default_logger_severity(3)
    providers = onnx_providers(device)
    try:
        sess = ort.InferenceSession(str(path), providers=providers)
    except Exception as err:  # a CUDA provider that fails to start: fall back to the CPU
        if providers[0] == "CPUExecutionProvider":
            raise MfrbenchError(f"cannot load ONNX model {path}: {err}") from err
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    info = json.loads(meta.get(ONNX_INFO_KEY, "{}"))
    info["onnx"] = str(path)
    name = sess.get_inputs()[0].name
    dim = int(sess.get_outputs()[0].shape[1])

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {name: x})[0].astype(np.float32, copy=False)

    used = sess.get_providers()[0]
    return Embedder(run, info, dim, batch_size=batch_size, backend="onnxruntime",
                    device="cuda" if used == "CUDAExecutionProvider" else "cpu")


def load_embedder(path: str | os.PathLike, *, device: str | None = None, batch_size: int = 64) -> Embedder:
    """An :class:`Embedder` for a run dir / ``.pt`` checkpoint (PyTorch) or an ``.onnx`` file.

    Args:
        path: run directory, checkpoint file, or ONNX model written by ``mfrbench export``.
        device: ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``); default CUDA when present.
        batch_size: images per forward pass.
    """
    p = Path(path)
    if p.suffix == ".onnx":
        if not p.is_file():
            raise MfrbenchError(f"no ONNX model at {p}")
        return _onnx_embedder(p, device, batch_size)
    return _torch_embedder(p, device, batch_size)
