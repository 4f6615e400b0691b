"""Sharded generation and `mfrbench merge` (issue 15), each next to its baseline from the same run.

1. **generate by shards**: `mfrbench generate --method mtf` on an aligned manifest of the first N
   CelebA images of the data kit, as N = 1, 2, 4 shard processes started together (what N array
   tasks do, here all on this machine's cores) plus `mfrbench merge`, against one process
   (`--workers 1`) and the local pool (`--workers 2`): wall time, total CPU seconds (shards + merge),
   and whether the merged manifest.csv is byte-identical to the one-process run's.
2. **merge of 10^6 rows**: 4 synthetic shard folders of masked-manifest rows (landmarks, mask
   columns, 1 % duplicate pairs across shards) merged in a child process: wall time and peak RSS at
   10^5 and 10^6 rows (flat memory: the same peak at both), and the file-linking cost per file.
3. **Ray engine overhead** (when `ray` imports): `--engine ray --workers 2` against `--workers 2`
   on the same 2 cores, at N/4 and N images: the ratio, and the fixed cost it comes from.

    .venv/bin/python benchmarks/bench_shards.py                 # 400 images, 10^6 merge rows
    .venv/bin/python benchmarks/bench_shards.py --quick         # 60 images, 10^5 merge rows
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = Path(os.environ.get("BENCH_SHARDS_DIR", Path(tempfile.gettempdir()) / "mfrbench-bench-shards"))


def _mfrbench() -> list[str]:
    return [sys.executable, "-c", "from mfrbench.cli import main; main()"]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run_all(cmds: list[list[str]]) -> tuple[float, float]:
    """Start ``cmds`` together, wait for all; (wall s, CPU s of them)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    c0, t0 = _children_cpu(), time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for c in cmds]
    for p, c in zip(procs, cmds):
        if p.wait() != 0:
            raise SystemExit(f"failed: {' '.join(c)}\n{p.stderr.read().decode()[-2000:]}")
    return time.perf_counter() - t0, _children_cpu() - c0


def _sha(p: Path) -> str:
    return hashlib.sha1(p.read_bytes()).hexdigest()


def aligned_manifest(n: int) -> Path:
    """The first n CelebA images aligned once (cached between runs)."""
    out = WORK / f"aligned-{n}"
    if not (out / "manifest.csv").is_file():
        _run_all([_mfrbench() + ["align", "--dataset", "celeba", "--limit", str(n), "--out", str(out), "--workers",
                                 "2", "--no-grid"]])
    return out


def bench_generate(n: int) -> list[dict]:
    src = aligned_manifest(n)
    gen = _mfrbench() + ["generate", "--method", "mtf", "--mask-type", "mix", "--wearing", "random", "--seed", "1",
                         "--manifest", str(src), "--no-grid"]
    rows = []
    base = WORK / f"gen-{n}-one"
    subprocess.run(["rm", "-rf", str(WORK / f"gen-{n}-one"), str(WORK / f"gen-{n}-pool")], check=True)
    wall, cpu = _run_all([gen + ["--out", str(base), "--workers", "1"]])
    rows.append({"run": "one process (--workers 1)", "wall_s": wall, "cpu_s": cpu, "identical": "baseline"})
    wall, cpu = _run_all([gen + ["--out", str(WORK / f"gen-{n}-pool"), "--workers", "2"]])
    rows.append({"run": "local pool (--workers 2)", "wall_s": wall, "cpu_s": cpu,
                 "identical": _sha(WORK / f"gen-{n}-pool" / "manifest.csv") == _sha(base / "manifest.csv")})
    for k in (1, 2, 4):
        d = WORK / f"gen-{n}-shards{k}"
        subprocess.run(["rm", "-rf", str(d)], check=True)
        wall, cpu = _run_all([gen + ["--out", str(d / str(i)), "--workers", "1", "--shard", f"{i}/{k}"]
                              for i in range(k)])
        mw, mc = _run_all([_mfrbench() + ["merge", str(d / "merged")] + [str(d / str(i)) for i in range(k)]])
        rows.append({"run": f"{k} shard{'s' if k > 1 else ''} + merge", "wall_s": wall + mw, "cpu_s": cpu + mc,
                     "merge_s": mw, "identical": _sha(d / "merged" / "manifest.csv") == _sha(base / "manifest.csv")})
    return rows


