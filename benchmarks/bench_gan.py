"""Benchmark: GAN training step time / peak memory (64 and 128 px, batch 1 and 8) and generation throughput, CPU.

Ours: ``CycleGAN.train_step`` from ``mfrbench.generators.cyclegan`` (the contract: named losses,
seeded image pool, EMA update) and ``GANMaskGenerator.generate`` (uint8 in/out, resize to the
training size and back). Baseline, measured in the same run on the same networks: a bare CycleGAN
step written the way junyanz/pytorch-CycleGAN-and-pix2pix's ``optimize_parameters`` does it
(nn.MSELoss/nn.L1Loss, ``random``-based pool, no EMA), and a bare ``G(x)`` forward for generation.
Each configuration runs in a fresh process so ``ru_maxrss`` is that configuration's peak.

    .venv/bin/python benchmarks/bench_gan.py            # CycleGAN widths (ngf 64, 6 blocks), 3 timed steps
    .venv/bin/python benchmarks/bench_gan.py --quick    # narrow nets (ngf 16, 2 blocks), 1 timed step
    .venv/bin/python benchmarks/bench_gan.py --throughput   # issue 14: cpu-profile generators, batch 32 vs 1

``--throughput``: ``GANMaskGenerator.generate`` of a ``cpu``-profile generator (compositing, 64 px, ngf 24,
composited at 112 px) on 112x112 uint8 crops, 32 crops as one batch vs one crop per call, next to a bare
``G(x)`` forward of the same network at 64 px (batch 32 and batch 1) in the same process.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import statistics
import sys
import time


def _baseline_step(nets, opt_g, opt_d, pools, real_a, real_b, lam=10.0, lam_idt=0.5):
    """The reference repository's optimize_parameters, inlined (G_A: A->B, D_A judges B)."""
    import torch
    from torch import nn

    g_a, g_b, d_a, d_b = nets
    mse, l1 = nn.MSELoss(), nn.L1Loss()

    def gan(pred, real):
        return mse(pred, torch.full_like(pred, 1.0 if real else 0.0))

    def query(pool, imgs):
        out = []
        for img in imgs.detach():
            img = img[None]
            if len(pool) < 50:
                pool.append(img)
                out.append(img)
            elif random.uniform(0, 1) > 0.5:
                i = random.randint(0, 49)
                out.append(pool[i].clone())
                pool[i] = img
            else:
                out.append(img)
        return torch.cat(out, 0)

    fake_b = g_a(real_a)
    rec_a = g_b(fake_b)
    fake_a = g_b(real_b)
    rec_b = g_a(fake_a)
    for p in list(d_a.parameters()) + list(d_b.parameters()):
        p.requires_grad_(False)
    opt_g.zero_grad()
    idt_a, idt_b = g_a(real_b), g_b(real_a)
    loss_g = (gan(d_a(fake_b), True) + gan(d_b(fake_a), True) + l1(rec_a, real_a) * lam + l1(rec_b, real_b) * lam
              + l1(idt_a, real_b) * lam * lam_idt + l1(idt_b, real_a) * lam * lam_idt)
    loss_g.backward()
    opt_g.step()
    for p in list(d_a.parameters()) + list(d_b.parameters()):
        p.requires_grad_(True)
    opt_d.zero_grad()
    fb, fa = query(pools[0], fake_b), query(pools[1], fake_a)
    loss_d = 0.5 * (gan(d_a(real_b), True) + gan(d_a(fb.detach()), False)) + \
        0.5 * (gan(d_b(real_a), True) + gan(d_b(fa.detach()), False))
    loss_d.backward()
    opt_d.step()


