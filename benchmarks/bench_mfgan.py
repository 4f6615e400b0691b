"""MFGAN training-step cost per stage next to the CycleGAN step, and generation throughput.

Each (method, stage, size, batch) cell runs in its own subprocess, so ``ru_maxrss`` is that cell's
peak resident memory (the process peak, including the Python/torch baseline, which is printed
as the ``idle`` row). Step time is the median of ``--steps`` timed steps after ``--warmup``
untimed ones, as wall time and as process CPU time (``time.process_time``, all threads): on a
busy shared machine the CPU-time ratio is the one to trust. MFGAN's Det and Seg are the real ``Det``/``Seg``
architectures of ``generators/parts.py`` / ``generators/seg.py`` with their default widths and random weights
(timing does not depend on the weights); stage ``k`` is timed by starting the model at the first
step of that stage. Widths are the ``cpu`` profile's (ngf = ndf = 32, 6 blocks) for both methods.

    .venv/bin/python benchmarks/bench_mfgan.py            # 64 and 128 px, batch 1 and 8
    .venv/bin/python benchmarks/bench_mfgan.py --quick    # 64 px, batch 1 and 8, fewer steps
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

WIDTHS = dict(ngf=32, ndf=32, n_blocks=6, lambda_identity=0.0)  # the cpu profile drops the identity term too


def _stand_in_aux():
    """Det/Seg modules with the real architectures (random weights), patched into FrozenAux.from_run."""
    import torch

    from mfrbench.generators import mfgan as M

    class _Det(torch.nn.Module):  # used only while generators/parts.py is absent
        parts = ["eyes", "nose", "mouth", "chin"]

        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU(),
                                           torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.ReLU(),
                                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 4))

        def forward(self, x):
            return self.net(x)

    from mfrbench.generators.seg import AuxConfig, UNet

    seg = UNet(base=AuxConfig().base)
    seg.size = AuxConfig().size
    try:
        from mfrbench.generators.parts import _det_build
        from mfrbench.generators.seg import PARTS

        det = _det_build(AuxConfig(module="det"))
        parts = list(PARTS)
        arch = "real Seg U-Net and Det PartsNet (default widths, random weights)"
    except ImportError:
        det = _Det()
        parts = _Det.parts
        arch = "real Seg U-Net; Det: small conv stand-in (parts.py absent)"
    det.size = AuxConfig().size

    def from_run(kind, run, device):
        net = seg if kind == "Seg" else det
        return M.FrozenAux(kind, net.to(device), size=getattr(net, "size", None), parts=parts, run=run)

    M.FrozenAux.from_run = staticmethod(from_run)
    return arch


def _domain(name, n, size, seed):
    import torch

    from mfrbench.generators.gan.data import DomainData

    g = torch.Generator().manual_seed(seed)
    return DomainData(name, torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
                      [f"{name}{i}" for i in range(n)], "memory")


def cell(method: str, stage: int, size: int, batch: int, steps: int, warmup: int, device: str) -> dict:
    """Run in a child process: median train_step seconds and peak RSS for one configuration."""
    import torch

    from mfrbench.generators.gan.config import resolve_config
    from mfrbench.generators.gan.contract import build_gan
    from mfrbench.generators.gan.data import step_batch

    torch.manual_seed(0)
    arch = _stand_in_aux() if method != "cyclegan" else ""
    total = warmup + steps
    model = dict(WIDTHS)
    train = dict(size=size, batch_size=batch, steps=3 * total + 3, amp=device == "cuda")
    if method != "cyclegan":
        model.update(det_checkpoint="bench", seg_checkpoint="bench", stage_steps=(total + 1, total + 1, total + 1))
    tc, mc = resolve_config(method, None, train=train, model=model)
    gan = build_gan(tc, mc, device)
    faces, masks = _domain("f", 32, size, 1), _domain("m", 32, size, 2)
    if method != "cyclegan":
        gan.prepare(faces, masks, __import__("pathlib").Path("/tmp/bench_mfgan_unused"))
        gan._prep.pop("run_dir")              # no stage-end read-outs inside the timing loop
        gan.step = (stage - 1) * (total + 1)
    times, cpu = [], []
    for i in range(total):
        b, rng = step_batch(faces, masks, gan.step, tc, gan.device)
        if device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        gan.train_step(b, rng)
        if device == "cuda":
            torch.cuda.synchronize()
        gan.step += 1
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
    return {"step_s": statistics.median(times), "cpu_s": statistics.median(cpu), "peak_rss_mb": peak,
            "gpu_peak_mb": gpu, "aux": arch}


def generation(n: int, batch: int, device: str) -> float:
    """Images/s of MFGANMaskGenerator.generate on 112 px crops (reference-guided), one call per ``batch``."""
    import numpy as np

    from mfrbench.generators import mfgan as M
    from mfrbench.generators.gan.config import resolve_config
    from mfrbench.generators.gan.contract import build_gan

    _stand_in_aux()
    tc, mc = resolve_config("mfgan", None, train=dict(size=64, steps=3),
                            model={**WIDTHS, "det_checkpoint": "b", "seg_checkpoint": "b"})
    gan = build_gan(tc, mc, device)
    masks = _domain("m", 16, 64, 2)
    gan.prepare(_domain("f", 16, 64, 1), masks, __import__("pathlib").Path("/tmp/bench_mfgan_unused"))
    gen = M.MFGANMaskGenerator(gan, run_dir="bench", batch_size=batch)
    gen.keys = masks.keys
    refs = masks.batch(np.arange(len(masks)), np.zeros(len(masks), bool), gan.device)
    gen.domains = gan.domain_of(refs)
    gen.codes = gan.ema_E.net(refs, gen.domains).detach()
    gen.reference_mode, gen.reference_index = "random", 0
    imgs = np.random.default_rng(0).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)
    rngs = [np.random.default_rng(i) for i in range(n)]
    gen.generate(imgs[:batch], rng=rngs[:batch])            # warm-up
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        gen.generate(imgs[i:i + batch], rng=rngs[i:i + batch])
    return n / (time.perf_counter() - t0)


def _child(args: list[str], threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(args)], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 px only, 2 timed steps")
    ap.add_argument("--sizes", default=None, help="comma-separated, default 64,128 (64 with --quick)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads per cell "
                         "(1: CPU time is not inflated by spinning threads on a busy machine)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        kind, *rest = json.loads(a.child)
        if kind == "idle":
            import torch  # noqa: F401

            import mfrbench.generators.mfgan  # noqa: F401
            print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        elif kind == "cell":
            print(json.dumps(cell(*rest)))
        else:
            print(json.dumps({"ips": generation(*rest)}))
        return
    import torch

    sizes = [int(s) for s in (a.sizes or ("64" if a.quick else "64,128")).split(",")]
    batches = [int(b) for b in a.batches.split(",")]
    steps, warmup = (a.steps or (2 if a.quick else 5)), 1
    print(f"# bench_mfgan  loadavg={os.getloadavg()}  torch={torch.__version__}  threads/cell={a.threads}  "
          f"device={a.device}  steps={steps} (median) warmup={warmup}")
    print(f"# idle process peak RSS: {_child(['idle'], a.threads)['peak_rss_mb']:.0f} MB")
    print("| size | batch | cyclegan s/step (cpu s) | stage | mfgan s/step (cpu s) | ratio wall | ratio cpu | "
          "cyclegan peak MB | mfgan peak MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    aux = ""
    for size in sizes:
        for b in batches:
            base = _child(["cell", "cyclegan", 0, size, b, steps, warmup, a.device], a.threads)
            for stage in (1, 2, 3):
                r = _child(["cell", "mfgan", stage, size, b, steps, warmup, a.device], a.threads)
                aux = r["aux"]
                print(f"| {size} | {b} | {base['step_s']:.3f} ({base['cpu_s']:.3f}) | {stage} | {r['step_s']:.3f} "
                      f"({r['cpu_s']:.3f}) | {r['step_s'] / base['step_s']:.2f} | {r['cpu_s'] / base['cpu_s']:.2f} | "
                      f"{base['peak_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} |", flush=True)
    print(f"# MFGAN Det/Seg: {aux}")
    n = 32 if a.quick else 128
    one = _child(["gen", n // 4, 1, a.device], a.threads)["ips"]
    batched = _child(["gen", n, 32, a.device], a.threads)["ips"]
    print("\n| generation (112 px, reference-guided, G_M at 64 px + Seg) | images/s |\n|---|---:|")
    print(f"| one image per call | {one:.1f} |\n| batch 32 | {batched:.1f} |\n| speed-up | {batched / one:.2f}x |")


if __name__ == "__main__":
    main()
