"""Every GPU path in one prepared script, images/s per stage (issue 15): run it whenever a GPU machine is at hand.

Stages (each prints one line; a stage that needs what this machine lacks prints ``SKIPPED (why)``):

1. ``amp-train``: the recognizer training step, fp32 vs fp16 autocast + GradScaler
   (:func:`gpu_check_train.bare_loop`), iresnet50 + ArcFace, batch 256;
2. ``ddp``: the real trainer under ``torchrun`` (``train-fr``, DistributedDataParallel; NCCL on CUDA,
   one process per GPU), SYNTHETIC JPEG crops, images/s from its ``train_log.csv``;
3. ``onnx-cuda``: embeddings through onnxruntime's CUDA provider vs PyTorch eager
   (:func:`gpu_check_train.embed_compare`), and their max difference;
4. ``gan-generate``: batched GAN generation (``GANMaskGenerator``, CycleGAN-shaped, 112 px uint8
   in/out, batch 64), as in ``gpu_check_gan.py``.

Without CUDA every stage still runs a small CPU smoke version of the same code (marked ``cpu smoke``;
``ddp`` with gloo and 2 processes), so a broken path shows up on any machine; its numbers are no
GPU numbers.

    .venv/bin/python benchmarks/gpu_check_all.py            # on a GPU machine: a few minutes
    .venv/bin/python benchmarks/gpu_check_all.py --quick    # fewer steps
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _line(stage: str, mode: str, text: str) -> None:
    print(f"{stage:<13} {mode:<10} {text}", flush=True)


# --------------------------------------------------------------------------- 1. AMP training
def stage_amp(cuda: bool, steps: int) -> None:
    import torch

    if cuda:
        from gpu_check_train import bare_loop

        fp32, _ = bare_loop("iresnet50", 256, steps, amp=False)
        amp, mem = bare_loop("iresnet50", 256, steps, amp=True)
        _line("amp-train", "cuda", f"iresnet50 b256: fp32 {fp32:.0f} img/s, AMP {amp:.0f} img/s "
                                   f"(x{amp / fp32:.2f}), AMP peak {mem:.0f} MiB")
        return
    from mfrbench.recognizers.backbones import create_backbone
    from mfrbench.recognizers.heads import create_head

    torch.manual_seed(0)
    model = create_backbone("mobilefacenet")
    head = create_head("arcface", embedding_dim=512, num_classes=100)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1)
    x, y = torch.randn(8, 3, 112, 112), torch.randint(0, 100, (8,))
    times = []
    for i in range(3):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the CPU's autocast: the same code path shape
            loss, _ = head(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    _line("amp-train", "cpu smoke", f"mobilefacenet b8 bf16 autocast: {8 / statistics.median(times):.1f} img/s; "
                                    "fp16 AMP + GradScaler: SKIPPED (no CUDA device)")


# --------------------------------------------------------------------------- 2. DDP (torchrun)
def stage_ddp(cuda: bool, steps: int) -> None:
    import pandas as pd
    import torch
    from bench_train import _synthetic_crops

    n_gpu = torch.cuda.device_count() if cuda else 0
    procs = max(n_gpu, 1) if cuda else 2
    backend = "nccl" if cuda else "gloo"
    if cuda and not torch.distributed.is_nccl_available():
        _line("ddp", "cuda", "SKIPPED (this torch has no NCCL)")
        return
    batch = 128 * procs if cuda else 8
    data = _synthetic_crops(n_ids=50, per=max(8, batch * (steps + 4) // 50 + 1))
    out = tempfile.mkdtemp(prefix="gpu-all-ddp-")
    exe = Path(sys.executable).with_name("mfrbench")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", str(exe),
           "train-fr", "--data", data, "--out", out, "--backbone", "iresnet18" if cuda else "mobilefacenet",
           "--batch-size", str(batch), "--max-steps", str(steps + 3), "--log-every", "1", "--val-identities", "0",
           "--workers", "4" if cuda else "0", "--device", "cuda" if cuda else "cpu", "--no-progress",
           "--epochs", "100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1" if not cuda else os.environ.get("OMP_NUM_THREADS", "4")}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        _line("ddp", "cuda" if cuda else "cpu smoke", f"FAILED ({backend}, {procs} processes): "
              f"{(r.stderr or r.stdout).strip().splitlines()[-1][:300]}")
        return
    log = pd.read_csv(Path(out) / "train_log.csv")
    rate = float(log["images_per_s"].iloc[3:].median()) if len(log) > 3 else float(log["images_per_s"].median())
    _line("ddp", "cuda" if cuda else "cpu smoke", f"train-fr under torchrun, {backend}, {procs} process"
          f"{'es' if procs > 1 else ''}, global batch {batch}: {rate:.1f} img/s ({len(log)} logged steps, "
          f"{wall:.0f} s with start-up)")
    shutil.rmtree(out, ignore_errors=True)


# --------------------------------------------------------------------------- 3. ONNX Runtime CUDA provider
def stage_onnx(cuda: bool, steps: int) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        _line("onnx-cuda", "-", "SKIPPED (onnxruntime not installed: pip install 'mfrbench[gpu]')")
        return
    if cuda:
        from gpu_check_train import embed_compare

        eager, ort_rate, provider, diff = embed_compare("iresnet50", 256, steps)
        _line("onnx-cuda", "cuda", f"iresnet50 b256: eager {eager:.0f} emb/s, ORT {ort_rate:.0f} emb/s "
                                   f"(x{ort_rate / eager:.2f}) on {provider}, max|diff| {diff:.1e}"
              + ("" if provider == "CUDAExecutionProvider" else " (onnxruntime-gpu missing: CPU provider)"))
        return
    import torch

    from mfrbench.recognizers.backbones import create_backbone
    from mfrbench.recognizers.embed import onnx_providers

    torch.manual_seed(0)
    model = create_backbone("mobilefacenet").eval()
    x = np.random.default_rng(0).uniform(-1, 1, (16, 3, 112, 112)).astype(np.float32)
    path = os.path.join(tempfile.mkdtemp(prefix="gpu-all-onnx-"), "m.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x[:2]),), path, dynamo=False, input_names=["input"],
                          output_names=["embedding"], dynamic_axes={"input": {0: "b"}, "embedding": {0: "b"}},
                          opset_version=17)
    ort.set_default_logger_severity(3)
    sess = ort.InferenceSession(path, providers=onnx_providers("cpu"))
    sess.run(None, {"input": x})
    t = time.perf_counter()
    got = sess.run(None, {"input": x})[0]
    rate = len(x) / (time.perf_counter() - t)
    with torch.no_grad():
        diff = float(np.abs(got - model(torch.from_numpy(x)).numpy()).max())
    cuda_there = "CUDAExecutionProvider" in ort.get_available_providers()
    _line("onnx-cuda", "cpu smoke", f"mobilefacenet b16 on {sess.get_providers()[0]}: {rate:.1f} emb/s, "
                                    f"max|diff| vs eager {diff:.1e}; CUDA provider: SKIPPED (no CUDA device"
                                    f"{'' if cuda_there else '; onnxruntime-gpu not installed either'})")


# --------------------------------------------------------------------------- 4. batched GAN generation
def stage_gan(cuda: bool, steps: int) -> None:
    import torch

    from mfrbench.generators.gan.config import resolve_config
    from mfrbench.generators.gan.contract import build_gan
    from mfrbench.generators.gan.generator import GANMaskGenerator

    dev = torch.device("cuda" if cuda else "cpu")
    size, n, batch = (256, 512, 64) if cuda else (128, 16, 8)
    t, m = resolve_config("cyclegan", "paper", train={"size": size}, model={"n_blocks": 9 if size >= 256 else 6})
    gen = GANMaskGenerator(build_gan(t, m, dev), run_dir="gpu-check", batch_size=batch)
    imgs = np.random.default_rng(0).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)
    gen.generate(imgs[:batch], None, rng=np.random.default_rng(0))  # warm-up (cuDNN autotune, allocations)
    rates = []
    for _ in range(max(1, steps // 5)):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = gen.generate(imgs, None, rng=np.random.default_rng(0))
        if cuda:
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - t0))
    assert out.images.shape == imgs.shape and out.mask_maps.shape == imgs.shape[:3]
    _line("gan-generate", "cuda" if cuda else "cpu smoke",
          f"CycleGAN generator at {size} px, batch {batch}, uint8 112 px in/out: {statistics.median(rates):.1f} img/s"
          + ("" if cuda else "; on CUDA: SKIPPED (no CUDA device)"))


STAGES = {"amp-train": stage_amp, "ddp": stage_ddp, "onnx-cuda": stage_onnx, "gan-generate": stage_gan}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="5 timed steps per stage")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {', '.join(STAGES)}")
    a = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    steps = 5 if a.quick else a.steps
    if cuda:
        torch.backends.cudnn.benchmark = True
    dev = torch.cuda.get_device_name(0) if cuda else "no CUDA device: CPU smoke runs only"
    print(f"# gpu_check_all: {dev}; torch {torch.__version__}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {steps} timed steps")
    failed = 0
    for name in a.stages.split(","):
        try:
            STAGES[name](cuda, steps)
        except Exception as err:  # one broken stage must not hide the others' numbers
            failed += 1
            _line(name, "cuda" if cuda else "cpu smoke", f"FAILED: {type(err).__name__}: {err}")
            traceback.print_exc(limit=3)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
