"""MaskAugment throughput: masked 112x112 crops per CPU-second vs the generate path's per-crop mtf call.

Rows (each in a fresh subprocess, single-threaded OpenCV/BLAS; crops decoded into memory before
the timed part, so both rows time masking only; median of ``--repeats``):

* ``mtf.mask_face per crop``: the baseline, what ``mfrbench generate --manifest <aligned>`` runs
  for every crop: the crop's own 68 landmarks (``lmk68_crop``), style draw, placement
  (homography, lowering loop, visible fraction), template warp, styling, compositing;
* ``MaskAugment(p=1)``: the on-the-fly transform, ``aug(img, seed, epoch, index)``: template
  landmarks, templates warped once per (family, geometry, wearing), then colour/texture + alpha
  blend per crop (every crop masked);
* ``MaskAugment(p=0.5)``: as a trainer would use it (half the crops pass through).

All rows use ``mask_type=mix, wearing=random`` (families, colours, textures: the styled path).
``1st pass CPU-s`` is the warm-up pass over the crops, with the one-off costs (template decoding,
precomputed warps); the per-crop numbers exclude it (a first pass warms up, then ``passes``
timed passes with new epochs). Goal (issue 16): >= 800 masked crops per CPU-second.

    flock /work/coord/cpu.lock nice -n 5 .venv/bin/python benchmarks/bench_maskaug.py   # 500 crops, 3 repeats
    .venv/bin/python benchmarks/bench_maskaug.py --quick                                 # 100 crops, once
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from _harness import child_main, parse, run_child

KW = {"mask_type": "mix", "wearing": "random"}
PASSES = 3


def _aligned(n: int) -> str:
    """An aligned manifest of the first n CelebA photos (the same cache folder as bench_mtf.py)."""
    from mfrbench.align import align_dataset
    from mfrbench.datasets import create_dataset

    out = Path(tempfile.gettempdir()) / f"mfrbench-bench-mtf/celeba-aligned-{n}"
    if not (out / "manifest.csv").is_file():
        align_dataset(create_dataset("celeba"), out, limit=n, workers=2, progress=False)
    return str(out)


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM): unlike ``ru_maxrss``, not inherited across fork + exec from the parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(mode: str, n: int) -> dict:
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    from mfrbench.manifest import read_manifest

    df = read_manifest(_aligned(n), status="ok")
    crops = [np.ascontiguousarray(cv2.imread(p)[..., ::-1]) for p in df.abs_out_path]
    lmks = [np.asarray(x, np.float64).reshape(68, 2) for x in df.lmk68_crop]
    t0 = time.process_time()
    if mode == "mtf":
        from mfrbench.errors import SkipImage
        from mfrbench.generators.mtf import mtf

        gen = mtf(**KW)

        def one(i: int, epoch: int) -> bool:
            try:
                gen.mask_face(crops[i], lmks[i], np.random.default_rng([0, epoch, i]))
                return True
            except SkipImage:
                return False
    else:
        from mfrbench.generators.augment import MaskAugment

        aug = MaskAugment(p=1.0 if mode == "aug" else 0.5, **KW)

        def one(i: int, epoch: int) -> bool:
            return aug.mask(crops[i], aug.rng(0, epoch, i))[2]["masked"]

    for i in range(len(crops)):  # warm-up pass: templates decoded, warps precomputed
        one(i, 0)
    setup = time.process_time() - t0
    masked = 0
    t1, w1 = time.process_time(), time.perf_counter()
    for epoch in range(1, PASSES + 1):
        for i in range(len(crops)):
            masked += one(i, epoch)
    cpu, wall = time.process_time() - t1, time.perf_counter() - w1
    return {"mode": mode, "crops": PASSES * len(crops), "masked": masked, "cpu_s": cpu, "wall_s": wall,
            "setup_cpu_s": setup, "rss_mb": _peak_rss_mb()}


NAMES = {"mtf": "mtf.mask_face per crop (generate path)", "aug": "MaskAugment(p=1)", "aug-half": "MaskAugment(p=0.5)"}


def main() -> None:
    a, n, reps = parse(n_default=500, repeats_default=3, quick=(100, 1))
    if child_main(a, _child):
        return
    _aligned(n)  # setup outside the timed runs
    load0 = os.getloadavg()
    print(f"# MaskAugment throughput, {n} aligned CelebA crops x {PASSES} passes (mix styles, random wearing), "
          f"median of {reps}, 1 thread per process; loadavg {' '.join(f'{x:.2f}' for x in load0)}, "
          f"{os.cpu_count()} CPUs")
    rows = {}
    for mode in NAMES:
        runs = [run_child(__file__, mode, n) for _ in range(reps)]
        rows[mode] = {"crops": runs[0]["crops"], "masked": runs[0]["masked"],
                      "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                      "wall_s": statistics.median(r["wall_s"] for r in runs),
                      "setup": statistics.median(r["setup_cpu_s"] for r in runs),
                      "rss": max(r["rss_mb"] for r in runs)}
    base = rows["mtf"]["crops"] / rows["mtf"]["cpu_s"]
    print(f"{'pipeline':<42}{'crops':>7}{'masked':>8}{'CPU-s':>8}{'wall s':>8}{'crops/CPU-s':>13}{'x mtf':>7}"
          f"{'masked/CPU-s':>14}{'1st pass CPU-s':>16}{'peak RSS MB':>13}")
    for mode, r in rows.items():
        per = r["crops"] / r["cpu_s"]
        print(f"{NAMES[mode]:<42}{r['crops']:>7}{r['masked']:>8}{r['cpu_s']:>8.2f}{r['wall_s']:>8.2f}{per:>13.0f}"
              f"{per / base:>7.2f}{r['masked'] / r['cpu_s']:>14.0f}{r['setup']:>16.2f}{r['rss']:>13.0f}")
    aug = rows["aug"]["masked"] / rows["aug"]["cpu_s"]
    print(f"goal >= 800 masked crops per CPU-second: {aug:.0f} ({'met' if aug >= 800 else 'NOT met'}); "
          f"loadavg at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
