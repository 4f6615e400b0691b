"""Trainer: checkpoints and logs, exact resume, NaN stop, triplet batches, CLI, ONNX export, embed API, torchrun.

Runs use SYNTHETIC faces (re-encoded as JPEG) and timm's tiny ``test_resnet`` trunk so the whole
loop (real JPEG decoding, augmentation, logging, checkpointing, validation) runs in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from mfrbench.cli import cli
from mfrbench.errors import MfrbenchError
from mfrbench.recognizers.config import TrainConfig, config_hash
from mfrbench.recognizers.embed import load_backbone, load_embedder
from mfrbench.recognizers.train import lr_factor, train

sys.path.insert(0, str(Path(__file__).parent))
from test_recognizer_data import write_crops  # noqa: E402

TINY = "timm:test_resnet"


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    return write_crops(tmp_path_factory.mktemp("rec_train"), identities=6, per_identity=6)


def _cfg(crops: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=(str(crops),), out=str(out), backbone=TINY, embedding_dim=32, head="arcface",
                head_args={"s": 16.0, "m": 0.3}, epochs=2, batch_size=8, lr=0.05, warmup_epochs=0.5, workers=0,
                log_every=1, progress=False, val_identities=2, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def _losses(run: Path) -> list[float]:
    return pd.read_csv(run / "train_log.csv")["loss"].tolist()


def test_run_writes_checkpoint_logs_config_and_validates(crops, tmp_path):
    out = tmp_path / "run"
    summary = train(_cfg(crops, out))
    assert summary["stopped"] == "finished" and summary["epoch"] == 2 and summary["global_step"] == 6  # 24 imgs / 8
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.json", "last.pt"]
    record = json.loads((out / "config.json").read_text())
    saved = record["config"]
    assert record["kind"] == "recognizer" and record["config_hash"] == summary["config_hash"]
    assert saved["backbone"] == TINY and saved["head_args"] == {"s": 16.0, "m": 0.3}
    assert json.loads((out / "checkpoints" / "last.json").read_text())["config"] == saved
    log = pd.read_csv(out / "train_log.csv")
    assert log["global_step"].tolist() == [1, 2, 3, 4, 5, 6] and np.isfinite(log["loss"]).all()
    assert {"lr", "images_per_s", "acc"} <= set(log.columns)
    val = pd.read_csv(out / "val_log.csv")
    # epoch 0: the untrained network (BatchNorm re-estimated), then one row per epoch
    assert val["epoch"].tolist() == [0, 1, 2] and val["global_step"].iloc[0] == 0
    assert (val["val_chance"] == 0.5).all() and (val["val_probes"] == 10).all()
    assert summary["val_untrained"]["val_rank1"] == val["val_rank1"].iloc[0]
    assert any(f.name.startswith("events.out.tfevents") for f in (out / "tb").iterdir())
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert {"backbone", "head", "optimizer", "rng", "config"} <= set(state)
    with pytest.raises(MfrbenchError, match="already holds a trained run; pass --resume"):
        train(_cfg(crops, out))


def test_interrupted_and_resumed_run_repeats_the_uninterrupted_losses(crops, tmp_path):
    full = tmp_path / "full"
    train(_cfg(crops, full, workers=1))
    part = tmp_path / "part"
    first = train(_cfg(crops, part, max_steps=4))                       # stops mid-epoch 2 (3 steps/epoch)
    assert first["stopped"] == "max_steps" and first["global_step"] == 4
    resumed = train(_cfg(crops, part), resume=True)
    assert resumed["global_step"] == 6
    np.testing.assert_array_equal(_losses(part), _losses(full))       # same seed -> bit-identical losses
    a, b = load_backbone(full)[0].state_dict(), load_backbone(part)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_hash_leaves_out_run_control_only():
    saved = TrainConfig(data=("a",), out="r")
    assert config_hash(saved) == config_hash(dataclasses.replace(saved, workers=5, out="elsewhere", max_steps=3))
    assert config_hash(saved) != config_hash(dataclasses.replace(saved, seed=2))
    assert config_hash(saved) != config_hash(dataclasses.replace(saved, epochs=20))   # length changes the weights


def test_cli_resume_refuses_a_changed_training_option_and_honours_run_control(crops, tmp_path):
    """`train-fr --resume`: --lr differs -> one-line refusal naming both values; --epochs / --log-every are
    honoured, and options not given again keep their saved values (here --workers 0, not the default 2)."""
    out = tmp_path / "r"
    first = ["train-fr", "--data", str(crops), "--backbone", TINY, "--embedding-dim", "32", "--head-arg", "s=16",
             "--epochs", "1", "--batch-size", "8", "--workers", "0", "--val-identities", "2", "--out", str(out),
             "--no-progress"]
    assert CliRunner().invoke(cli, first).exit_code == 0
    r = CliRunner().invoke(cli, ["train-fr", "--out", str(out), "--resume", "--lr", "0.5"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert f"--resume: {out} was trained with lr=0.1; this command asks for lr=0.5 (a training option)" in r.output
    r = CliRunner().invoke(cli, ["train-fr", "--out", str(out), "--resume", "--data", str(tmp_path)])
    assert r.exit_code != 0 and "was trained with data=" in r.output
    r = CliRunner().invoke(cli, ["train-fr", "--out", str(out), "--resume", "--epochs", "2", "--log-every", "2"])
    assert r.exit_code == 0, r.output
    assert "finished: epoch 2, step 6" in r.output
    saved = json.loads((out / "config.json").read_text())["config"]
    assert (saved["epochs"], saved["log_every"], saved["workers"], saved["lr"]) == (2, 2, 0, 0.1)
    log = pd.read_csv(out / "train_log.csv")
    assert log["global_step"].tolist() == [3, 4, 6]       # log_every 10: epoch end only; then every 2nd step
    with pytest.raises(MfrbenchError, match=re.escape("was trained with seed=0; this command asks for seed=3")):
        train(dataclasses.replace(TrainConfig(**{**saved, "data": tuple(saved["data"])}), seed=3), resume=True)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(crops, tmp_path):
    out = tmp_path / "nan"
    cfg = _cfg(crops, out, head="softmax", head_args={}, lr=1e12, clip_grad=None, warmup_epochs=0, ckpt_every=1,
               epochs=3)
    with pytest.raises(MfrbenchError, match=r"loss became (nan|inf) at epoch \d+ step \d+ .*training stopped, the "
                                            r"last good checkpoint is kept: .*last\.pt \(global step \d+\)") as err:
        train(cfg)
    failed_at = int(re.search(r"\(global step (\d+)\)", str(err.value)).group(1))
    good = json.loads((out / "checkpoints" / "last.json").read_text())
    assert 1 <= good["global_step"] == failed_at - 1                    # the step before the bad loss
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["global_step"] == good["global_step"]


def test_triplet_trains_on_pk_batches(crops, tmp_path):
    s = train(_cfg(crops, tmp_path / "trip", head="triplet", head_args={"margin": 0.2}, images_per_identity=2,
                   max_steps=2))
    assert s["global_step"] == 2 and s["loss"] == "triplet"
    assert "active" in pd.read_csv(tmp_path / "trip" / "train_log.csv").columns


def test_lr_schedule_warmup_cosine_and_step():
    cfg = TrainConfig(epochs=4, warmup_epochs=1, schedule="cosine")
    f = [lr_factor(cfg, s, 10) for s in range(40)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert f[25] == pytest.approx(0.5) and all(a >= b for a, b in zip(f[10:], f[11:]))
    step = TrainConfig(epochs=4, warmup_epochs=0, schedule="step", milestones=(2, 3))
    assert [lr_factor(step, s, 10) for s in (0, 19, 20, 30)] == pytest.approx([1, 1, 0.1, 0.01])


def test_cli_train_export_and_embed_api(crops, tmp_path):
    out = tmp_path / "cli"
    r = CliRunner().invoke(cli, ["train-fr", "--data", str(crops), "--backbone", TINY, "--embedding-dim", "32",
                                 "--loss", "cosface", "--head-arg", "s=16", "--epochs", "1", "--batch-size", "8",
                                 "--workers", "0", "--val-identities", "2", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "finished: epoch 1, step 3" in r.output and "held-out rank-1 identification" in r.output
    r = CliRunner().invoke(cli, ["export", "--run", str(out), "--format", "onnx"])
    assert r.exit_code == 0, r.output
    diff = float(re.search(r"max \|ONNX - PyTorch\| = (\S+)", r.output).group(1))
    assert diff <= 1e-4

    model, info = load_backbone(out)
    assert not model.training and info["loss"] == "cosface" and info["embedding_dim"] == 32
    assert info["generator"] == "none" and info["train_data"] == [str(crops.resolve())]
    assert len(info["config_hash"]) == 12 and Path(info["run_dir"]) == out.resolve()
    x = torch.zeros(2, 3, 112, 112, requires_grad=True)
    model(x).sum().backward()                                            # differentiable for identity losses
    assert x.grad is not None

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 112, 112, 3), dtype=np.uint8)
    pt, ox = load_embedder(out, device="cpu", batch_size=2), load_embedder(out / "export" / "model.onnx")
    assert ox.info["config_hash"] == info["config_hash"] and pt.embedding_dim == ox.embedding_dim == 32
    e_pt, e_ox = pt.embed(images), ox.embed(images)
    assert e_pt.shape == (5, 32) and e_pt.dtype == np.float32 and np.abs(e_pt - e_ox).max() <= 1e-4
    flipped = pt.embed(images, flip=True)
    np.testing.assert_allclose(flipped, e_pt + pt.embed(np.ascontiguousarray(images[:, :, ::-1])), atol=1e-5)
    with pytest.raises(ValueError, match=re.escape("Expected uint8 images of shape (N, 112, 112, 3)")):
        pt.embed(images.astype(np.float32))


def test_cli_errors_are_one_line(crops, tmp_path):
    r = CliRunner().invoke(cli, ["train-fr", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "Error: --data" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["train-fr", "--out", str(tmp_path / "none"), "--resume"])
    assert r.exit_code != 0 and "--resume: no run in" in r.output
    r = CliRunner().invoke(cli, ["export", "--run", str(tmp_path)])
    assert r.exit_code != 0 and "no checkpoint at" in r.output


def test_torchrun_two_cpu_processes_write_one_checkpoint(crops, tmp_path):
    """torchrun --nproc_per_node 2 (gloo) trains and rank 0 alone writes the checkpoint and logs."""
    single = tmp_path / "single"
    train(_cfg(crops, single, epochs=1))
    out = tmp_path / "ddp"
    script = Path(sys.executable).parent / "mfrbench"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           "train-fr", "--data", str(crops), "--backbone", TINY, "--embedding-dim", "32", "--head-arg", "s=16",
           "--head-arg", "m=0.3", "--epochs", "1", "--batch-size", "8", "--workers", "0", "--val-identities", "2",
           "--seed", "1", "--lr", "0.05", "--warmup-epochs", "0.5", "--log-every", "1", "--out", str(out),
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("checkpoint:") == 1                         # rank 0 alone reports
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.json", "last.pt"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 3
    assert len(pd.read_csv(out / "train_log.csv")) == 3                  # one row per step, not per rank
    a, b = load_backbone(single)[0].state_dict(), load_backbone(out)[0].state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


@pytest.mark.slow
@pytest.mark.data
def test_real_celeba_aligned_manifest_trains_and_validates(celeba_root, models_root, tmp_path):
    """The real pipeline: `align` on kit CelebA images -> manifest -> trainer -> held-out validation."""
    from mfrbench.align import align_dataset
    from mfrbench.datasets import create_dataset

    meta = align_dataset(create_dataset("celeba", celeba_root), tmp_path / "aligned", limit=60, workers=1,
                         progress=False)
    assert meta["ok"] >= 50
    s = train(_cfg(tmp_path / "aligned", tmp_path / "run", epochs=1, batch_size=16))
    assert s["stopped"] == "finished" and s["train_images"] + s["val_images"] == meta["ok"]
    assert 0.0 <= s["val_rank1"] <= 1.0 and s["val_chance"] == 0.5


def test_profile_gives_each_loss_its_recipe_under_the_users_options():
    from mfrbench.recognizers.config import PROFILES, resolve_config

    cos = resolve_config(options={"head": "cosface"}, profile="cpu").config
    arc = resolve_config(options={"head": "arcface", "lr": 0.02}, profile="cpu").config
    assert cos.head_args == PROFILES["cpu"]["recipes"]["cosface"]["head_args"] and cos.profile == "cpu"
    assert arc.head_args == PROFILES["cpu"]["recipes"]["arcface"]["head_args"]
    assert arc.lr == 0.02 and arc.input_size == PROFILES["cpu"]["input_size"]    # the option wins
    assert resolve_config(sets=["head=triplet"], profile="cpu").config.head_args == \
        PROFILES["cpu"]["recipes"]["triplet"]["head_args"]                          # the loss read from --set too
    assert config_hash(cos) == config_hash(dataclasses.replace(cos, profile=None))  # a label, not a weight
    with pytest.raises(MfrbenchError, match="Available: smoke, cpu"):
        resolve_config(profile="nope")


def test_recordio_set_trains_at_64px_and_embeds_112px_crops(tmp_path):
    """train-fr on an mxnet-written RecordIO set (the fixture), at input size 64; the embedder takes 112 crops."""
    mx = Path(__file__).parent / "data" / "recordio_mxnet"
    r = CliRunner().invoke(cli, ["train-fr", "--data", str(mx), "--profile", "smoke", "--loss", "cosface",
                                 "--gray", "0.5", "--batch-size", "4", "--val-identities", "1",
                                 "--out", str(tmp_path / "run"), "--no-progress"])
    assert r.exit_code == 0, r.output
    model, info = load_backbone(tmp_path / "run")
    assert model.input_size == 64 and info["train_images"] + info["val_images"] == 8
    emb = load_embedder(tmp_path / "run").embed(np.zeros((3, 112, 112, 3), np.uint8))
    assert emb.shape == (3, 512) and np.isfinite(emb).all()


def test_reestimated_batchnorm_holds_the_mean_and_variance_over_all_batches():
    from torch import nn

    from mfrbench.recognizers.validate import normalize_images, reestimate_batchnorm

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    batches = [torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8) for _ in range(3)]
    reestimate_batchnorm(net, batches, torch.device("cpu"))
    with torch.no_grad():
        feats = torch.cat([net[0](normalize_images(b)) for b in batches])
    bn = net[1]
    assert not bn.training
    assert torch.allclose(bn.running_mean, feats.mean((0, 2, 3)), atol=1e-5)
    # the cumulative average of per-batch unbiased variances (equal batch sizes)
    per_batch = torch.stack([net[0](normalize_images(b)).detach().var((0, 2, 3), unbiased=True) for b in batches])
    assert torch.allclose(bn.running_var, per_batch.mean(0), atol=1e-4)
