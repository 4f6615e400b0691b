"""Sharded runs (--shard i/N) and `mfrbench merge`: byte-identical to one process for any N; bad shards named."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mfrbench.align import AlignConfig, align_dataset
from mfrbench.datasets import create_dataset
from mfrbench.errors import MfrbenchError
from mfrbench.generate import GenerateConfig, GeneratedBatch, MaskGenerator, generate_dataset
from mfrbench.manifest import read_manifest
from mfrbench.merge import merge_shards
from mfrbench.shards import Shard, shard_of
from mfrbench.synthetic import materialize

VOLATILE = ("created", "finished")


class Boxes(MaskGenerator):
    """A real (if simple) generator: a random box per image, drawn from the image's own generator."""

    name = "boxes"
    input_frame = "any"
    per_image_rng = True
    die_after: int | None = None  # raise KeyboardInterrupt after this many batches (a kill, for resume tests)

    def generate(self, images, landmarks, *, rng):
        if Boxes.die_after is not None:
            Boxes.die_after -= 1
            if Boxes.die_after < 0:
                raise KeyboardInterrupt
        out, maps, info = images.copy(), np.zeros(images.shape[:3], np.uint8), []
        for i, r in enumerate(rng):
            h, w = images.shape[1:3]
            y, x = int(r.integers(0, h // 2)), int(r.integers(0, w // 2))
            out[i, y:y + h // 3, x:x + w // 3] = r.integers(0, 256, 3)
            maps[i, y:y + h // 3, x:x + w // 3] = 1
            info.append({"box": [x, y], "draw": float(r.random())})
        return GeneratedBatch(out, maps, info)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 synthetic faces + 4 byte-identical copies under keys that sort before their originals (one image has
    two copies: a shard may hold two of the three, keeping one that another shard's copy outranks)."""
    root, _ = materialize(tmp_path_factory.mktemp("synth") / "s", identities=4, per_identity=3)
    saved = json.loads((root / "landmarks.json").read_text())
    for src, prefix in zip(saved["rows"][:3] + saved["rows"][:1], ["a-copy"] * 3 + ["c-copy"]):
        name = src["key"].replace("/", "," if src is saved["rows"][1] else "-")  # one key needs CSV quoting
        dup = {**src, "key": f"{prefix}/{name}", "identity": prefix}
        (root / dup["key"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / src["key"], root / dup["key"])
        saved["rows"].append(dup)
    (root / "landmarks.json").write_text(json.dumps(saved))
    return root


def _ds(root):
    return create_dataset("synthetic", root)


def tree(out: Path) -> dict[str, str]:
    """Every output file (images, maps, manifest.csv) by path -> sha1, and manifest.json without its times."""
    files = {p.relative_to(out).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
             for sub in ("images", "maps") for p in sorted((out / sub).rglob("*")) if p.is_file()}
    files["manifest.csv"] = hashlib.sha1((out / "manifest.csv").read_bytes()).hexdigest()
    meta = json.loads((out / "manifest.json").read_text())
    files["manifest.json"] = json.dumps({k: v for k, v in meta.items() if k not in VOLATILE})
    return files


def _gen(root, out, **kw):
    kw.setdefault("batch_size", 4)
    return generate_dataset(Boxes(), out, dataset=_ds(root), seed=3, progress=False, cfg=GenerateConfig(ext=".png"),
                            **kw)


def test_shard_parse_and_partition():
    assert Shard.parse("2/5") == Shard(2, 5) and str(Shard(2, 5)) == "2/5" and Shard.parse(None) is None
    for bad in ("5/5", "x", "1/0", "-1/3", "1/3/4"):
        with pytest.raises(MfrbenchError, match="shard"):
            Shard.parse(bad)
    keys = [f"id{i % 37}/{i}.jpg" for i in range(2000)]
    for n in (1, 2, 3, 7):
        owners = [[s for s in range(n) if Shard(s, n).owns(k)] for k in keys]
        assert all(len(o) == 1 for o in owners)  # every key in exactly one shard
        assert all(o[0] == shard_of(k, n) for o, k in zip(owners, keys))
        if n > 1:
            sizes = np.bincount([o[0] for o in owners], minlength=n)
            assert sizes.min() > 0.8 * len(keys) / n  # and the shards are about equal


@pytest.mark.parametrize("n", [1, 2, 3])
def test_generate_shards_merge_to_one_process_run(data, tmp_path, n):
    one = _gen(data, tmp_path / "one")
    assert one["inputs"] == 16 and one["skip_reasons"] == {"duplicate": 4} and one["seed_version"] == 2
    df = read_manifest(tmp_path / "one")
    assert df.key.tolist() == sorted(df.key)  # key order, whatever order the dataset listed them in
    dups = df[df.reason.str.startswith("duplicate")]
    assert all(k.startswith(("c-copy/", "synthetic")) for k in dups.key)  # smallest key kept, not the first listed
    owners = {shard_of(k, n) for k in df.key[df.key.str.startswith("a-copy/")]} | {shard_of(k, n) for k in dups.key}
    assert n == 1 or len(owners) > 1  # some copies sit in other shards than their originals
    if n == 3:  # shard 1 keeps c-copy/ over its original, but shard 0's a-copy/ outranks both
        assert [shard_of(k, 3) for k in ("a-copy/synthetic-0000-0000.png", "c-copy/synthetic-0000-0000.png",
                                         "synthetic-0000/0000.png")] == [0, 1, 1]
    metas = [_gen(data, tmp_path / "shards" / str(i), shard=f"{i}/{n}") for i in range(n)]
    assert sum(m["inputs"] for m in metas) == 16 and all(m["shard"]["inputs_all"] == 16 for m in metas)
    merged = merge_shards(tmp_path / "merged", [tmp_path / "shards" / str(i) for i in reversed(range(n))])
    assert merged["ok"] == one["ok"] == 12
    assert tree(tmp_path / "merged") == tree(tmp_path / "one")
    # The merged folder is a complete run: the same command without --shard resumes it with nothing to do.
    again = _gen(data, tmp_path / "merged")
    assert again["ok"] == 12 and tree(tmp_path / "merged") == tree(tmp_path / "one")


def test_align_shards_merge_to_one_process_run(data, tmp_path):
    cfg = AlignConfig(landmarker="none", ext=".png")
    align_dataset(_ds(data), tmp_path / "one", cfg=cfg, progress=False)
    for i in range(2):
        align_dataset(_ds(data), tmp_path / f"s{i}", cfg=cfg, progress=False, shard=Shard(i, 2))
    merge_shards(tmp_path / "merged", [tmp_path / "s0", tmp_path / "s1"])
    one, merged = tree(tmp_path / "one"), tree(tmp_path / "merged")
    assert merged == one and len(one) == 12 + 2


def test_killed_shard_resumes_and_merges(data, tmp_path):
    _gen(data, tmp_path / "one")
    _gen(data, tmp_path / "s0", shard="0/2")
    Boxes.die_after = 1
    try:
        with pytest.raises(KeyboardInterrupt):
            _gen(data, tmp_path / "s1", shard="1/2", batch_size=2)
    finally:
        Boxes.die_after = None
    assert 0 < len((tmp_path / "s1" / "rows.jsonl").read_text().splitlines()) < 7
    with pytest.raises(MfrbenchError, match=r"shard 1/2 in .*s1 has not finished: rerun its command"):
        merge_shards(tmp_path / "m", [tmp_path / "s0", tmp_path / "s1"])
    with pytest.raises(MfrbenchError, match="different config.*shard"):
        _gen(data, tmp_path / "s1", shard="0/2")  # resuming a shard folder as another shard is refused
    _gen(data, tmp_path / "s1", shard="1/2")  # the same command resumes it
    merge_shards(tmp_path / "m", [tmp_path / "s0", tmp_path / "s1"])
    assert tree(tmp_path / "m") == tree(tmp_path / "one")


def test_merge_names_the_bad_shard(data, tmp_path):
    for i in range(3):
        _gen(data, tmp_path / f"s{i}", shard=f"{i}/3")
    s = [tmp_path / f"s{i}" for i in range(3)]
    with pytest.raises(MfrbenchError, match=r"^missing shard 1/3 \(given: 0/3, 2/3\)$"):
        merge_shards(tmp_path / "m", [s[0], s[2]])
    with pytest.raises(MfrbenchError, match="shard 2/3 given twice"):
        merge_shards(tmp_path / "m", [s[0], s[1], s[2], s[2]])
    generate_dataset(Boxes(), tmp_path / "other", dataset=_ds(data), seed=4, progress=False,
                     cfg=GenerateConfig(ext=".png"), shard="1/3")
    with pytest.raises(MfrbenchError, match=r"shard 1/3 in .*other has seed 4, shard 0/3 in .*s0 has 3"):
        merge_shards(tmp_path / "m", [s[0], tmp_path / "other", s[2]])
    _gen(data, tmp_path / "jpg", shard="1/3", limit=14)
    with pytest.raises(MfrbenchError, match=r"shard 1/3 in .*jpg was run with a different config .*differs in limit"):
        merge_shards(tmp_path / "m", [s[0], tmp_path / "jpg", s[2]])
    _gen(data, tmp_path / "whole")
    with pytest.raises(MfrbenchError, match="is not a shard"):
        merge_shards(tmp_path / "m", [tmp_path / "whole"])
    # A shard whose folder was tampered with after it finished (a row dropped) is caught by the accounting.
    bad = tmp_path / "bad"
    shutil.copytree(s[1], bad)
    lines = (bad / "manifest.csv").read_text().splitlines(keepends=True)
    (bad / "manifest.csv").write_text("".join(lines[:-1]))
    with pytest.raises(MfrbenchError, match=r"shard 1/3 in .*bad has \d+ rows but its manifest.json counts"):
        merge_shards(tmp_path / "m", [s[0], bad, s[2]])
    assert not (tmp_path / "m" / "manifest.json").exists()
    merge_shards(tmp_path / "m", s)
    with pytest.raises(MfrbenchError, match="already holds a manifest"):
        merge_shards(tmp_path / "m", s)


def test_merge_refuses_shards_of_another_input_list(tmp_path):
    root, _ = materialize(tmp_path / "s", identities=3, per_identity=3)
    _gen(root, tmp_path / "s0", shard="0/2")
    saved = json.loads((root / "landmarks.json").read_text())  # the folder gains an image before shard 1 runs
    saved["rows"].append({**saved["rows"][0], "key": "zz/new.png"})
    (root / "zz").mkdir()
    shutil.copyfile(root / saved["rows"][0]["key"], root / "zz" / "new.png")
    (root / "landmarks.json").write_text(json.dumps(saved))
    _gen(root, tmp_path / "s1", shard="1/2")
    with pytest.raises(MfrbenchError, match=r"shard 1/2 in .*s1 listed other inputs than shard 0/2 .*\(10 vs 9 inputs"):
        merge_shards(tmp_path / "m", [tmp_path / "s0", tmp_path / "s1"])


def _fake_sbatch(bin_dir: Path) -> None:
    """A stand-in for Slurm's sbatch that runs the job at once: each array task with its SLURM_ARRAY_TASK_ID."""
    script = bin_dir / "sbatch"
    script.write_text(f"""#!{sys.executable}
import os, re, subprocess, sys
args, path = sys.argv[1:-1], sys.argv[-1]
text = open(path).read()
m = re.search(r"^#SBATCH --array=(\\d+)-(\\d+)", text, re.M)
ids = range(int(m.group(1)), int(m.group(2)) + 1) if m else [None]
for i in ids:
    env = dict(os.environ, **({{"SLURM_ARRAY_TASK_ID": str(i)}} if i is not None else {{}}))
    subprocess.run(["bash", path], env=env, check=True)
print("4242")
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_slurm_script_runs_shards_and_merge(tmp_path):
    from mfrbench.cli import cli

    root, _ = materialize(tmp_path / "s", identities=3, per_identity=3)
    out = tmp_path / "merged"
    res = CliRunner().invoke(cli, ["slurm-script", "generate", "--shards", "3", "--out", str(out), "--cpus", "1",
                                   "--method", "mtf", "--mask-type", "plain", "--dataset", "synthetic", "--root",
                                   str(root), "--format", "png", "--no-grid"])
    assert res.exit_code == 0, res.output
    assert "#SBATCH --array=0-2" in res.output and '--shard "$SLURM_ARRAY_TASK_ID/3"' in res.output
    assert "--dependency=afterok" in res.output
    (tmp_path / "submit.sh").write_text(res.output)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_sbatch(bin_dir)
    exe = Path(sys.executable).with_name("mfrbench")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", MFRBENCH=str(exe))
    run = subprocess.run(["bash", str(tmp_path / "submit.sh")], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    res1 = CliRunner().invoke(cli, ["generate", "--method", "mtf", "--mask-type", "plain", "--dataset", "synthetic",
                                    "--root", str(root), "--format", "png", "--no-grid", "--out",
                                    str(tmp_path / "one")])
    assert res1.exit_code == 0, res1.output
    assert tree(out) == tree(tmp_path / "one")


def test_slurm_script_refuses_options_it_sets():
    from mfrbench.cli import cli

    res = CliRunner().invoke(cli, ["slurm-script", "generate", "--shards", "2", "--out", "x", "--shard", "0/2"])
    assert res.exit_code != 0 and "--shard is set by slurm-script" in res.output


def test_gan_generator_shards_merge_to_one_process_run(tmp_path):
    """A GAN backend (CycleGAN-shaped, random weights, batched on the CPU) under --shard: the same bytes."""
    import torch

    from mfrbench.generators.gan.config import resolve_config
    from mfrbench.generators.gan.contract import build_gan
    from mfrbench.generators.gan.generator import GANMaskGenerator

    t, m = resolve_config("cyclegan", "cpu", train={"size": 64}, model={"n_blocks": 2})
    torch.manual_seed(0)
    gen = GANMaskGenerator(build_gan(t, m, torch.device("cpu")), run_dir="test", batch_size=8)
    root, _ = materialize(tmp_path / "s", identities=4, per_identity=4)
    kw = dict(dataset=_ds(root), seed=1, progress=False, cfg=GenerateConfig(ext=".png"), batch_size=8)
    generate_dataset(gen, tmp_path / "one", **kw)
    for i in range(3):
        generate_dataset(gen, tmp_path / f"s{i}", shard=f"{i}/3", **kw)
    merge_shards(tmp_path / "m", [tmp_path / f"s{i}" for i in range(3)])
    assert tree(tmp_path / "m") == tree(tmp_path / "one") and len(tree(tmp_path / "one")) == 2 * 16 + 2


def test_slurm_script_for_eval_ends_with_the_unsharded_eval(tmp_path):
    from mfrbench.cli import cli

    res = CliRunner().invoke(cli, ["slurm-script", "eval", "--shards", "4", "--out", "res", "--max-parallel", "2",
                                   "--model", "dlib", "--benchmark", "rmfrd", "--partition", "gpu"])
    assert res.exit_code == 0, res.output
    script = res.output
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --partition=gpu" in script
    assert 'eval --model dlib --benchmark rmfrd --results res --workers 4 --shard "$SLURM_ARRAY_TASK_ID/4"' in script
    final = script.split("final.sbatch <<'EOF'")[1].split("EOF")[0]
    assert "eval --model dlib --benchmark rmfrd --results res --workers 4" in final and "--shard" not in final
    (tmp_path / "s.sh").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "s.sh")]).returncode == 0


def test_bad_shard_fails_before_any_work(data, tmp_path):
    with pytest.raises(MfrbenchError, match=r"^Expected a shard i/N with 0 <= i < N, but got 3/3$"):
        _gen(data, tmp_path / "o", shard="3/3")
    with pytest.raises(MfrbenchError, match="Expected --shard i/N"):
        align_dataset(_ds(data), tmp_path / "a", cfg=AlignConfig(landmarker="none"), shard="half")
    assert not (tmp_path / "o").exists() and not (tmp_path / "a").exists()
