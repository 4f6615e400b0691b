"""The standard masked-face recipe: fine-tune a base recognizer on masked data, score it on real masks.

Starts ``train-fr --init BASE`` (fresh head, backbone LR x ``--backbone-lr-mult``) on ``--data`` with
on-the-fly MaskTheFace-style masking (``--mask-aug``, half the crops by default), for a few epochs,
then evaluates the base and the fine-tuned model in the same run on masked benchmarks (default
lfw-masked and RMFRD: RMFRD's masked faces are real photos) and prints accuracy, TAR@FAR=1e-3 and
Rank-1/5 with their identity-bootstrap CIs side by side.

    python benchmarks/bench_finetune.py --base runs/bench-learning/cosface --out runs/ft-mtf
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _harness import eval_protocol_kwargs

from mfrbench.evaluate import EvalConfig, default_cache_dir, evaluate
from mfrbench.generators.augment import parse_mask_aug
from mfrbench.recognizers.config import resolve_config
from mfrbench.recognizers.embed import load_embedder
from mfrbench.recognizers.train import run_dir_of, train

FIELDS = ("acc", "acc_std", "tar_far_1e-3", "tar_far_1e-3_lo", "tar_far_1e-3_hi", "rank1", "rank1_lo", "rank1_hi",
          "rank5", "rank5_lo", "rank5_hi", "eval_id")


def _pct(x) -> str:
    return "-" if x is None or x != x else f"{100 * x:.1f}"


def line(name: str, bench: str, r: dict) -> str:
    return (f"{name:<12} {bench:<11} acc {_pct(r['acc'])} ± {_pct(r['acc_std'])} | TAR@1e-3 {_pct(r['tar_far_1e-3'])} "
            f"[{_pct(r['tar_far_1e-3_lo'])}, {_pct(r['tar_far_1e-3_hi'])}] | rank-1 {_pct(r['rank1'])} "
            f"[{_pct(r['rank1_lo'])}, {_pct(r['rank1_hi'])}] | rank-5 {_pct(r['rank5'])} "
            f"[{_pct(r['rank5_lo'])}, {_pct(r['rank5_hi'])}]")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="the base train-fr run (e.g. a --profile cpu run)")
    ap.add_argument("--data", default=None, help="training data [default: the base run's]")
    ap.add_argument("--out", required=True)
    ap.add_argument("--mask-aug", default="mtf:p=0.5")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--backbone-lr-mult", type=float, default=0.5)
    ap.add_argument("--benchmarks", default="lfw-masked,rmfrd")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--bootstrap", type=int, default=1000)
    a = ap.parse_args()
    base_info = load_embedder(a.base).info
    base_cfg = json.loads((Path(a.base) / "config.json").read_text())["config"]
    data = (a.data,) if a.data else tuple(base_cfg["data"])
    out = Path(a.out)
    cache = Path(a.cache) if a.cache else default_cache_dir()
    keep = {k: base_cfg[k] for k in ("backbone", "head", "head_args", "embedding_dim", "input_size", "gray",
                                     "batch_size", "val_identities", "seed") if k in base_cfg}
    cfg = resolve_config(options={**keep, "data": data, "out": str(out / "run"), "init": str(a.base),
                                  "mask_aug": a.mask_aug, "epochs": a.epochs, "lr": a.lr, "warmup_epochs": 0.2,
                                  "backbone_lr_mult": a.backbone_lr_mult, "progress": False, "workers": 1}).config
    print(f"load average {os.getloadavg()[0]:.2f}; fine-tuning {a.base} -> {cfg.out}", flush=True)
    t0, c0 = time.time(), time.process_time()
    done = (Path(cfg.out) / "summary.json").is_file()
    if not done:
        train(cfg, resume=run_dir_of(cfg.out).last_checkpoint() is not None, augment_factory=parse_mask_aug)
    print(f"fine-tune: {time.time() - t0:.0f} s wall, {time.process_time() - c0:.0f} CPU-s (main process)"
          f"{' (reused)' if done else ''}", flush=True)
    rows = {}
    for name, path in (("base", a.base), ("fine-tuned", cfg.out)):
        model = load_embedder(path)
        for b in a.benchmarks.split(","):
            cfg_b = EvalConfig(benchmark=b, n_boot=a.bootstrap, protocol_kwargs=eval_protocol_kwargs(b))
            r = evaluate("", cfg_b, results_dir=out / "results", cache_dir=cache, progress=False, model=model)
            rows[f"{name}/{b}"] = {k: r.get(k) for k in FIELDS}
            print(line(name, b, rows[f"{name}/{b}"]), flush=True)
    (out / "bench_finetune.json").write_text(json.dumps({"base": str(a.base), "base_info": base_info,
                                                         "config": cfg.to_dict(), "rows": rows}, indent=1,
                                                        default=str))
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
