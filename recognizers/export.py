"""Export a trained backbone to ONNX (dynamic batch) and check it against PyTorch.

The ONNX model takes ``input``: float32 ``(N, 3, 112, 112)`` RGB in ``(x - 127.5) / 127.5`` and
returns ``embedding``: float32 ``(N, D)`` raw embeddings, exactly as the PyTorch backbone. The
run's ``info`` dict is stored in the model's metadata (key ``mfrbench_info``), so
``load_embedder(model.onnx).info`` says what the model is.

The check embeds the same images (up to 16 real training crops when the training manifests are
readable, plus seeded random images, at two batch sizes to exercise the dynamic axis) with
PyTorch and onnxruntime on the CPU and reports the largest absolute difference.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfrbench.errors import MfrbenchError
from mfrbench.imageio import atomic_write_bytes
from mfrbench.recognizers.backbones import INPUT_SIZE
from mfrbench.recognizers.embed import ONNX_INFO_KEY, load_backbone, load_embedder


def _sample_images(info: dict[str, Any], n_real: int = 16, n_random: int = 5, seed: int = 0) -> np.ndarray:
    from mfrbench.recognizers.data import decode_crop, read_source

    real: list[np.ndarray] = []
    for spec in info.get("train_data", []):
        try:
            for s in read_source(spec).samples[:n_real]:
                img = decode_crop(s.path, s.offset)
                if img is not None and len(real) < n_real:
                    real.append(img)
        except MfrbenchError:
            continue
    rng = np.random.default_rng(seed)
    rand = rng.integers(0, 256, size=(n_random, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    return np.concatenate([np.stack(real), rand]) if real else rand


def export_onnx(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, opset: int = 17,
                tolerance: float = 1e-4) -> dict[str, Any]:
    """Write ``RUN_DIR/export/model.onnx`` (or ``out``) and compare it with PyTorch.

    Returns:
        ``{"path", "max_abs_diff", "images", "batch_sizes", "opset"}``; raises ``MfrbenchError``
        when the difference exceeds ``tolerance``.
    """
    import onnx

    model, info = load_backbone(run_dir)
    path = Path(out) if out is not None else Path(info["run_dir"]) / "export" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.export.tmp")   # the exporter writes a file; the final write is atomic
    dummy = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export + onnxscript, which is
        # not installed here; it remains the exporter that works offline on every torch we pin.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(tmp), dynamo=False, input_names=["input"], output_names=["embedding"],
                          dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=opset,
                          do_constant_folding=True)
    proto = onnx.load(str(tmp))
    onnx.checker.check_model(proto)
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_INFO_KEY, json.dumps({k: v for k, v in info.items() if k != "checkpoint"})
    atomic_write_bytes(path, proto.SerializeToString())
    tmp.unlink()

    images = _sample_images(info)
    ref = load_embedder(run_dir, device="cpu")
    ort = load_embedder(path, device="cpu")
    diffs = []
    for bs in (1, 7):
        ref.batch_size = ort.batch_size = bs
        diffs.append(float(np.abs(ref.embed(images) - ort.embed(images)).max()))
    result = {"path": str(path), "max_abs_diff": max(diffs), "images": len(images), "batch_sizes": [1, 7],
              "opset": opset, "embedding_dim": ort.embedding_dim}
    if result["max_abs_diff"] > tolerance:
        raise MfrbenchError(f"ONNX embeddings differ from PyTorch by {result['max_abs_diff']:.3g} "
                            f"(> {tolerance:g}); the model at {path} should not be used")
    return result
