"""GPU check for the GAN core: CycleGAN / IAMGAN-shaped training steps fp32 vs bf16 AMP, peak memory, generation img/s.

Skips cleanly (exit 0, one line) when no CUDA device is present. Short by design (about a minute):

    .venv/bin/python benchmarks/gpu_check_gan.py
    .venv/bin/python benchmarks/gpu_check_gan.py --sizes 128 256 --steps 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    import numpy as np
    import torch

    if not torch.cuda.is_available():
        print("gpu_check_gan: SKIPPED (no CUDA device)")
        return 0
    from mfrbench.generators.gan.config import resolve_config
    from mfrbench.generators.gan.contract import build_gan
    from mfrbench.generators.gan.data import GANBatch
    from mfrbench.generators.gan.generator import GANMaskGenerator

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    print(f"# gpu_check_gan  {torch.cuda.get_device_name(0)}  torch {torch.__version__}  loadavg={os.getloadavg()}")
    print(f"{'size':>5}{'batch':>6}{'fp32 ms':>10}{'amp ms':>10}{'speedup':>9}"
          f"{'fp32 MiB':>10}{'amp MiB':>10}{'finite':>8}")
    for size in a.sizes:
        for batch in a.batches:
            row = {}
            for amp in (False, True):
                t, m = resolve_config("cyclegan", "paper", train={"size": size, "batch_size": batch, "amp": amp},
                                      model={"n_blocks": 9 if size >= 256 else 6})
                gan = build_gan(t, m, dev)
                x = torch.rand(batch, 3, size, size, device=dev) * 2 - 1
                y = torch.rand(batch, 3, size, size, device=dev) * 2 - 1
                rng = np.random.default_rng(0)
                for _ in range(3):
                    gan.train_step(GANBatch(x, y), rng)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                times, finite = [], True
                for _ in range(a.steps):
                    t0 = time.perf_counter()
                    losses = gan.train_step(GANBatch(x, y), rng)
                    torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
                    finite &= all(np.isfinite(v) for v in losses.values())
                row[amp] = (statistics.median(times) * 1000, torch.cuda.max_memory_allocated() / 2 ** 20, finite)
                del gan
                torch.cuda.empty_cache()
            (f_ms, f_mb, f_ok), (a_ms, a_mb, a_ok) = row[False], row[True]
            print(f"{size:>5}{batch:>6}{f_ms:>10.1f}{a_ms:>10.1f}{f_ms / a_ms:>9.2f}{f_mb:>10.0f}{a_mb:>10.0f}"
                  f"{str(f_ok and a_ok):>8}", flush=True)
    for size in a.sizes:
        t, m = resolve_config("cyclegan", "paper", train={"size": size}, model={"n_blocks": 9 if size >= 256 else 6})
        gen = GANMaskGenerator(build_gan(t, m, dev), run_dir="gpu-check", batch_size=64)
        imgs = np.random.default_rng(0).integers(0, 256, (256, 112, 112, 3), dtype=np.uint8)
        gen.generate(imgs[:64], None, rng=np.random.default_rng(0))
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        gen.generate(imgs, None, rng=np.random.default_rng(0))
        torch.cuda.synchronize()
        rate = len(imgs) / (time.perf_counter() - t0)
        print(f"generation at {size} px: {rate:.0f} img/s (uint8 112 px in/out, batch 64)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
