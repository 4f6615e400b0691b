"""Do the recognizers learn? Each loss's ``train-fr --profile cpu`` run next to the same network untrained.

For every loss this trains (or resumes, or reuses when finished) ``train-fr --profile cpu --loss L`` on
``--data`` (default: the kit's ``celeba-rec``, whole identities held out), then scores in the same run:

* the **trained** network;
* the **same network untrained**: the initial weights the run started from (same seed), with its
  BatchNorm statistics re-estimated on training images, so the baseline is not handicapped by
  initial running statistics;
* **raw pixels** (gray, 32x32, standardised: what a network has to beat to have learned anything);

on held-out rank-1 identification (identity-bootstrap 95 % CI over the held-out identities), LFW and
lfw-masked accuracy (the evaluator's 10-fold protocol: mean +/- fold std) and TAR@FAR=1e-3 (identity-
bootstrap CI). It prints a table, writes ``OUT/bench_learning.json`` + ``.md``, and lists the issue's
goals (every loss >= 2x its untrained rank-1 and >= 10 points above it on LFW; the best loss >= 80 %
on LFW and >= 70 % on lfw-masked) as met or not.

    python benchmarks/bench_learning.py --out runs/bench-learning             # all four losses (~80 min)
    python benchmarks/bench_learning.py --losses cosface --out runs/bl        # one loss
    python benchmarks/bench_learning.py --smoke --out /tmp/bl                 # seconds: the pipeline only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from _harness import eval_protocol_kwargs

from mfrbench.evaluate import EvalConfig, default_cache_dir, evaluate
from mfrbench.metrics.bootstrap import bootstrap_rank_ci
from mfrbench.paths import data_root
from mfrbench.recognizers.backbones import create_backbone
from mfrbench.recognizers.config import resolve_config
from mfrbench.recognizers.data import build_train_data, decode_crop
from mfrbench.recognizers.embed import Embedder, load_embedder
from mfrbench.recognizers.train import run_dir_of, train
from mfrbench.recognizers.validate import gallery_probe_split, reestimate_batchnorm

LOSSES = ("arcface", "cosface", "softmax", "triplet")
BENCHMARKS = ("lfw", "lfw-masked")


class PixelEmbedder:
    """Raw pixels: gray, 32x32, zero mean and unit norm per image (a floor any learned model must clear)."""

    embedding_dim = 32 * 32
    metric = "cosine"
    info = {"backbone": "pixels", "loss": "none", "config_hash": "pixels-gray32", "generator": "none"}

    def embed(self, images: np.ndarray, *, flip: bool = False) -> np.ndarray:
        out = []
        for img in images:
            g = cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
            v = g.astype(np.float32).ravel()
            if flip:
                v = v + g[:, ::-1].astype(np.float32).ravel()
            out.append(v - v.mean())
        return np.stack(out)


def untrained_embedder(cfg, train_images: np.ndarray, info: dict) -> Embedder:
    """The run's initial network (``setup`` seeds torch with ``cfg.seed`` right before building it),
    BatchNorm running statistics re-estimated (cumulative average) on ``train_images``."""
    torch.manual_seed(cfg.seed)
    model = create_backbone(cfg.backbone, embedding_dim=cfg.embedding_dim, input_size=cfg.input_size)
    batches = (torch.from_numpy(train_images[i:i + 64]).permute(0, 3, 1, 2) for i in range(0, len(train_images), 64))
    reestimate_batchnorm(model, batches, torch.device("cpu"))

    @torch.no_grad()
    def run(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x)).numpy()

    info = {**info, "config_hash": f"{info['config_hash']}-untrained", "model": f"{info.get('loss')}-untrained"}
    return Embedder(run, info, cfg.embedding_dim)


def load_crops(samples) -> np.ndarray:
    imgs = [decode_crop(s.path, s.offset) for s in samples]
    return np.stack([i for i in imgs if i is not None])


def held_out_rank1(model, val_images: np.ndarray, val_samples, val_labels: np.ndarray, n_boot: int) -> dict:
    """Rank-1 of each held-out probe against one gallery image per held-out identity, with an
    identity-bootstrap CI (probes of a drawn identity come together)."""
    e = model.embed(val_images, flip=True)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    gallery = gallery_probe_split(list(val_samples), val_labels)
    g_lab = val_labels[gallery]
    s = e[~gallery] @ e[gallery].T                                        # (probes, gallery identities)
    column = {int(lab): j for j, lab in enumerate(g_lab)}
    true = s[np.arange(len(s)), [column[int(lab)] for lab in val_labels[~gallery]]]
    ranks = 1 + (s > true[:, None]).sum(1)
    lo, hi = bootstrap_rank_ci(ranks, val_labels[~gallery], 1, n_boot=n_boot)
    return {"rank1": float((ranks == 1).mean()), "rank1_lo": lo, "rank1_hi": hi, "chance": 1 / gallery.sum(),
            "probes": int((~gallery).sum())}


def score(name: str, model, val, out: Path, cache: Path, n_boot: int) -> dict:
    row = {"model": name, **held_out_rank1(model, *val, n_boot=n_boot)}
    for b in BENCHMARKS:
        cfg = EvalConfig(benchmark=b, n_boot=n_boot, protocol_kwargs=eval_protocol_kwargs(b))
        r = evaluate("", cfg, results_dir=out / "results", cache_dir=cache, progress=False, model=model)
        row[b] = {"acc": r.get("acc"), "acc_std": r.get("acc_std"), "tar": r.get("tar_far_1e-3"),
                  "tar_lo": r.get("tar_far_1e-3_lo"), "tar_hi": r.get("tar_far_1e-3_hi"), "eval_id": r.get("eval_id")}
    return row


def _fmt(row: dict) -> str:
    cells = [f"{row['model']:<22}", f"{row['rank1']:.3f} [{row['rank1_lo']:.3f}, {row['rank1_hi']:.3f}]"]
    for b in BENCHMARKS:
        r = row[b]
        cells.append(f"{100 * r['acc']:.1f} ± {100 * (r['acc_std'] or 0):.1f}")
        cells.append(f"{r['tar']:.3f} [{r['tar_lo']:.3f}, {r['tar_hi']:.3f}]")
    return " | ".join(cells)


HEADER = ("model | held-out rank-1 [95% CI] | LFW acc % | LFW TAR@1e-3 [CI] | lfw-masked acc % | "
          "lfw-masked TAR@1e-3 [CI]")


def goals(rows: dict[str, dict]) -> list[str]:
    out, best_lfw, best_masked = [], 0.0, 0.0
    for loss in [k for k in rows if not k.endswith("-untrained") and k != "pixels"]:
        t, u = rows[loss], rows[f"{loss}-untrained"]
        ratio = t["rank1"] / max(u["rank1"], 1e-9)
        gain = 100 * (t["lfw"]["acc"] - u["lfw"]["acc"])
        out.append(f"{loss}: rank-1 {ratio:.1f}x untrained (goal >= 2x: {'met' if ratio >= 2 else 'NOT met'}); "
                   f"LFW +{gain:.1f} points (goal >= 10: {'met' if gain >= 10 else 'NOT met'})")
        best_lfw, best_masked = max(best_lfw, t["lfw"]["acc"]), max(best_masked, t["lfw-masked"]["acc"])
    out.append(f"best LFW {100 * best_lfw:.1f} % (goal >= 80: {'met' if best_lfw >= 0.8 else 'NOT met'}); "
               f"best lfw-masked {100 * best_masked:.1f} % (goal >= 70: {'met' if best_masked >= 0.7 else 'NOT met'})")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="training set (default: <data root>/celeba-rec)")
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--out", default="runs/bench-learning")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra train-fr KEY=VALUE for every run")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--cache", default=None, help="crop + embedding cache [default: $MFRBENCH_CACHE]")
    ap.add_argument("--smoke", action="store_true", help="smoke profile, 50 bootstrap draws: checks the pipeline")
    a = ap.parse_args()
    root = data_root()
    data = a.data or (str(root / "celeba-rec") if root else None)
    if not data or not Path(data).exists():
        print("bench_learning: no training data (pass --data or put the kit at ../shared/data)", file=sys.stderr)
        return 2
    profile, n_boot = ("smoke", 50) if a.smoke else (a.profile, a.bootstrap)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(a.cache) if a.cache else default_cache_dir()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    rows: dict[str, dict] = {}
    times: dict[str, float] = {}
    val = None
    print(f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    for loss in a.losses.split(","):
        cfg = resolve_config(sets=a.sets, profile=profile,
                             options={"data": (data,), "head": loss, "out": str(out / loss), "progress": False}).config
        done = run_dir_of(cfg.out).last_checkpoint() is not None and (Path(cfg.out) / "summary.json").is_file()
        t0 = time.time()
        summary = json.loads((Path(cfg.out) / "summary.json").read_text()) if done else \
            train(cfg, resume=run_dir_of(cfg.out).last_checkpoint() is not None)
        times[loss] = time.time() - t0
        print(f"{loss}: {'reused' if done else 'trained'} {cfg.out} ({summary.get('stopped')}, epoch "
              f"{summary.get('epoch')}, {summary.get('train_seconds', times[loss]):.0f} s)", flush=True)
        split = build_train_data(cfg.data, val_identities=cfg.val_identities, seed=cfg.seed,
                                 metric_loss=cfg.head == "triplet")
        if val is None:
            val = (load_crops(split.val), split.val, split.val_labels)
        trained = load_embedder(cfg.out)
        rows[loss] = score(loss, trained, val, out, cache, n_boot)
        rng = np.random.default_rng(0)
        pick = rng.choice(len(split.train), size=min(1024, len(split.train)), replace=False)
        untrained = untrained_embedder(cfg, load_crops([split.train[i] for i in sorted(pick)]), trained.info)
        rows[f"{loss}-untrained"] = score(f"{loss}-untrained", untrained, val, out, cache, n_boot)
        print(_fmt(rows[loss]) + "\n" + _fmt(rows[f"{loss}-untrained"]), flush=True)
    rows["pixels"] = score("pixels", PixelEmbedder(), val, out, cache, n_boot)
    lines = [HEADER, *(_fmt(r) for r in rows.values()), "", *goals(rows),
             f"load average at end {os.getloadavg()[0]:.2f}; bench CPU {time.process_time():.0f} s; peak RSS "
             f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"]
    print("\n".join(lines))
    (out / "bench_learning.json").write_text(json.dumps({"rows": rows, "times_s": times, "data": data,
                                                         "profile": profile, "sets": a.sets}, indent=1, default=str))
    (out / "bench_learning.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
