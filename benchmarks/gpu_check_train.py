"""GPU check for recognizers: AMP training throughput, the trainer on CUDA, ONNX Runtime's CUDA provider.

Prints one line and exits 0 when no CUDA device is present. On a GPU it measures, per backbone
(iresnet18, iresnet50, mobilefacenet; 112x112, ArcFace head, SGD, channels_last):

1. a bare loop on random tensors in fp32 vs fp16 autocast + GradScaler (images/s, peak CUDA MB);
2. the full trainer (``train()`` on SYNTHETIC JPEG crops, AMP, DataLoader workers) vs the bare
   AMP loop in the same process (ratio);
3. embedding extraction: PyTorch eager (fp32) vs onnxruntime with ``CUDAExecutionProvider``
   (falls back to and reports ``CPUExecutionProvider`` when onnxruntime-gpu is not installed),
   and the max abs difference between the two.

    .venv/bin/python benchmarks/gpu_check_train.py [--batch 256] [--steps 20] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def bare_loop(backbone: str, batch: int, steps: int, amp: bool) -> tuple[float, float]:
    from mfrbench.recognizers.backbones import create_backbone
    from mfrbench.recognizers.heads import create_head

    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = create_backbone(backbone).to(dev, memory_format=torch.channels_last)
    head = create_head("arcface", embedding_dim=512, num_classes=10_000).to(dev)
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.randn(batch, 3, 112, 112, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10_000, (batch,), device=dev)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 3):
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss, _ = head(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        scaler.step(opt)
        scaler.update()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times), torch.cuda.max_memory_allocated() / 2**20


def trainer_rate(backbone: str, batch: int, steps: int, data: str) -> float:
    import pandas as pd

    from mfrbench.recognizers.config import TrainConfig
    from mfrbench.recognizers.train import train

    out = tempfile.mkdtemp(prefix="gpu-train-")
    cfg = TrainConfig(data=(data,), out=out, backbone=backbone, batch_size=batch, epochs=100, lr=0.1, workers=8,
                      val_identities=0, log_every=1, progress=False, max_steps=steps + 3, device="cuda", amp=True)
    train(cfg)
    return float(pd.read_csv(os.path.join(out, "train_log.csv"))["images_per_s"].iloc[3:].median())


def embed_compare(backbone: str, batch: int, steps: int) -> tuple[float, float, str, float]:
    import onnxruntime as ort

    from mfrbench.recognizers.backbones import create_backbone
    from mfrbench.recognizers.embed import onnx_providers

    torch.manual_seed(0)
    model = create_backbone(backbone).eval().cuda()
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, 112, 112)).astype(np.float32)
    xt = torch.from_numpy(x).cuda()
    path = os.path.join(tempfile.mkdtemp(prefix="gpu-onnx-"), "m.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.cpu(), (torch.from_numpy(x[:2]),), path, dynamo=False, input_names=["input"],
                          output_names=["embedding"], dynamic_axes={"input": {0: "b"}, "embedding": {0: "b"}},
                          opset_version=17)
    model.cuda()
    ort.set_default_logger_severity(3)
    sess = ort.InferenceSession(path, providers=onnx_providers("cuda"))
    provider = sess.get_providers()[0]

    def rate(fn) -> float:
        times = []
        for i in range(steps + 3):
            torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - t)
        return batch / statistics.median(times)

    with torch.no_grad():
        eager = rate(lambda: model(xt))
        ref = model(xt).cpu().numpy()
    ort_rate = rate(lambda: sess.run(None, {"input": x}))
    diff = float(np.abs(sess.run(None, {"input": x})[0] - ref).max())
    return eager, ort_rate, provider, diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="5 timed steps, iresnet18 only")
    ap.add_argument("--backbones", default="iresnet18,iresnet50,mobilefacenet")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check_train: no CUDA device; nothing to measure (skipped)")
        return
    steps = 5 if a.quick else a.steps
    backbones = ["iresnet18"] if a.quick else a.backbones.split(",")
    torch.backends.cudnn.benchmark = True
    from bench_train import _synthetic_crops

    data = _synthetic_crops(n_ids=100, per=max(8, a.batch * (steps + 4) // 100 + 1))
    print(f"# gpu_check_train: {torch.cuda.get_device_name()}, batch {a.batch}, {steps} timed steps, "
          f"torch {torch.__version__}; trainer data: SYNTHETIC JPEG crops")
    print(f"{'backbone':<14} {'fp32 img/s':>10} {'AMP img/s':>10} {'AMP/fp32':>8} {'AMP MB':>8} "
          f"{'trainer img/s':>13} {'trainer/bare':>12} {'eager emb/s':>11} {'ORT emb/s':>10} {'ORT/eager':>9} "
          f"{'ORT provider':>22} {'max|diff|':>9}")
    for bb in backbones:
        fp32, _ = bare_loop(bb, a.batch, steps, amp=False)
        amp, mem = bare_loop(bb, a.batch, steps, amp=True)
        tr = trainer_rate(bb, a.batch, steps, data)
        eager, ort_rate, provider, diff = embed_compare(bb, a.batch, steps)
        print(f"{bb:<14} {fp32:>10.0f} {amp:>10.0f} {amp / fp32:>8.2f} {mem:>8.0f} {tr:>13.0f} {tr / amp:>12.2f} "
              f"{eager:>11.0f} {ort_rate:>10.0f} {ort_rate / eager:>9.2f} {provider:>22} {diff:>9.1e}")


if __name__ == "__main__":
    main()
