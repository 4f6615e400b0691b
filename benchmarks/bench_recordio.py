"""RecordIO reading: decoded crops/s from ``train.rec`` vs the same JPEG bytes read from a folder.

Both paths decode with OpenCV into the trainer's (112, 112, 3) RGB crops
(``mfrbench.recognizers.data.decode_crop``), in a random (shuffled) order as training reads them,
one process, single-threaded; the folder copy is written to a temporary directory first (same bytes,
one file per record). Memory: peak RSS of a fresh child that indexes the set and reads N crops, for two
N, so a reader that keeps decoded images would show it. Medians of ``--repeats`` runs.

    python benchmarks/bench_recordio.py                       # the kit's celeba-rec
    python benchmarks/bench_recordio.py --rec faces_emore/    # any insightface set
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def read_rate(kind: str, rec: str, n: int, folder: str | None, seed: int = 0) -> dict:
    from mfrbench.recognizers.data import decode_crop
    from mfrbench.recordio import RecordFile, open_recordset

    t0 = time.perf_counter()
    rs = open_recordset(rec)
    index_s = time.perf_counter() - t0
    order = np.random.default_rng(seed).permutation(len(rs))[:n]
    cache: dict = {}
    t, c = time.perf_counter(), time.process_time()
    for i in order:
        if kind == "rec":
            img = decode_crop(str(rs.rec), int(rs.offsets[i]), cache)
        else:
            img = decode_crop(os.path.join(folder, f"{i}.jpg"))
        assert img is not None and img.shape == (112, 112, 3)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    RecordFile(rs.rec).close()
    return {"per_s": len(order) / wall, "cpu_ms": 1000 * cpu / len(order), "index_s": index_s,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "n": int(len(order))}


def write_folder(rec: str) -> str:
    from mfrbench.recordio import RecordFile, open_recordset

    rs = open_recordset(rec)
    f = RecordFile(rs.rec)
    out = tempfile.mkdtemp(prefix="bench-recordio-")
    for i, off in enumerate(rs.offsets):
        Path(out, f"{i}.jpg").write_bytes(f.record(int(off)).image)
    return out


def child(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--_child", *args], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rec", default=None, help="RecordIO set [default: <data root>/celeba-rec]")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child:
        kind, rec, n, folder = a._child
        import cv2

        cv2.setNumThreads(1)
        print(json.dumps(read_rate(kind, rec, int(n), None if folder == "-" else folder)))
        return 0
    from mfrbench.paths import data_root

    rec = a.rec or (str(data_root() / "celeba-rec") if data_root() else None)
    if not rec or not Path(rec).exists():
        print("bench_recordio: no RecordIO set (pass --rec or put the kit at ../shared/data)", file=sys.stderr)
        return 2
    folder = write_folder(rec)
    print(f"# bench_recordio: {rec}; load average {os.getloadavg()[0]:.2f}; {a.repeats} repeats, shuffled order, "
          f"1 thread")
    rows = {}
    for kind in ("rec", "folder"):
        runs = [child([kind, rec, str(a.n), folder if kind == "folder" else "-"]) for _ in range(a.repeats)]
        rows[kind] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    r, f = rows["rec"], rows["folder"]
    print(f"decoded crops/s: RecordIO {r['per_s']:.0f} ({r['cpu_ms']:.2f} CPU-ms each) vs folder {f['per_s']:.0f} "
          f"({f['cpu_ms']:.2f} CPU-ms) = {r['per_s'] / f['per_s']:.2f}x; indexing the set {r['index_s']:.2f} s")
    small = child(["rec", rec, str(max(a.n // 10, 1)), "-"])
    print(f"peak RSS: {small['n']} crops {small['rss_mb']:.0f} MB, {r['n']:.0f} crops {r['rss_mb']:.0f} MB "
          f"(flat: only the offsets are held); load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