# --------------------------------------------------------------------------- merge of synthetic rows
def _row(i: int, rng) -> dict:
    key = f"m.{i // 70:07d}/{i:08d}.jpg"
    dup_of = i - 1 if i % 100 == 1 else i  # 1 % of the rows share their bytes with the row before
    lm = [round(float(v), 2) for v in rng.uniform(0, 112, 136)]
    return {"key": key, "src_path": f"/data/ms1m/aligned/images/{key}", "sha1": hashlib.sha1(str(dup_of).encode())
            .hexdigest(), "identity": key.split("/")[0], "is_masked": False, "source": "aligned", "out_path":
            f"images/{key}", "status": "ok", "reason": "", "map_out_path": f"maps/{key[:-4]}.png", "frame": "aligned",
            "width": 112, "height": 112, "generator": "mtf", "seed": 1, "mask_type": "surgical", "template": "surgical",
            "color": "#1f3a93", "texture": "", "wearing": "correct", "anchors": [1, 2, 3, 4], "yaw_bin": "frontal",
            "yaw_deg": round(float(rng.normal(0, 10)), 2), "covers_eyes": False, "covers_nose": True,
            "covers_mouth": True, "covers_chin": True, "covered_parts": ["nose", "mouth", "chin"], "lmk68": lm}


def make_shards(rows: int, k: int = 4) -> Path:
    """k shard folders holding ``rows`` synthetic masked rows between them (cached between runs)."""
    import numpy as np

    from mfrbench.manifest import MANIFEST_JSON, cell, csv_columns, csv_line
    from mfrbench.shards import InputTally, shard_of

    d = WORK / f"merge-{rows}"
    if (d / "done").is_file():
        return d
    rng = np.random.default_rng(0)
    cols = csv_columns(_row(0, rng))
    tally = InputTally()
    fhs = []
    for s in range(k):
        (d / str(s)).mkdir(parents=True, exist_ok=True)
        c, j = open(d / str(s) / "manifest.csv", "w"), open(d / str(s) / "rows.jsonl", "w")
        c.write(csv_line(cols))
        fhs.append((c, j))
    counts = [0] * k
    for i in range(rows):
        r = _row(i, rng)
        tally.add(r["key"])
        s = shard_of(r["key"], k)
        counts[s] += 1
        fhs[s][0].write(csv_line(cell(r.get(c)) for c in cols))
        fhs[s][1].write(json.dumps(r) + "\n")
    for c, j in fhs:
        c.close()
        j.close()
    for s in range(k):
        meta = {"schema_version": 1, "kind": "masked", "tool": "mfrbench", "tool_version": "bench", "created": "x",
                "finished": "y", "seed": 1, "config": {"stage": "generate", "shard": {"index": s, "count": k}},
                "synthetic": False, "inputs": counts[s], "ok": counts[s], "skipped": 0, "skip_reasons": {},
                "seed_version": 2, "shard": {"index": s, "count": k, "inputs_all": tally.n,
                                             "inputs_fingerprint": tally.fingerprint, "dedupe": True}}
        (d / str(s) / MANIFEST_JSON).write_text(json.dumps(meta, indent=2))
    (d / "done").write_text("")
    return d


