"""User mistakes (issue 12): refused before any work, with one line that says what to do; never a traceback.

Each case runs the command as a user would (click's CliRunner) and asserts exit code 1, a single
``Error: ...`` line holding the expected words, and that the output folder was not created. The
checkpoint cases also assert that a crafted pickle is never run and that torch's advice to retry with
``weights_only=False`` is not passed on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import synthetic_aligned  # noqa: E402
from test_bad_input_gallery import MALICIOUS_PICKLE, _face, _jpeg

from mfrbench.cli import cli


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """A small synthetic set, its aligned manifest, and bad config / checkpoint files."""
    tmp = tmp_path_factory.mktemp("mistakes")
    synthetic_aligned(tmp)
    (tmp / "flat").mkdir()
    (tmp / "flat" / "a.jpg").write_bytes(_jpeg(_face(1)))
    (tmp / "bad.yaml").write_text("a: [1,\n")
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    (tmp / "FILE.txt").write_text("hello\n")
    good = tmp / "good.pt"
    torch.save({"kind": "gan", "state": {"w": torch.zeros(3)}, "config": "{}", "info": "{}"}, good)
    (tmp / "truncated.pt").write_bytes(good.read_bytes()[:100])
    (tmp / "evil.pt").write_bytes(MALICIOUS_PICKLE)  # a raw pickle
    torch.save({"x": _Evil()}, tmp / "evil_zip.pt")  # the same inside torch's zip format
    torch.save({"a": torch.zeros(2)}, tmp / "foreign.pt")  # a state dict of someone else's
    torch.save([1, 2], tmp / "list.pt")
    return tmp


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED-by-checkpoint",))


def _one_line(args: list, must: list[str]) -> str:
    res = CliRunner().invoke(cli, [str(a) for a in args])
    lines = res.output.strip().splitlines()
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 1, res.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert "Traceback" not in res.output
    for word in must:
        assert word in lines[0], (word, lines[0])
    return lines[0]


ALIGN = ["align", "--dataset", "synthetic", "--root", "{s}"]

CASES = {
    "align unknown detector": (ALIGN + ["--detector", "nope"], ["Unknown face detector 'nope'. Available:", "yunet"]),
    "align unknown landmarker": (ALIGN + ["--landmarker", "nope"], ["Unknown landmark model 'nope'", "auto", "pfld"]),
    "align size 0": (ALIGN + ["--size", "0"], ["--size must be at least 16 px", "got 0"]),
    "align size -5": (ALIGN + ["--size", "-5"], ["--size must be at least 16 px", "got -5"]),
    "align score -1": (ALIGN + ["--score-threshold", "-1"], ["--score-threshold must be in [0, 1]"]),
    "align score 1.5": (ALIGN + ["--score-threshold", "1.5"], ["--score-threshold must be in [0, 1]"]),
    "align flat folder": (["align", "--dataset", "folder", "--root", "{flat}"],
                          ["has no <identity>/ subfolders (1 images directly inside)", "<identity>/<image>"]),
    "train-gen faces NOPE": (["train-gen", "--faces", "{tmp}/NOPE", "--masks", "{a}", "--profile", "smoke"],
                             ["NOPE does not exist", "dataset name"]),
    "train-gen masks NOPE": (["train-gen", "--faces", "{a}", "--masks", "{tmp}/NOPE", "--profile", "smoke"],
                             ["NOPE does not exist", "dataset name"]),
    "train-fr val identities": (["train-fr", "--data", "{a}", "--val-identities", "10", "--epochs", "1",
                                 "--batch-size", "2", "--workers", "0"], ["--val-identities 10 is more than",
                                                                          "3 identities", "give at most 1"]),
    "train-fr head-arg": (["train-fr", "--data", "{a}", "--head-arg", "nosuch=3", "--val-identities", "0",
                           "--batch-size", "2", "--workers", "0", "--epochs", "1"],
                          ["unknown option nosuch", "it takes: s, m"]),
    "train-fr milestones": (["train-fr", "--data", "{a}", "--milestones", "a,b", "--schedule", "step"],
                            ["milestones", "expected a number, got 'a'"]),
    "train-fr device": (["train-fr", "--data", "{a}", "--device", "tpu"], ["--device tpu"]),
    "train-fr bad yaml": (["train-fr", "--data", "{a}", "--config", "{tmp}/bad.yaml"], ["bad.yaml is not valid YAML"]),
    "train-fr list yaml": (["train-fr", "--data", "{a}", "--config", "{tmp}/list.yaml"], ["must hold a mapping"]),
    "train-gen bad yaml": (["train-gen", "--faces", "{a}", "--masks", "{a}", "--config", "{tmp}/bad.yaml"],
                           ["bad.yaml is not valid YAML"]),
    "report results file": (["report", "--results", "{tmp}/FILE.txt"], ["is a file, not a results store"]),
    "align out inside root": (["align", "--dataset", "synthetic", "--root", "{s}", "--out", "{s}/aligned"],
                              ["lies inside the input folder", "choose an --out outside it"]),
    "generate out inside root": (["generate", "--dataset", "synthetic", "--root", "{s}", "--mask-type", "plain",
                                  "--out", "{s}/masked"], ["lies inside the input folder"]),
    "report results NOPE": (["report", "--results", "{tmp}/NOPE"], ["no results store at"]),
}

CHECKPOINTS = {
    "truncated.pt": ["truncated or not a PyTorch checkpoint"],
    "evil.pt": ["truncated or not a PyTorch checkpoint"],  # a raw pickle is not torch's zip format
    "evil_zip.pt": ["cannot read checkpoint", "it holds Python objects", "never unpickled"],  # [1:] also --init
    "foreign.pt": ["is not an mfrbench checkpoint", "keys ['a']"],
    "list.pt": ["is not an mfrbench checkpoint", "a list"],
}
CHECKPOINT_COMMANDS = {
    "generate": ["generate", "--method", "cyclegan", "--checkpoint", "{ck}", "--manifest", "{a}"],
    "segment": ["segment", "--checkpoint", "{ck}", "--input", "{s}"],
    "detect-parts": ["detect-parts", "--checkpoint", "{ck}", "--input", "{s}"],
    "train-gen --seg": ["train-gen", "--method", "iamgan", "--faces", "{a}", "--masks", "{a}", "--profile", "smoke",
                        "--seg", "{ck}"],
    "train-gen --det": ["train-gen", "--method", "mfgan", "--faces", "{a}", "--masks", "{a}", "--profile", "smoke",
                        "--det", "{ck}", "--seg", "{ck}"],
}


def _fill(args: list, kit: Path, out: Path, **extra) -> list:
    names = {"s": kit / "s", "a": kit / "a", "flat": kit / "flat", "tmp": kit, **extra}
    return [str(a).format(**names) for a in args] + ["--out", str(out)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_mistake_is_one_line_before_any_work(case, kit, tmp_path):
    args, must = CASES[case]
    out = tmp_path / ("out.csv" if args[0] == "detect-parts" else "out")
    if "--out" in args:  # the case names its own --out
        _one_line(_fill(args, kit, out)[:-2], must)
        assert not any(p.name in ("aligned", "masked") for p in (kit / "s").iterdir())
        return
    if args[0] == "report":  # report's --out is where tables go; the store is --results
        _one_line(_fill(args, kit, out), must)
        assert not (kit / "NOPE").exists()
        return
    _one_line(_fill(args, kit, out), must)
    if args[0] == "train-fr" and out.exists():  # the run folder records its config first; nothing trained, and a
        assert sorted(os.listdir(out)) == ["config.json"]  # corrected rerun into it starts fresh
        return
    assert not out.exists(), "a refused command must not create its output folder"


@pytest.mark.parametrize("command", sorted(CHECKPOINT_COMMANDS))
@pytest.mark.parametrize("ck", sorted(CHECKPOINTS))
def test_bad_checkpoint_is_one_line_and_never_unpickled(command, ck, kit, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / ("parts.csv" if command == "detect-parts" else "out")
    line = _one_line(_fill(CHECKPOINT_COMMANDS[command], kit, out, ck=kit / ck), CHECKPOINTS[ck])
    assert ck in line
    assert "weights_only" not in line and "False" not in line  # torch's "retry with weights_only=False": never
    assert not (tmp_path / "PWNED-by-checkpoint").exists() and not (tmp_path / "PWNED-by-gallery").exists()


@pytest.mark.parametrize("ck", ["truncated.pt", "evil_zip.pt"])
def test_train_fr_init_with_a_bad_file_is_one_line(ck, kit, tmp_path):
    line = _one_line(["train-fr", "--data", kit / "a", "--init", kit / ck, "--val-identities", "0", "--epochs", "1",
                      "--batch-size", "2", "--workers", "0", "--out", tmp_path / "fr"],
                     ["--init", ck, "cannot read it as a PyTorch state dict"] + CHECKPOINTS[ck][1:])
    assert "weights_only" not in line and "False" not in line


def test_a_truncated_run_checkpoint_names_the_file_on_resume(tmp_path):
    """The resume path (train-gen/train-fr/train-aux --resume) reads through RunDir.load_checkpoint too."""
    from mfrbench.errors import DamagedFileError
    from mfrbench.runs import RunDir

    run = RunDir(tmp_path / "run", kind="gan")
    run.save_checkpoint({"state": {"w": torch.zeros(4)}, "step": 3}, config={"a": 1})
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert run.load_checkpoint()["step"] == 3
    last.write_bytes(last.read_bytes()[:200])
    with pytest.raises(DamagedFileError, match=r"cannot read checkpoint .*last.pt: truncated or not a PyTorch"):
        run.load_checkpoint()


def test_truncated_embedding_cache_is_rebuilt_not_fatal(tmp_path, caplog):
    from mfrbench.evaluate import embed_images

    crops = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        from PIL import Image

        Image.fromarray(_face(i, size=112)).save(p)
        crops.append(str(p))

    class _Model:
        info = {"model": "fake", "config_hash": "abc", "embedding_dim": 4}
        embedding_dim = 4
        calls = 0

        def embed(self, images, flip):
            type(self).calls += 1
            return images.reshape(len(images), -1)[:, :4].astype(np.float32) + 1

    cache = tmp_path / "emb-abc-flip0.npz"
    first = embed_images(_Model(), crops, flip=False, cache=cache, progress=False)
    cache.write_bytes(cache.read_bytes()[:50])  # a kill while the cache was written, a full disk
    again = embed_images(_Model(), crops, flip=False, cache=cache, progress=False)
    np.testing.assert_array_equal(first, again)
    assert _Model.calls == 2 and "not an mfrbench embeddings file" in caplog.text
    np.testing.assert_array_equal(embed_images(_Model(), crops, flip=False, cache=cache, progress=False), first)
    assert _Model.calls == 2  # the rebuilt cache is read back


@pytest.fixture(scope="module")
def gan_run(kit):
    """A one-step cyclegan smoke run (the valid checkpoint the next cases damage or pair with a bad one)."""
    res = CliRunner().invoke(cli, ["train-gen", "--method", "cyclegan", "--profile", "smoke", "--faces",
                                   str(kit / "a"), "--masks", str(kit / "a"), "--steps", "1", "--out",
                                   str(kit / "cg"), "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return kit / "cg"


@pytest.mark.parametrize("ck", ["truncated.pt", "evil_zip.pt", "foreign.pt"])
def test_generate_with_a_bad_seg_checkpoint_is_one_line(ck, kit, gan_run, tmp_path):
    line = _one_line(["generate", "--method", "cyclegan", "--checkpoint", gan_run, "--seg-checkpoint", kit / ck,
                      "--manifest", kit / "a", "--out", tmp_path / "o"], CHECKPOINTS[ck])
    assert ck in line and "weights_only" not in line and not (tmp_path / "o").exists()


def test_train_gen_resume_from_a_truncated_checkpoint_is_one_line(gan_run, tmp_path):
    import shutil

    run = tmp_path / "cg"
    shutil.copytree(gan_run, run)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    line = _one_line(["train-gen", "--resume", "--out", run, "--steps", "2", "--no-progress"],
                     ["cannot read checkpoint", "last.pt", "truncated or not a PyTorch checkpoint"])
    assert "weights_only" not in line
