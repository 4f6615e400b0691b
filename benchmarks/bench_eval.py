"""Evaluation speed: ``mfrbench eval`` on a benchmark whose crops are cached vs a bare loop over the same crops.

Rows (each in a fresh subprocess, torch/OpenCV/BLAS at ``--threads`` threads; median of ``--repeats``):

* ``bare loop``: what a user would write with the same trained network: ``load_backbone`` (eval
  mode, ``torch.no_grad``), for each of the protocol's crops ``cv2.imread`` -> RGB -> ``(x - 127.5)
  / 127.5`` in batches of 64 -> forward of the crop and of its mirror image (the flip test every
  row uses), summed -> cosine scores of the protocol's pairs (and all-pairs sets, as one matrix
  product). No metrics, no files;
* ``eval``: ``mfrbench.evaluate.evaluate`` with the crop cache in place but no embedding cache
  (deleted before each run): protocol build, the cached crops, embedding, verification with the
  identity-bootstrap CIs, identification, plots and the results row;
* ``eval, plain module``: the same, with the embedder as it was before issue 16 (the backbone as
  loaded, NCHW, BatchNorm unfolded): what the inference module (folded BatchNorm, channels_last)
  changes.

Both rows start from a cold process and include loading the model. The ratio is bare-loop time
over eval time (goal, issue 16: >= 0.8). Setup (first alignment of the benchmark, a one-step
``train-fr`` run on the benchmark's own aligned crops for a real run folder) is outside the timed
rows and cached in ``$TMPDIR/mfrbench-bench-eval/``.

    flock /work/coord/cpu.lock nice -n 5 .venv/bin/python benchmarks/bench_eval.py --benchmark rmfrd
    .venv/bin/python benchmarks/bench_eval.py --quick --identities 8   # one repeat, 8 RMFRD people (folder)
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORK = Path(tempfile.gettempdir()) / "mfrbench-bench-eval"


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--benchmark", default="rmfrd")
    ap.add_argument("--identities", type=int, default=0,
                    help="> 0: a `folder` benchmark of the first N RMFRD identities (symlinks), for a short run")
    ap.add_argument("--backbone", default="mobilefacenet")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", default=None)
    return ap.parse_args()


def _subset(n: int) -> Path:
    """``ROOT/masked/<id>`` + ``ROOT/unmasked/<id>``: the first ``n`` RMFRD identities, as symlinks."""
    from mfrbench.paths import data_root

    src = data_root() / "rmfrd"
    root = WORK / f"rmfrd-{n}"
    ids = sorted(set(os.listdir(src / "AFDB_face_dataset")) & set(os.listdir(src / "AFDB_masked_face_dataset")))[:n]
    for tree, name in (("AFDB_masked_face_dataset", "masked"), ("AFDB_face_dataset", "unmasked")):
        for ident in ids:
            d = root / name / ident
            d.mkdir(parents=True, exist_ok=True)
            for f in sorted(os.listdir(src / tree / ident)):
                if not (d / f).exists():
                    os.symlink(src / tree / ident / f, d / f)
    return root


def _eval_cfg(benchmark: str):
    from mfrbench.evaluate import EvalConfig

    if benchmark.startswith("rmfrd-"):  # --identities N
        return EvalConfig(benchmark="folder", root=str(_subset(int(benchmark.split("-")[1]))))
    kw = {}
    if benchmark == "lfw-masked":
        from mfrbench.generators.base import generator_factory

        kw = {"masker": generator_factory}
    return EvalConfig(benchmark=benchmark, protocol_kwargs=kw)


def _setup(benchmark: str, backbone: str) -> tuple[Path, Path]:
    """(run folder, crop cache) for ``benchmark``: crops aligned once, a one-step run trained on them."""
    from mfrbench.cli import evaluate as _cli  # noqa: F401  (registers the run loader)
    from mfrbench.evaluate import prepare

    cache, run = WORK / "cache", WORK / f"run-{backbone}"
    prep = prepare(_eval_cfg(benchmark), WORK / "results", cache, workers=2, progress=False)
    if not (run / "checkpoints" / "last.pt").is_file():
        from mfrbench.recognizers.config import load_config
        from mfrbench.recognizers.train import train

        train(load_config(data=(str(prep.work / "aligned"),), backbone=backbone, out=str(run), max_steps=1,
                          workers=0, progress=False, val_identities=0))
    return run, cache


def _bare(run: Path, benchmark: str, cache: Path) -> dict:
    import cv2
    import numpy as np
    import torch

    from mfrbench.evaluate import prepare
    from mfrbench.recognizers.embed import load_backbone

    prep = prepare(_eval_cfg(benchmark), WORK / "results", cache, workers=1, progress=False)  # pairs + crop paths
    t0 = time.perf_counter()
    model, _ = load_backbone(run)
    paths = prep.images.crop_path.to_numpy()
    use = np.flatnonzero(prep.ok)
    E = np.zeros((len(paths), model.embedding_dim), np.float32)
    with torch.no_grad():
        for s in range(0, len(use), 64):
            idx = use[s:s + 64]
            x = np.stack([cv2.imread(paths[i])[..., ::-1] for i in idx]).astype(np.float32)
            x = torch.from_numpy(((x - 127.5) / 127.5).transpose(0, 3, 1, 2).copy())
            E[idx] = (model(x) + model(torch.flip(x, dims=[3]))).numpy()
    E /= np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    n_scores = 0
    if prep.proto.pairs is not None:
        p = prep.proto.pairs
        n_scores += len((E[p.a.to_numpy()] * E[p.b.to_numpy()]).sum(1))
    for ap in prep.proto.allpairs:
        g = ap.probe if ap.same_set else ap.gallery
        n_scores += (E[np.asarray(ap.probe)] @ E[np.asarray(g)].T).size
    return {"seconds": time.perf_counter() - t0, "images": int(len(use)), "scores": int(n_scores)}


def _plain_embedder(run: Path):
    """The embedder before issue 16: the backbone as loaded, NCHW, ``torch.no_grad``."""
    import torch

    from mfrbench.recognizers.embed import Embedder, load_backbone

    model, info = load_backbone(run)

    @torch.no_grad()
    def fwd(x):
        return model(torch.from_numpy(x)).float().numpy()

    emb = Embedder(fwd, info, int(info["embedding_dim"]))
    emb.metric = "cosine"
    emb.info.setdefault("model", run.name)
    return emb


def _eval(run: Path, benchmark: str, cache: Path, plain: bool = False) -> dict:
    from mfrbench.cli import evaluate as _cli  # noqa: F401  (registers the run loader)
    from mfrbench.evaluate import evaluate

    # crops cached, embeddings not (neither the protocol's file nor the store shared by crop content)
    for f in glob.glob(str(cache / "*" / "emb-*.npz")) + glob.glob(str(cache / "embeddings" / "*.npz")):
        os.remove(f)
    t0 = time.perf_counter()
    row = evaluate(str(run), _eval_cfg(benchmark), results_dir=WORK / "results", cache_dir=cache, workers=1,
                   progress=False, model=_plain_embedder(run) if plain else None)
    return {"seconds": time.perf_counter() - t0, "acc": row.get("acc"), "rank1": row.get("rank1")}


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM): unlike ``ru_maxrss``, not inherited across fork + exec from the parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(a: argparse.Namespace) -> None:
    import cv2
    import torch

    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    run, cache = WORK / f"run-{a.backbone}", WORK / "cache"
    c0 = time.process_time()
    if a.child == "bare":
        out = _bare(run, a.benchmark, cache)
    else:
        out = _eval(run, a.benchmark, cache, plain=a.child == "eval-plain")
    out.update(cpu_s=time.process_time() - c0, rss_mb=_peak_rss_mb())
    print(json.dumps(out))


def _run(a: argparse.Namespace, mode: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    cmd = [sys.executable, __file__, "--child", mode, "--benchmark", a.benchmark, "--backbone", a.backbone,
           "--threads", str(a.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"{mode} child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    a = _args()
    if a.child:
        return _child(a)
    reps = 1 if a.quick else a.repeats
    if a.identities > 0:
        a.benchmark = f"rmfrd-{a.identities}"
    _setup(a.benchmark, a.backbone)
    print(f"# eval speed, {a.benchmark}, {a.backbone}, crops cached, {a.threads} thread(s) per process, median of "
          f"{reps}; loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    modes = ("bare", "eval", "eval-plain")
    rows = {m: [_run(a, m) for _ in range(reps)] for m in modes}
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "cpu_s")} for m, rs in rows.items()}
    b = rows["bare"][0]
    print(f"{'pipeline':<58}{'wall s':>8}{'CPU-s':>8}{'img/s':>8}{'peak RSS MB':>13}")
    names = {"bare": f"bare loop (imread, forward + flip, cosine; {b['images']} crops, {b['scores']:,} scores)",
             "eval": "mfrbench eval (crops cached, embeddings not)",
             "eval-plain": "mfrbench eval, plain module (before issue 16)"}
    for m in modes:
        print(f"{names[m]:<58}{med[m]['seconds']:>8.2f}{med[m]['cpu_s']:>8.2f}{b['images'] / med[m]['seconds']:>8.1f}"
              f"{max(r['rss_mb'] for r in rows[m]):>13.0f}")
    ratio = med["bare"]["seconds"] / med["eval"]["seconds"]
    before = med["bare"]["seconds"] / med["eval-plain"]["seconds"]
    print(f"eval speed = bare-loop time / eval time = {ratio:.2f}x (goal >= 0.8; CPU-s ratio "
          f"{med['bare']['cpu_s'] / med['eval']['cpu_s']:.2f}x; plain module {before:.2f}x); eval row: acc "
          f"{rows['eval'][0]['acc']} (plain module {rows['eval-plain'][0]['acc']}), "
          f"rank-1 {rows['eval'][0]['rank1']}; loadavg at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
