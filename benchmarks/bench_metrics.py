"""All-pairs TAR@FAR at scale: mfrbench's streamed ROC against a naive scikit-learn baseline.

Cases (each in a fresh subprocess, so peak memory is per case):

* ``baseline``: N x N pairs at a size where the naive way fits in memory. Naive = full score
  matrix (numpy), flattened labels, ``sklearn.metrics.roc_curve(drop_intermediate=False)`` and
  a read-out of TAR@FAR under the same rule. Ours = :func:`mfrbench.metrics.streamed_roc`
  (blocked matrix products, histogram + exact band). The TARs must agree exactly.
* ``1e8``: 10,000 x 10,000 embeddings (512-d) = 10^8 pairs, ours only (target <= 15 s, < 1 GiB).
* ``1e9``: 31,623 x 31,623 = 10^9 pairs, ours only (target <= 2 min, < 2 GiB).

Embeddings: synthetic identities (10 images each) with Gaussian noise, so genuine pairs are
10 per row. Peak memory is the process's ``ru_maxrss``; "work" is the peak minus the RSS after
imports and data generation (what the metric itself needs).

    .venv/bin/python benchmarks/bench_metrics.py --quick       # baseline at 2,000^2 + 10^8 once
    .venv/bin/python benchmarks/bench_metrics.py               # baseline 4,000^2 (x3), 10^8 (x3)
    .venv/bin/python benchmarks/bench_metrics.py --with-1e9    # also 10^9 (once, ~1-2 min)
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

FARS = [1e-4, 1e-3, 1e-2]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _embeddings(n: int, dim: int = 512, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = np.arange(n) // 10
    centers = rng.standard_normal((ids.max() + 1, dim), dtype=np.float32)
    A = centers[ids] + 3.0 * rng.standard_normal((n, dim), dtype=np.float32)
    B = centers[ids] + 3.0 * rng.standard_normal((n, dim), dtype=np.float32)
    return A, B, ids


def _worker(case: str, n: int) -> dict:
    import warnings

    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    from mfrbench.metrics import FARResolutionWarning, streamed_roc

    warnings.simplefilter("ignore", FARResolutionWarning)
    A, B, ids = _embeddings(n)
    base = _rss_mib()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if case == "naive":
        from sklearn.metrics import roc_curve

        An = A / np.linalg.norm(A, axis=1, keepdims=True)
        Bn = B / np.linalg.norm(B, axis=1, keepdims=True)
        scores = (An @ Bn.T).ravel()
        labels = (ids[:, None] == ids[None, :]).ravel()
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        tar = [float(tpr[fpr <= f].max()) for f in FARS]
    else:
        st = streamed_roc(A, B, ids, ids, far=FARS)
        tar = st.points.tar.tolist()
    dt = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"case": case, "n": n, "pairs": n * n, "time_s": dt, "cpu_s": cpu, "peak_mib": _rss_mib(),
            "base_mib": base, "tar": tar}


def _run(case: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--_worker", case, str(n)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(runs: list[dict]) -> dict:
    best = dict(runs[0])
    best["time_s"] = statistics.median(r["time_s"] for r in runs)
    best["cpu_s"] = statistics.median(r["cpu_s"] for r in runs)
    best["peak_mib"] = max(r["peak_mib"] for r in runs)
    best["base_mib"] = min(r["base_mib"] for r in runs)
    best["runs"] = len(runs)
    return best


def _fmt(r: dict) -> str:
    work = r["peak_mib"] - r["base_mib"]
    return (f"{r['case']:<8} {r['pairs']:>14,} {r['time_s']:>9.2f} {r['cpu_s']:>8.1f} {r['peak_mib']:>9.0f} "
            f"{work:>9.0f}  {r['runs']:>4}  {' '.join(f'{t:.5f}' for t in r['tar'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small baseline, one run each")
    ap.add_argument("--with-1e9", action="store_true", help="also run the 10^9-pair case (once)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._worker:
        print(json.dumps(_worker(args._worker[0], int(args._worker[1]))))
        return
    import torch

    reps = args.repeats or (1 if args.quick else 3)
    n_base = 2000 if args.quick else 4000
    print(f"# bench_metrics  loadavg={os.getloadavg()}  cpus={os.cpu_count()}  torch={torch.__version__} "
          f"threads={os.cpu_count()}  repeats={reps}")
    print("# time = median wall seconds; cpu = user+sys CPU seconds of the process (all threads; on an idle "
          "2-core box wall ~ cpu / 2 when both threads run); peak = max RSS MiB; work = peak - RSS after data")
    print(f"{'case':<8} {'pairs':>14} {'time_s':>9} {'cpu_s':>8} {'peak':>9} {'work':>9}  runs  TAR@FAR=" + ",".join(
        f"{f:g}" for f in FARS))
    naive = _median([_run("naive", n_base) for _ in range(reps)])
    ours = _median([_run("ours", n_base) for _ in range(reps)])
    print(_fmt(naive))
    print(_fmt(ours))
    same = naive["tar"] == ours["tar"]
    print(f"# {n_base}^2 pairs: naive/ours time ratio = {naive['time_s'] / ours['time_s']:.2f}x, work-memory ratio = "
          f"{(naive['peak_mib'] - naive['base_mib']) / max(ours['peak_mib'] - ours['base_mib'], 1):.1f}x, "
          f"TAR identical: {same}")
    big = [("ours", 10_000, 1 if args.quick else reps, 15, 1024)]
    if args.with_1e9:
        big.append(("ours", 31_623, 1, 120, 2048))
    for case, n, r, t_target, m_target in big:
        res = _median([_run(case, n) for _ in range(r)])
        print(_fmt(res))
        print(f"# {n:,}^2 = {n * n:.1e} pairs: {res['time_s']:.1f} s (target <= {t_target} s), peak "
              f"{res['peak_mib']:.0f} MiB (target < {m_target} MiB)")
    if not same:
        sys.exit("TAR mismatch between naive and streamed")


if __name__ == "__main__":
    main()
