"""mtf generation throughput: `generate_dataset` on photos and on aligned crops vs a plain loop.

Rows (each in a fresh subprocess, so peak-RSS readings are clean; median images/s of several
runs; the ratio is to the plain loop measured in the same run):

* ``plain loop``: the baseline a user would write with the same models: ``cv2.imread`` ->
  YuNet (640 px) -> PFLD 68 points -> the mtf warp -> ``cv2.imwrite`` (image + map), one image
  at a time, no manifest;
* ``plain loop, templates re-read per face``: the same, but the template kit is loaded again for
  every face, as the original MaskTheFace does;
* ``generate, photos, N workers``: ``generate_dataset`` on the first N CelebA in-the-wild photos
  (detection on a 320 px copy with a 640 px retry, PFLD, manifest, atomic writes, resume journal);
* ``generate, 112 crops, N workers``: ``generate_dataset`` on an aligned manifest of the same
  photos (``lmk68_crop``, no detection): the fast path.

All rows use ``--mask-type mix --wearing random`` (the styled path, the slower one). Besides
wall-clock images/s the table gives CPU ms per image summed over the process tree (read from
/proc), i.e. what one core sustains even when other jobs share the machine, and peak RSS summed
over the process tree (parent + pool workers).

    .venv/bin/python benchmarks/bench_mtf.py            # 500 images, 3 repeats
    .venv/bin/python benchmarks/bench_mtf.py --quick    # 60 images, 1 repeat
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from _harness import child_main, parse, run_child

GEN_KW = {"mask_type": "mix", "wearing": "random"}


def _aligned(n: int) -> str:
    """An aligned manifest of the first n CelebA photos (built once, reused between runs)."""
    from mfrbench.align import align_dataset
    from mfrbench.datasets import create_dataset

    out = Path(tempfile.gettempdir()) / f"mfrbench-bench-mtf/celeba-aligned-{n}"
    if not (out / "manifest.csv").is_file():
        align_dataset(create_dataset("celeba"), out, limit=n, workers=2, progress=False)
    return str(out)


class _TreeMeter:
    """Samples this process and all its descendants from /proc (pool workers are forkserver
    children, which ``RUSAGE_CHILDREN`` misses): peak summed RSS and total CPU seconds."""

    def __init__(self, interval: float = 0.05) -> None:
        import threading

        self.peak_rss_mb = 0.0
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._t = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._t.start()

    def _tree(self) -> list[int]:
        kids: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                kids.setdefault(ppid, []).append(int(d))
        out, todo = [], [os.getpid()]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += kids.get(p, [])
        return out

    def sample(self) -> None:
        rss = 0.0
        for pid in self._tree():
            try:
                f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * self._page / 2**20
                self.cpu[pid] = (int(f[11]) + int(f[12])) / self._tick  # utime + stime
            except (OSError, IndexError, ValueError):
                continue
        self.peak_rss_mb = max(self.peak_rss_mb, rss)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.sample()

    def stop(self) -> tuple[float, float]:
        self._stop.set()
        self._t.join()
        self.sample()
        return self.peak_rss_mb, sum(self.cpu.values())


def _child(mode: str, n: int) -> dict:
    import cv2

    cv2.setNumThreads(1)  # per-core numbers: pipeline workers run single-threaded too
    from mfrbench.datasets import create_dataset

    ds = create_dataset("celeba")
    out = tempfile.mkdtemp(prefix="bench-mtf-")
    manifest = _aligned(n) if mode.startswith("crops") else None
    meter = _TreeMeter()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if mode.startswith("plain"):
        import numpy as np

        from mfrbench.faces import YuNet, create_landmarker, pick_main_face
        from mfrbench.generators import mask_templates
        from mfrbench.generators.base import image_rng
        from mfrbench.generators.mtf import mtf

        det, lm, gen = YuNet(), create_landmarker("auto"), mtf(**GEN_KW)
        ok = 0
        for rec in ds.records(n):
            bgr = cv2.imread(rec.path)
            if bgr is None:
                continue
            rgb = np.ascontiguousarray(bgr[..., ::-1])
            face = pick_main_face(det.detect(rgb), rgb.shape)
            if face is None:
                continue
            if mode == "plain-reread":  # MaskTheFace reads its template and config for every face
                mask_templates.load_kit.cache_clear()
                gen = mtf(**GEN_KW)
            masked, mask_map, _ = gen.mask_face(rgb, lm.landmarks(rgb, face), image_rng(0, rec.key))
            cv2.imwrite(os.path.join(out, f"{ok}.jpg"), masked[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(os.path.join(out, f"{ok}.png"), mask_map)
            ok += 1
        done = ok
    else:
        from mfrbench.generators.base import generate_dataset

        workers = int(mode.split("-")[1])
        meta = generate_dataset("mtf", out, dataset=None if manifest else ds, manifest=manifest, limit=n,
                                workers=workers, seed=0, generator_kwargs=GEN_KW, progress=False)
        ok = meta["ok"]
        done = meta["inputs"]  # every input was processed: skipped rows (mask_outside, no_face) cost work too
    dt = time.perf_counter() - t0
    tree_rss, tree_cpu = meter.stop()
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # CPU of the timed part: our own process time since t0 plus the workers' (whole life, they
    # start inside the timed part).
    workers_cpu = tree_cpu - meter.cpu.get(os.getpid(), 0.0)
    return {"mode": mode, "n": n, "ok": ok, "done": done, "seconds": dt, "rss_mb": max(rss_self, tree_rss),
            "cpu_s": time.process_time() - cpu0 + max(workers_cpu, 0.0)}


def _run(mode: str, n: int) -> dict:
    return run_child(__file__, mode, n)


NAMES = {
    "plain": "plain loop (imread, YuNet, PFLD, warp, imwrite)",
    "plain-reread": "plain loop, templates re-read per face",
    "wild-1": "generate, photos, 1 worker",
    "wild-2": "generate, photos, 2 workers",
    "crops-1": "generate, 112 crops, 1 worker",
    "crops-2": "generate, 112 crops, 2 workers",
}


def main() -> None:
    a, n, reps = parse()
    if child_main(a, _child):
        return
    _aligned(n), _aligned(max(n // 4, 10))  # setup outside the timed runs
    print(f"# mtf generation throughput, {n} CelebA images (mix styles, random wearing), median of {reps}; "
          f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    rows = {}
    for mode in NAMES:
        runs = [_run(mode, n) for _ in range(reps)]
        rows[mode] = {"ips": statistics.median(r["done"] / r["seconds"] for r in runs),
                      "cpu_ms": statistics.median(1000 * r["cpu_s"] / max(r["done"], 1) for r in runs),
                      "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                      "rss": max(r["rss_mb"] for r in runs), "ok": runs[0]["ok"]}
    base = rows["plain"]["ips"]
    print(f"{'pipeline':<50}{'ok':>6}{'img/s':>9}{'x plain':>9}{'CPU ms/img':>12}{'img/CPU-s':>11}"
          f"{'peak RSS MB':>13}")
    for mode, r in rows.items():
        print(f"{NAMES[mode]:<50}{r['ok']:>6}{r['ips']:>9.1f}{r['ips'] / base:>9.2f}{r['cpu_ms']:>12.2f}"
              f"{1000 / r['cpu_ms']:>11.1f}{r['rss']:>13.0f}")
    print("img/s counts every input processed (ok + skipped rows; the plain loop has no skip rows). "
          "img/s is wall clock (what a user waits); img/CPU-s = images per second of one busy core, "
          "the number that stays meaningful on a shared machine. Peak RSS sums the process tree.")
    print(f"2 workers / 1 worker: photos {rows['wild-2']['ips'] / rows['wild-1']['ips']:.2f}x, "
          f"crops {rows['crops-2']['ips'] / rows['crops-1']['ips']:.2f}x")
    small = {m: _run(m, max(n // 4, 10)) for m in ("wild-1", "crops-1")}
    for m, what in (("wild-1", "photos"), ("crops-1", "crops")):
        k = small[m]["n"]
        marginal = 1000 * (rows[m]["cpu_s"] - small[m]["cpu_s"]) / max(n - k, 1)
        print(f"steady state, {what}, 1 worker: {marginal:.2f} CPU ms/img = {1000 / max(marginal, 1e-9):.0f} img/CPU-s "
              f"(CPU of {n} minus CPU of {k} images: per-process start-up costs cancel)")
    print(f"memory flatness: peak RSS {small['crops-1']['rss_mb']:.0f} MB at {small['crops-1']['n']} crops vs "
          f"{rows['crops-1']['rss']:.0f} MB at {n} crops")


if __name__ == "__main__":
    main()
