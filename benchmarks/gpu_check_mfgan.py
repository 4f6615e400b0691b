"""MFGAN on a GPU: training images/s per stage (fp32 vs bf16 AMP, channels_last) and generation throughput.

Skips cleanly (exit 0, one line) when no CUDA device is present, so it is safe in CI.

    .venv/bin/python benchmarks/gpu_check_mfgan.py [--size 128] [--batch 8] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check_mfgan: skipped (no CUDA device)")
        return 0
    import bench_mfgan as B

    from mfrbench.generators.gan.config import resolve_config
    from mfrbench.generators.gan.contract import build_gan
    from mfrbench.generators.gan.data import step_batch

    print(f"# gpu_check_mfgan  {torch.cuda.get_device_name(0)}  torch={torch.__version__}  loadavg={os.getloadavg()}")
    print("| stage | amp | channels_last | s/step | images/s | GPU peak MB |\n|---:|---|---|---:|---:|---:|")
    B._stand_in_aux()
    for stage in (1, 2, 3):
        for amp in (False, True):
            for cl in (False, True):
                torch.cuda.reset_peak_memory_stats()
                total = a.steps + 2
                tc, mc = resolve_config(
                    "mfgan", None, train=dict(size=a.size, batch_size=a.batch, steps=3 * total + 3, amp=amp),
                    model={**B.WIDTHS, "det_checkpoint": "b", "seg_checkpoint": "b",
                           "stage_steps": (total + 1, total + 1, total + 1)})
                gan = build_gan(tc, mc, "cuda")
                if cl:
                    for net in gan.networks().values():
                        net.to(memory_format=torch.channels_last)
                faces, masks = B._domain("f", 64, a.size, 1), B._domain("m", 64, a.size, 2)
                gan.prepare(faces, masks, Path("/tmp/gpu_check_mfgan"))
                gan._prep.pop("run_dir")
                gan.step = (stage - 1) * (total + 1)
                times = []
                for i in range(total):
                    b, rng = step_batch(faces, masks, gan.step, tc, gan.device)
                    if cl:
                        b.faces, b.masks = (b.faces.contiguous(memory_format=torch.channels_last),
                                            b.masks.contiguous(memory_format=torch.channels_last))
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    gan.train_step(b, rng)
                    torch.cuda.synchronize()
                    gan.step += 1
                    if i >= 2:
                        times.append(time.perf_counter() - t0)
                s = statistics.median(times)
                print(f"| {stage} | {amp} | {cl} | {s:.4f} | {a.batch / s:.1f} | "
                      f"{torch.cuda.max_memory_allocated() / 2**20:.0f} |", flush=True)
    one = B.generation(64, 1, "cuda")
    batched = B.generation(512, 64, "cuda")
    print(f"\ngeneration (112 px, reference-guided): one per call {one:.1f} img/s, batch 64 {batched:.1f} img/s "
          f"({batched / one:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
