"""``mfrbench train-gen``: what the command passes to the library, and the library's run folder and resume policy.

The CLI tests replace :func:`mfrbench.generators.gan.train.train_gan` and assert its arguments:
before issue 11, ``--threads`` was parsed and never passed on, and a green suite did not notice.
The library tests run tiny CycleGAN/MFGAN runs on in-memory crops (``load_domain`` replaced).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_mfgan_model import TINY, _domain, stand_in_aux  # noqa: F401  (fixture re-export)

from mfrbench.cli import cli
from mfrbench.errors import MfrbenchError
from mfrbench.generators.gan import train as gan_train
from mfrbench.generators.gan.checkpoint import load_checkpoint, load_gan

# ------------------------------------------------------------------------------- the command


@pytest.fixture()
def calls(monkeypatch):
    """Replace the library call; record its arguments and return a summary the command can print."""
    seen: list[dict] = []

    def fake_train_gan(method, faces, masks, out, **kw):
        seen.append({"method": method, "faces": faces, "masks": masks, "out": out, **kw})
        return {"steps": 4, "steps_this_run": 4, "seconds": 0.1, "device": "cpu", "threads": kw["threads"] or 1,
                "faces": 2, "masks": 2, "final_losses": {"G_M_gan": 0.5}, "checkpoint": "c", "samples": None}

    monkeypatch.setattr(gan_train, "train_gan", fake_train_gan)
    return seen


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["train-gen", *args])


def test_threads_device_and_run_control_reach_the_library(calls, tmp_path):
    res = _invoke("--faces", "f", "--masks", "m", "--out", str(tmp_path / "r"), "--threads", "3", "--device", "cpu",
                  "--log-every", "5", "--sample-every", "7", "--ckpt-every", "9", "--no-progress")
    assert res.exit_code == 0, res.output
    (call,) = calls
    assert call["threads"] == 3 and call["device"] == "cpu" and call["progress"] is False
    t = call["train_overrides"]
    assert (t["log_every"], t["sample_every"], t["ckpt_every"]) == (5, 7, 9)
    assert call["method"] is None and call["resume"] is False          # the library picks cyclegan / the saved run's
    assert "3 threads" in res.output


def test_training_options_sets_and_aux_runs_reach_the_library(calls, tmp_path):
    det, seg = tmp_path / "det", tmp_path / "seg"
    res = _invoke("--method", "mfgan", "--faces", "f", "--masks", "m", "--out", str(tmp_path / "r"), "--lr", "1e-3",
                  "--size", "64", "--batch-size", "2", "--seed", "7", "--amp", "--profile", "smoke",
                  "--set", "ngf=32", "--set", "model.n_domains=3", "--set", "train.decay_start=0.6",
                  "--det", str(det), "--seg", str(seg), "--stage-steps", "1,2,3")
    assert res.exit_code == 0, res.output
    (call,) = calls
    t = call["train_overrides"]
    assert (t["lr"], t["size"], t["batch_size"], t["seed"], t["amp"], t["steps"]) == (1e-3, 64, 2, 7, True, 6)
    assert call["model_sets"] == ["ngf=32", "n_domains=3"] and call["train_sets"] == ["decay_start=0.6"]
    assert call["model_overrides"] == {"det_checkpoint": str(det.resolve()), "seg_checkpoint": str(seg.resolve()),
                                       "stage_steps": [1, 2, 3]}
    assert call["profile"] == "smoke" and call["method"] == "mfgan"


def test_resume_needs_neither_faces_nor_masks(calls, tmp_path):
    res = _invoke("--out", str(tmp_path / "r"), "--resume", "--steps", "8")
    assert res.exit_code == 0, res.output
    (call,) = calls
    assert call["resume"] is True and call["faces"] is None and call["masks"] is None
    assert call["train_overrides"]["steps"] == 8
    assert {k for k, v in call["train_overrides"].items() if v is not None} == {"steps"}   # nothing else invented


# option -> (argv, where the value must arrive: ("kw", name) for a train_gan argument, ("train"|"model", field)
# for the configs it resolves to, expected value)
TRAIN_GEN = {
    "method": (["--method", "mfgan"], ("kw", "method"), "mfgan"),
    "faces": (["--faces", "F"], ("kw", "faces"), "F"),
    "masks": (["--masks", "M"], ("kw", "masks"), "M"),
    "out": (["--out", "RUN"], ("kw", "out"), "RUN"),
    "profile": (["--profile", "cpu"], ("train", "decay_start"), 0.6),       # cpu's decay_start
    "config_file": (["--config", "CONFIG"], ("model", "lambda_inv"), 5.0),  # the file says lambda_inv: 5
    "sets": (["--set", "ngf=12", "--set", "train.ema_decay=0.99"], ("model", "ngf"), 12),
    "size": (["--size", "128"], ("train", "size"), 128),
    "steps": (["--steps", "11"], ("train", "steps"), 6),                     # --stage-steps sets the sum
    "batch_size": (["--batch-size", "3"], ("train", "batch_size"), 3),
    "lr": (["--lr", "1e-3"], ("train", "lr"), 1e-3),
    "max_faces": (["--max-faces", "5"], ("train", "max_faces"), 5),
    "max_masks": (["--max-masks", "6"], ("train", "max_masks"), 6),
    "det_run": (["--det", "DET"], ("model", "det_checkpoint"), "DET"),
    "seg_run": (["--seg", "SEG"], ("model", "seg_checkpoint"), "SEG"),
    "stage_steps": (["--stage-steps", "1,2,3"], ("model", "stage_steps"), (1, 2, 3)),
    "seed": (["--seed", "7"], ("train", "seed"), 7),
    "log_every": (["--log-every", "2"], ("train", "log_every"), 2),
    "sample_every": (["--sample-every", "3"], ("train", "sample_every"), 3),
    "ckpt_every": (["--ckpt-every", "4"], ("train", "ckpt_every"), 4),
    "device": (["--device", "cpu"], ("kw", "device"), "cpu"),
    "amp": (["--amp"], ("train", "amp"), True),
    "threads": (["--threads", "2"], ("kw", "threads"), 2),
    "resume": (["--resume"], ("kw", "resume"), True),
    "no_progress": (["--no-progress"], ("kw", "progress"), False),
}


def test_train_gen_table_covers_every_option():
    assert {p.name for p in cli.commands["train-gen"].params} == set(TRAIN_GEN)


def test_train_gen_passes_every_option_to_the_library(calls, tmp_path):
    """Every option set at once; the recorded call is resolved with the real resolver and checked field by field."""
    from mfrbench.generators.gan.config import resolve_configs

    (tmp_path / "c.yaml").write_text("model:\n  lambda_inv: 5\n")
    subs = {"RUN": str(tmp_path / "run"), "CONFIG": str(tmp_path / "c.yaml"), "DET": str(tmp_path / "det"),
            "SEG": str(tmp_path / "seg")}
    argv = [subs.get(a, a) for args, *_ in TRAIN_GEN.values() for a in args]
    res = _invoke(*argv)
    assert res.exit_code == 0, res.output
    (call,) = calls
    t, m = resolve_configs(call["method"], call["profile"], config_file=call["config_file"],
                           train_sets=call["train_sets"], model_sets=call["model_sets"],
                           train=call["train_overrides"], model=call["model_overrides"])
    assert t.config.ema_decay == 0.99
    for name, (_, (where, key), expected) in TRAIN_GEN.items():
        expected = str(Path(subs[expected]).resolve()) if expected in ("DET", "SEG") else subs.get(expected, expected)
        got = call[key] if where == "kw" else getattr((t if where == "train" else m).config, key)
        assert got == expected, f"{name}: {where}.{key}={got!r}, expected {expected!r}"
        if where != "kw":
            assert key in (t if where == "train" else m).given, f"{name}: {key} not given (a resume would drop it)"


def test_missing_domains_without_resume_is_one_line_error(tmp_path):
    res = _invoke("--out", str(tmp_path / "r"), "--faces", "f")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines() == [
        "Error: train-gen needs --faces and --masks (or --resume to continue the run in --out)"]


# ------------------------------------------------------------------------------- the library


@pytest.fixture()
def memory_domains(monkeypatch):
    """``load_domain`` returns in-memory crops (faces seed 1, masks seed 2); records the specs it was given."""
    specs: list[str] = []

    def load(name, spec, cache, *, size, **_):
        specs.append(str(spec))
        return _domain(name, 6, size, 1 if name == "faces" else 2)

    monkeypatch.setattr(gan_train, "load_domain", load)
    return specs


TINY_CG = {"ngf": 4, "ndf": 4, "n_blocks": 1, "pool_size": 2}


def _cg(out: Path, **kw):
    train = {"size": 32, "steps": 2, "batch_size": 2, "sample_every": 100, "ckpt_every": 1, "log_every": 1,
             **kw.pop("train", {})}
    return gan_train.train_gan(kw.pop("method", "cyclegan"), kw.pop("faces", "faces-spec"),
                               kw.pop("masks", "masks-spec"), out, train_overrides=train,
                               model_overrides=kw.pop("model", TINY_CG), progress=False, **kw)


def test_threads_are_set_in_the_training_process(memory_domains, tmp_path):
    """``threads`` reaches ``torch.set_num_threads`` (it was dropped before issue 11)."""
    before = torch.get_num_threads()
    try:
        summary = _cg(tmp_path / "r", threads=1, device="cpu")
        assert summary["threads"] == 1 and torch.get_num_threads() == 1 and summary["device"] == "cpu"
    finally:
        torch.set_num_threads(before)


def test_run_folder_layout_and_config(memory_domains, tmp_path):
    run = tmp_path / "r"
    summary = _cg(run)
    assert (run / "config.json").is_file() and (run / "checkpoints" / "last.pt").is_file()
    record = json.loads((run / "config.json").read_text())
    assert record["kind"] == "gan" and record["config"]["method"] == "cyclegan"
    assert record["config"]["faces"] == "faces-spec" and record["config"]["train"]["steps"] == 2
    assert summary["config_hash"] == record["config_hash"] == load_checkpoint(run)["config_hash"]
    assert load_gan(run).step == 2
    with pytest.raises(MfrbenchError, match="already holds a trained run; pass --resume"):
        _cg(run)


def test_resume_honours_run_control_and_extends_without_the_data(memory_domains, tmp_path):
    """Resumed with no data options: the saved specs are used; --steps extends, log/checkpoint cadence changes."""
    run = tmp_path / "r"
    _cg(run)
    summary = gan_train.train_gan(None, None, None, run, resume=True, progress=False,
                                  train_overrides={"steps": 6, "log_every": 2, "ckpt_every": 4, "lr": None})
    assert summary["steps"] == 6 and summary["steps_this_run"] == 4
    assert memory_domains[-2:] == ["faces-spec", "masks-spec"]        # from config.json, not from the call
    logged = [int(line.split(",")[0]) for line in (run / "losses.csv").read_text().splitlines()[1:]]
    assert logged == [1, 2, 4, 6]                                     # every step until 2, then every 2nd
    saved = json.loads((run / "config.json").read_text())["config"]["train"]
    assert (saved["steps"], saved["log_every"], saved["ckpt_every"]) == (6, 2, 4)
    assert load_gan(run).step == 6


def test_resume_refuses_a_changed_training_option(memory_domains, tmp_path):
    run = tmp_path / "r"
    _cg(run)
    msg = "was trained with train.lr=0.0002; this command asks for train.lr=0.001 (a training option)"
    with pytest.raises(MfrbenchError, match=re.escape(msg)):
        gan_train.train_gan(None, None, None, run, resume=True, train_overrides={"lr": 1e-3}, progress=False)
    with pytest.raises(MfrbenchError, match=re.escape("model.ngf=4; this command asks for model.ngf=8")):
        gan_train.train_gan(None, None, None, run, resume=True, model_sets=["ngf=8"], progress=False)
    with pytest.raises(MfrbenchError, match=re.escape("faces=\"faces-spec\"; this command asks for faces=\"other\"")):
        gan_train.train_gan(None, "other", None, run, resume=True, progress=False)
    with pytest.raises(MfrbenchError, match="is a cyclegan run; this command asks for --method iamgan"):
        gan_train.train_gan("iamgan", None, None, run, resume=True, progress=False)
    # the same values again are fine (nothing changes, nothing to do)
    again = gan_train.train_gan("cyclegan", "faces-spec", "masks-spec", run, resume=True, progress=False,
                                train_overrides={"lr": 2e-4, "steps": 2}, model_overrides={"ngf": 4})
    assert again["steps"] == 2 and again["steps_this_run"] == 0


def test_resume_of_a_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(MfrbenchError, match=re.escape(f"--resume: no run in {tmp_path / 'none'} (no config.json)")):
        gan_train.train_gan(None, None, None, tmp_path / "none", resume=True)


def test_mfgan_resume_may_lengthen_stage_3_but_not_move_a_passed_stage(stand_in_aux, memory_domains,  # noqa: F811
                                                                       tmp_path):
    run = tmp_path / "m"
    model = {**TINY, "stage_steps": [1, 1, 1]}
    gan_train.train_gan("mfgan", "f", "m", run, train_overrides={"size": 32, "steps": 3, "batch_size": 2,
                                                                    "sample_every": 100, "log_every": 1},
                        model_overrides=model, progress=False)
    with pytest.raises(MfrbenchError, match=re.escape("at step 3 of stages (1, 1, 1); the new length gives stages "
                                                      "(1, 2, 2)")):
        gan_train.train_gan(None, None, None, run, resume=True, train_overrides={"steps": 5},
                            model_overrides={"stage_steps": [1, 2, 2]}, progress=False)
    summary = gan_train.train_gan(None, None, None, run, resume=True, train_overrides={"steps": 5},
                                  model_overrides={"stage_steps": [1, 1, 3]}, progress=False)
    assert summary["steps"] == 5 and load_gan(run).stages == (1, 1, 3)