def _run_config(q, kind: str, size: int, batch: int, ngf: int, n_blocks: int, reps: int, threads: int) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from mfrbench.generators.gan.config import resolve_config
    from mfrbench.generators.gan.contract import build_gan
    from mfrbench.generators.gan.data import GANBatch

    t, m = resolve_config("cyclegan", None, train={"size": size, "batch_size": batch},
                          model={"ngf": ngf, "ndf": 64 if ngf >= 64 else ngf, "n_blocks": n_blocks})
    gan = build_gan(t, m)
    x = torch.rand(batch, 3, size, size) * 2 - 1
    y = torch.rand(batch, 3, size, size) * 2 - 1
    times = []
    if kind == "ours":
        rng = np.random.default_rng(0)
        step = lambda: gan.train_step(GANBatch(x, y), rng)  # noqa: E731
    elif kind == "baseline":
        pools = ([], [])
        step = lambda: _baseline_step((gan.G_M, gan.G_F, gan.D_M, gan.D_F), gan.opt["G"], gan.opt["D"], pools, x, y)  # noqa: E731
    elif kind == "gen_ours":
        from mfrbench.generators.gan.generator import GANMaskGenerator

        g = GANMaskGenerator(gan, run_dir="bench", batch_size=32)
        imgs = np.random.default_rng(0).integers(0, 256, (32, 112, 112, 3), dtype=np.uint8)
        step = lambda: g.generate(imgs, None, rng=np.random.default_rng(0))  # noqa: E731
    else:  # gen_baseline: bare forward at the training size
        xb = torch.rand(32, 3, size, size) * 2 - 1
        net = gan.G_M.eval()

        def step():
            with torch.no_grad():
                net(xb)
    step()  # warm-up
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    q.put((statistics.median(times), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def measure(kind, size, batch, ngf, n_blocks, reps, threads):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_run_config, args=(q, kind, size, batch, ngf, n_blocks, reps, threads))
    p.start()
    out = q.get()
    p.join()
    return out


def throughput(method: str, threads: int, reps: int) -> dict:
    """crops/s of a cpu-profile generator: batch 32 vs one at a time, ours (generate) and bare G(x)."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from mfrbench.generators.gan.config import resolve_config
    from mfrbench.generators.gan.contract import build_gan
    from mfrbench.generators.gan.generator import GANMaskGenerator

    t, m = resolve_config(method, "cpu")
    gan = build_gan(t, m)
    g = GANMaskGenerator(gan, run_dir="bench", batch_size=32)
    imgs = np.random.default_rng(0).integers(0, 256, (32, 112, 112, 3), dtype=np.uint8)
    net = gan.translator().eval()
    xb = torch.rand(32, 3, t.size, t.size) * 2 - 1

    def timed(fn) -> float:
        fn()
        return statistics.median([_clock(fn) for _ in range(reps)])

    def bare(x):
        with torch.no_grad():
            net(x)

    out = {"ours_b32": 32 / timed(lambda: g.generate(imgs, None, rng=np.random.default_rng(0))),
           "ours_b1": 32 / timed(lambda: [g.generate(imgs[i:i + 1], None, rng=np.random.default_rng(0))
                                          for i in range(32)]),
           "bare_b32": 32 / timed(lambda: bare(xb)),
           "bare_b1": 32 / timed(lambda: [bare(xb[i:i + 1]) for i in range(32)])}
    return out


def _clock(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="narrow nets, 1 timed repetition")
    ap.add_argument("--throughput", action="store_true", help="cpu-profile generators: batch 32 vs one at a time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=None)
    a = ap.parse_args()
    ngf, nb, reps = (16, 2, 1) if a.quick else (64, 6, 3)
    reps = a.reps or reps
    import torch

    if a.throughput:
        print(f"# bench_gan --throughput  torch {torch.__version__}  threads={a.threads}  "
              f"loadavg={os.getloadavg()}  median of {reps}  crops/s on 112x112 uint8 crops (cpu)")
        print(f"{'method':<10}{'ours b32':>10}{'ours b1':>10}{'speedup':>9}{'bare b32':>10}{'bare b1':>10}"
              f"{'speedup':>9}")
        for method in ("cyclegan",):  # IAMGAN and MFGAN run the same G_M network (MFGAN: + AdaIN)
            r = throughput(method, a.threads, reps)
            print(f"{method:<10}{r['ours_b32']:>10.1f}{r['ours_b1']:>10.1f}{r['ours_b32'] / r['ours_b1']:>9.2f}"
                  f"{r['bare_b32']:>10.1f}{r['bare_b1']:>10.1f}{r['bare_b32'] / r['bare_b1']:>9.2f}", flush=True)
        cpu = os.times()
        print(f"# peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
              f"CPU {cpu.user + cpu.system:.1f} s, loadavg at the end {os.getloadavg()}")
        return

    print(f"# bench_gan  torch {torch.__version__}  threads={a.threads}  loadavg={os.getloadavg()}  "
          f"ngf={ngf} n_blocks={nb}  median of {reps}  (cpu)")
    print(f"{'what':<28}{'size':>5}{'batch':>6}{'ours s':>10}{'base s':>10}{'ratio':>7}"
          f"{'ours MiB':>10}{'base MiB':>10}")
    for size in (64, 128):
        for batch in (1, 8):
            o, om = measure("ours", size, batch, ngf, nb, reps, a.threads)
            b, bm = measure("baseline", size, batch, ngf, nb, reps, a.threads)
            print(f"{'train step (CycleGAN)':<28}{size:>5}{batch:>6}{o:>10.3f}{b:>10.3f}{o / b:>7.2f}"
                  f"{om:>10.0f}{bm:>10.0f}", flush=True)
    for size in (64, 128):
        o, om = measure("gen_ours", size, 32, ngf, nb, reps, a.threads)
        b, bm = measure("gen_baseline", size, 32, ngf, nb, reps, a.threads)
        print(f"{'generate img/s (bs 32)':<28}{size:>5}{32:>6}{32 / o:>10.1f}{32 / b:>10.1f}{b / o:>7.2f}"
              f"{om:>10.0f}{bm:>10.0f}", flush=True)
    print("ratio: ours time / baseline time for steps; for generation ours img/s / baseline img/s.")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