def _merge_child(rows: int) -> dict:
    from mfrbench.merge import merge_shards

    d = WORK / f"merge-{rows}"
    out = Path(tempfile.mkdtemp(prefix="merged-", dir=WORK))
    t0 = time.perf_counter()
    meta = merge_shards(out, [d / str(s) for s in range(4)], files=False)
    wall = time.perf_counter() - t0
    size = (out / "manifest.csv").stat().st_size
    subprocess.run(["rm", "-rf", str(out)], check=True)
    return {"rows": rows, "wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "csv_mb": size / 2**20, "duplicates": meta["skip_reasons"].get("duplicate", 0)}


def bench_merge(sizes: list[int]) -> list[dict]:
    out = []
    for rows in sizes:
        make_shards(rows)
        r = subprocess.run([sys.executable, __file__, "--merge-child", str(rows)], capture_output=True, text=True,
                           check=True)
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


def bench_link(n: int = 20_000) -> float:
    """Seconds per file of the merge's hard link (temp name + rename), on this file system."""
    from mfrbench.merge import _place

    src, dst = WORK / "link-src", WORK / "link-dst"
    subprocess.run(["rm", "-rf", str(src), str(dst)], check=True)
    src.mkdir(parents=True)
    for i in range(n):
        (src / f"{i}.jpg").write_bytes(b"x" * 3000)
    t0 = time.perf_counter()
    for i in range(n):
        _place(src / f"{i}.jpg", dst / f"d{i % 100}" / f"{i}.jpg")
    return (time.perf_counter() - t0) / n


def bench_ray(n: int) -> list[dict]:
    try:
        import ray  # noqa: F401
    except ImportError:
        return []
    src = aligned_manifest(n)
    gen = _mfrbench() + ["generate", "--method", "mtf", "--mask-type", "mix", "--seed", "1", "--no-grid",
                         "--workers", "2", "--manifest", str(src)]
    rows = []
    for m in (max(n // 4, 10), n):
        res = {}
        for engine in ("local", "ray"):
            d = WORK / f"ray-{m}-{engine}"
            subprocess.run(["rm", "-rf", str(d)], check=True)
            res[engine] = _run_all([gen + ["--out", str(d), "--limit", str(m), "--engine", engine]])
        rows.append({"images": m, "local_s": res["local"][0], "ray_s": res["ray"][0],
                     "ratio": res["ray"][0] / res["local"][0], "fixed_s": res["ray"][0] - res["local"][0],
                     "identical": _sha(WORK / f"ray-{m}-ray" / "manifest.csv") ==
                     _sha(WORK / f"ray-{m}-local" / "manifest.csv")})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: generate,merge,ray")
    ap.add_argument("--merge-child", type=int, default=None)
    a = ap.parse_args()
    if a.merge_child:
        print(json.dumps(_merge_child(a.merge_child)))
        return
    n, rows = (60, 100_000) if a.quick else (a.n, a.rows)
    skip = set(a.skip.split(","))
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
    if "generate" not in skip:
        print(f"\n## generate --method mtf on {n} aligned CelebA crops (shards started together on this machine)\n")
        print("| run | wall s | CPU s | img/s | merge s | manifest.csv identical |")
        print("|---|---:|---:|---:|---:|---|")
        for r in bench_generate(n):
            print(f"| {r['run']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {n / r['wall_s']:.1f} | "
                  f"{r.get('merge_s', 0):.2f} | {r['identical']} |")
        print("\nwall and CPU include each process's start (imports, models); CPU counts the processes the run "
              "waits for, so the local pool's forkserver workers are missing from its CPU column")
    if "merge" not in skip:
        print("\n## mfrbench merge of 4 synthetic shard folders (masked rows with 68 landmarks, 1 % duplicates)\n")
        print("| rows | wall s | rows/s | peak RSS MB | manifest.csv MB | duplicates |")
        print("|---:|---:|---:|---:|---:|---:|")
        for r in bench_merge(sorted({max(rows // 10, 1000), rows})):
            print(f"| {r['rows']:,} | {r['wall_s']:.1f} | {r['rows'] / r['wall_s']:,.0f} | {r['peak_rss_mb']:.0f} | "
                  f"{r['csv_mb']:.0f} | {r['duplicates']:,} |")
        per = bench_link()
        print(f"\nlinking the outputs: {per * 1e6:.0f} µs per file (hard link + rename), "
              f"{per * 2 * rows:.0f} s for the images and maps of {rows:,} rows")
    if "ray" not in skip:
        rr = bench_ray(n)
        if rr:
            print("\n## --engine ray vs the local pool, 2 workers each, same machine\n")
            print("| images | local s | ray s | ray / local | ray's extra s | identical |")
            print("|---:|---:|---:|---:|---:|---|")
            for r in rr:
                print(f"| {r['images']} | {r['local_s']:.1f} | {r['ray_s']:.1f} | {r['ratio']:.2f} | "
                      f"{r['fixed_s']:.1f} | {r['identical']} |")
        else:
            print("\n(ray not installed: the Ray engine comparison is skipped)")
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
