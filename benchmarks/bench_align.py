"""Alignment throughput: `align_dataset` (1 and 2 workers) vs a plain single-process loop.

Each configuration runs in a fresh subprocess (clean peak-RSS readings) on the first N real
CelebA in-the-wild images of the data kit; the table shows the median images/s of several runs,
the ratio to the plain loop measured in the same run, and peak RSS (parent + largest worker).
Memory flatness: the same pipeline at N/4 and N inputs should have the same peak RSS.

    .venv/bin/python benchmarks/bench_align.py            # 500 images, 3 repeats
    .venv/bin/python benchmarks/bench_align.py --quick    # 60 images, 1 repeat
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time

from _harness import child_main, parse, run_child


def _child(mode: str, n: int) -> dict:
    import cv2

    from mfrbench.datasets import create_dataset

    cv2.setNumThreads(1)  # per-core numbers: workers run single-threaded too
    ds = create_dataset("celeba")
    out = tempfile.mkdtemp(prefix="bench-align-")
    t0 = time.perf_counter()
    if mode == "plain":
        # The baseline a user would write: decode, detect, warp, save, one image at a time.
        import cv2
        import numpy as np

        from mfrbench.align import norm_crop
        from mfrbench.faces import YuNet, pick_main_face

        det = YuNet()
        ok = 0
        for rec in ds.records(n):
            bgr = cv2.imread(rec.path)
            if bgr is None:
                continue
            rgb = bgr[..., ::-1]
            face = pick_main_face(det.detect(rgb), rgb.shape)
            if face is None:
                continue
            crop, _ = norm_crop(np.ascontiguousarray(rgb), face.lmk5)
            cv2.imwrite(os.path.join(out, f"{ok}.jpg"), crop[..., ::-1])
            ok += 1
    else:
        from mfrbench.align import AlignConfig, align_dataset

        workers = int(mode.split("-")[1])
        lm = mode.split("-")[2] if mode.count("-") == 2 else "auto"
        meta = align_dataset(ds, out, limit=n, workers=workers, cfg=AlignConfig(landmarker=lm), progress=False)
        ok = meta["ok"]
    dt = time.perf_counter() - t0
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"mode": mode, "n": n, "ok": ok, "seconds": dt, "rss_mb": rss_self + rss_kids}


def _run(mode: str, n: int) -> dict:
    return run_child(__file__, mode, n)


def main() -> None:
    a, n, reps = parse()
    if child_main(a, _child):
        return
    print(f"# alignment throughput, {n} CelebA in-the-wild images, median of {reps}; "
          f"loadavg {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    rows = {}
    for mode in ("plain", "align-1-none", "align-1", "align-2"):
        runs = [_run(mode, n) for _ in range(reps)]
        rows[mode] = {"ips": statistics.median(r["ok"] / r["seconds"] for r in runs),
                      "rss": max(r["rss_mb"] for r in runs), "ok": runs[0]["ok"]}
    base = rows["plain"]["ips"]
    print(f"{'pipeline':<44}{'ok':>6}{'img/s':>9}{'x plain':>9}{'peak RSS MB':>13}")
    names = {"plain": "plain loop (YuNet + 5-pt warp, no manifest)",
             "align-1-none": "align, 1 worker, 5 points only",
             "align-1": "align, 1 worker, + PFLD 68 points",
             "align-2": "align, 2 workers, + PFLD 68 points"}
    for mode, r in rows.items():
        print(f"{names[mode]:<44}{r['ok']:>6}{r['ips']:>9.1f}{r['ips'] / base:>9.2f}{r['rss']:>13.0f}")
    small = _run("align-1", max(n // 4, 10))
    print(f"memory flatness: peak RSS {small['rss_mb']:.0f} MB at {small['n']} inputs vs "
          f"{rows['align-1']['rss']:.0f} MB at {n} inputs")


if __name__ == "__main__":
    main()
