"""Recognizer training and embedding throughput: our trainer vs a bare PyTorch loop, ORT vs eager.

Training (iresnet18 and mobilefacenet, 112x112, batch 64, ArcFace head, SGD, 2 torch threads):

* ``trainer``: ``mfrbench.recognizers.train.train`` on real JPEG crops (the aligned CelebA
  manifest when given with ``--data``, else SYNTHETIC faces written as JPEG), with DataLoader
  workers decoding and augmenting, per-step CSV/TensorBoard logging and the progress bar off;
  images/s from the trainer's own per-step log (wall time between steps, so data waits count).
* ``bare``: the same backbone + head + optimizer on one random tensor batch, no data loading,
  no logging: the ceiling the trainer is measured against.

Embedding extraction (eval mode, batch 64): PyTorch eager (``torch.no_grad``) vs onnxruntime
(CPU provider, 2 intra-op threads) on the same exported model and input.

Each cell runs in a fresh subprocess, so its peak RSS (process + DataLoader workers) is its own.
Numbers are the median over timed steps (after warm-up) and over ``--repeats`` runs.

    .venv/bin/python benchmarks/bench_train.py --data /tmp/celeba-aligned   # 4 timed steps, 2 repeats
    .venv/bin/python benchmarks/bench_train.py --quick                      # 2 timed steps, 1 repeat
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

BATCH = 64
THREADS = 2


def _rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024.0


def _synthetic_crops(n_ids: int = 40, per: int = 8) -> str:
    """SYNTHETIC faces as JPEG crops in <tmp>/<identity>/<n>.jpg (used when no --data is given)."""
    import cv2

    from mfrbench.synthetic import materialize

    root = tempfile.mkdtemp(prefix="bench-train-data-")
    src, table = materialize(os.path.join(root, "png"), identities=n_ids, per_identity=per, size=112, seed=0)
    for key in table["key"]:
        dst = os.path.join(root, "crops", key.replace(".png", ".jpg"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        cv2.imwrite(dst, cv2.imread(os.path.join(src, key)), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return os.path.join(root, "crops")


def child_trainer(backbone: str, steps: int, data: str, workers: int, input_size: int = 112,
                  mask_aug: str | None = None) -> dict:
    import pandas as pd

    from mfrbench.generators.augment import parse_mask_aug
    from mfrbench.recognizers.config import TrainConfig
    from mfrbench.recognizers.train import train

    out = tempfile.mkdtemp(prefix="bench-train-run-")
    cfg = TrainConfig(data=(data,), out=out, backbone=backbone, head="arcface", batch_size=BATCH, epochs=10,
                      lr=0.05, workers=workers, val_identities=0, log_every=1, progress=False, max_steps=steps + 1,
                      input_size=input_size, mask_aug=mask_aug)
    train(cfg, augment_factory=parse_mask_aug)
    log = pd.read_csv(os.path.join(out, "train_log.csv"))
    rates = log["images_per_s"].tolist()[1:]           # step 1 includes worker start-up and first-touch costs
    return {"images_per_s": statistics.median(rates), "rss_mb": _rss_mb()}


def child_bare(backbone: str, steps: int, input_size: int = 112) -> dict:
    import torch

    from mfrbench.recognizers.backbones import create_backbone
    from mfrbench.recognizers.heads import create_head

    torch.manual_seed(0)
    model = create_backbone(backbone, input_size=input_size).to(memory_format=torch.channels_last)
    head = create_head("arcface", embedding_dim=512, num_classes=160)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(BATCH, 3, 112, 112).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 160, (BATCH,))
    rates = []
    for i in range(steps + 1):
        t = time.perf_counter()
        loss, _ = head(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*model.parameters(), *head.parameters()], 5.0)
        opt.step()
        if i:
            rates.append(BATCH / (time.perf_counter() - t))
    return {"images_per_s": statistics.median(rates), "rss_mb": _rss_mb()}


def child_embed(backbone: str, steps: int, engine: str) -> dict:
    import numpy as np
    import torch

    from mfrbench.recognizers.backbones import create_backbone

    torch.manual_seed(0)
    model = create_backbone(backbone).eval()
    x = np.random.default_rng(0).uniform(-1, 1, (BATCH, 3, 112, 112)).astype(np.float32)
    if engine == "torch":
        xt = torch.from_numpy(x)

        def run() -> None:
            with torch.no_grad():
                model(xt)
    else:
        import warnings

        import onnxruntime as ort

        path = os.path.join(tempfile.mkdtemp(prefix="bench-onnx-"), "m.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.from_numpy(x[:2]),), path, dynamo=False, input_names=["input"],
                              output_names=["embedding"], dynamic_axes={"input": {0: "b"}, "embedding": {0: "b"}},
                              opset_version=17)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = THREADS, 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

        def run() -> None:
            sess.run(None, {"input": x})
    rates = []
    for i in range(steps + 1):
        t = time.perf_counter()
        run()
        if i:
            rates.append(BATCH / (time.perf_counter() - t))
    return {"images_per_s": statistics.median(rates), "rss_mb": _rss_mb()}


def _run_child(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    proc = subprocess.run([sys.executable, __file__, "--_child", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median_cell(args: list[str], repeats: int) -> dict:
    runs = [_run_child(args) for _ in range(repeats)]
    return {"images_per_s": statistics.median(r["images_per_s"] for r in runs),
            "rss_mb": max(r["rss_mb"] for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 timed steps, 1 repeat")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per run (after one warm-up step)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data", default=None, help="aligned manifest or crop folder (default: synthetic JPEG crops)")
    ap.add_argument("--workers", type=int, default=1, help="trainer DataLoader workers")
    ap.add_argument("--backbones", default="iresnet18,mobilefacenet")
    ap.add_argument("--input-size", type=int, default=112, help="the backbones' own resolution (crops stay 112)")
    ap.add_argument("--mask-aug", default=None, help="also time the trainer with this --mask-aug spec")
    ap.add_argument("--no-embed", action="store_true", help="skip the embedding rows")
    ap.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child:
        import torch

        torch.set_num_threads(THREADS)
        kind, backbone, steps = a._child[0], a._child[1], int(a._child[2])
        if kind == "trainer":
            res = child_trainer(backbone, steps, a._child[3], int(a._child[4]), int(a._child[5]),
                                None if a._child[6] == "-" else a._child[6])
        elif kind == "bare":
            res = child_bare(backbone, steps, int(a._child[3]))
        else:
            res = child_embed(backbone, steps, kind.split("-")[1])
        print(json.dumps(res))
        return
    steps, repeats = (2, 1) if a.quick else (a.steps, a.repeats)
    data = a.data or _synthetic_crops()
    src = "real JPEG crops: " + data if a.data else "SYNTHETIC faces as JPEG crops"
    print(f"# bench_train: batch {BATCH}, 112x112 crops, backbone input {a.input_size}, {THREADS} threads, "
          f"{steps} timed steps x {repeats} repeats, "
          f"trainer workers {a.workers}; data: {src}")
    print(f"# loadavg {os.getloadavg()}, cpus {os.cpu_count()}")
    print(f"{'backbone':<14} {'what':<26} {'ours img/s':>10} {'baseline img/s':>14} {'ratio':>6} "
          f"{'ours RSS MB':>11} {'base RSS MB':>11}")
    for bb in a.backbones.split(","):
        bare = _median_cell(["bare", bb, str(steps), str(a.input_size)], repeats)
        for spec in ("-", *([a.mask_aug] if a.mask_aug else [])):
            tr = _median_cell(["trainer", bb, str(steps), data, str(a.workers), str(a.input_size), spec], repeats)
            what = "train: trainer vs bare" if spec == "-" else "train +mask-aug vs bare"
            print(f"{bb:<14} {what:<26} {tr['images_per_s']:>10.2f} {bare['images_per_s']:>14.2f} "
                  f"{tr['images_per_s'] / bare['images_per_s']:>6.2f} {tr['rss_mb']:>11.0f} {bare['rss_mb']:>11.0f}")
        if a.no_embed:
            continue
        ort_ = _median_cell(["embed-ort", bb, str(steps * 2)], repeats)
        eager = _median_cell(["embed-torch", bb, str(steps * 2)], repeats)
        print(f"{bb:<14} {'embed: onnxruntime vs eager':<26} {ort_['images_per_s']:>10.2f} "
              f"{eager['images_per_s']:>14.2f} {ort_['images_per_s'] / eager['images_per_s']:>6.2f} "
              f"{ort_['rss_mb']:>11.0f} {eager['rss_mb']:>11.0f}")
    print(f"# loadavg at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
