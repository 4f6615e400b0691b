"""Every command that reads user files, over the gallery of bad inputs (issue 12).

For each command: every input is accounted for (one manifest row, ok or skipped with the expected
reason), no traceback, nothing written outside ``--out``, exit code 0 (per-image problems are rows,
not failures), no two ok rows share an output file, and every ok row's files exist. The gallery and
the kit-free detector / landmark model come from ``test_bad_input_gallery``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from test_bad_input_gallery import FIXED, fixed_face_plugins, make_gallery

from mfrbench.cli import cli
from mfrbench.manifest import read_manifest

#: Gallery outcomes that a command reading files straight from a folder (no manifest, any size) reads fine.
READ_BY_PATH = ("ok", "duplicate", "no_identity", "too_small", "bad_name")


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``root`` (links not followed) -> (size, mtime_ns): what "nothing written" compares."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(d, name)
            st = p.lstat()
            out[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def _invoke(*args) -> str:
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    assert res.exit_code == 0, res.output
    return res.output


def _check_manifest(out: Path, want: dict[str, str]) -> pd.DataFrame:
    """One row per expected key with its expected outcome; unique, existing output files."""
    df = read_manifest(out)
    assert sorted(df["key"]) == sorted(want), "every input is accounted for, once"
    got = {r.key: ("ok" if r.status == "ok" else r.reason.split(":")[0]) for r in df.itertuples()}
    assert got == want
    ok = df[df["status"] == "ok"]
    for col in [c for c in df.columns if c.endswith("out_path")]:
        files = [f for f in ok[col] if f]
        assert len(files) == len(set(files)), f"two ok rows share a {col} file"
        assert all((out / f).is_file() for f in files)
        assert all((out / f).resolve().is_relative_to(out.resolve()) for f in files)
    assert (df["status"] == "ok").sum() + (df["status"] == "skipped").sum() == len(df)
    return df


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The gallery and its aligned manifest (one align run shared by the tests of this module)."""
    fixed_face_plugins()
    tmp = tmp_path_factory.mktemp("sweep")
    exp = make_gallery(tmp / "gallery")
    before = _tree(tmp)
    output = _invoke("align", "--dataset", "folder", "--root", tmp / "gallery", "--out", tmp / "aligned",
                     "--detector", FIXED, "--landmarker", FIXED, "--no-grid")
    return tmp, exp, before, output


def test_align_accounts_for_every_input(swept):
    tmp, exp, before, output = swept
    _check_manifest(tmp / "aligned", exp)
    n_ok = sum(v == "ok" for v in exp.values())
    assert f"{len(exp)} inputs: {n_ok} ok, {len(exp) - n_ok} skipped" in output
    after = {k: v for k, v in _tree(tmp).items() if not k.startswith("aligned")}
    assert after == {k: v for k, v in before.items() if not k.startswith("aligned")}, "nothing written outside --out"
    assert not Path("PWNED-by-gallery").exists()


def test_align_same_stem_and_several_dots_give_distinct_files(swept):
    tmp = swept[0]
    df = read_manifest(tmp / "aligned", status="ok").set_index("key")
    names = {k: df.loc[k, "out_path"] for k in ("p1/face.jpg", "p1/face.png", "p1/face.JPEG", "p1/shot.v1.jpg",
                                                "p1/shot.v2.jpg", "p1/x.png", "p1/x.png.jpg")}
    assert names["p1/face.jpg"] == "images/p1/face.jpg" and names["p1/face.png"] == "images/p1/face.png.jpg"
    assert names["p1/shot.v1.jpg"] == "images/p1/shot.v1.jpg"
    assert len(set(names.values())) == len(names)


def test_align_rerun_resumes_to_the_same_manifest(swept):
    tmp, exp = swept[0], swept[1]
    first = (tmp / "aligned" / "manifest.csv").read_bytes()
    _invoke("align", "--dataset", "folder", "--root", tmp / "gallery", "--out", tmp / "aligned",
            "--detector", FIXED, "--landmarker", FIXED, "--no-grid")
    assert (tmp / "aligned" / "manifest.csv").read_bytes() == first
    _check_manifest(tmp / "aligned", exp)


def test_generate_from_the_aligned_gallery(swept):
    tmp, exp = swept[0], swept[1]
    before = _tree(tmp)
    _invoke("generate", "--method", "mtf", "--mask-type", "plain", "--manifest", tmp / "aligned",
            "--out", tmp / "masked", "--no-grid")
    _check_manifest(tmp / "masked", {k: "ok" for k, v in exp.items() if v == "ok"})
    after = {k: v for k, v in _tree(tmp).items() if not k.startswith("masked")}
    assert after == {k: v for k, v in before.items() if not k.startswith("masked")}


def test_generate_never_writes_outside_out_for_hostile_manifest_keys(swept, tmp_path):
    """A hand-edited aligned manifest whose keys climb out of --out or are absolute: skipped, nothing written."""
    tmp = swept[0]
    src = tmp / "aligned"
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    meta = json.loads((src / "manifest.json").read_text())
    meta.update(inputs=5, ok=5, skipped=0, skip_reasons={})  # a consistent hand-edit: only the keys are hostile
    (hostile / "manifest.json").write_text(json.dumps(meta))
    df = pd.read_csv(src / "manifest.csv", keep_default_na=False, dtype=str)
    ok = df[df["status"] == "ok"].head(5).copy()
    ok["out_path"] = [str((src / p).resolve()) for p in ok["out_path"]]  # absolute: the crops stay where they are
    escape = tmp_path / "outside" / "abs.jpg"
    ok["key"] = ["../../escape.jpg", "../../../../../../tmp/escape2.jpg", str(escape), "p1/../p1/ok_rgb.jpg",
                 "p1/fine.jpg"]
    ok.to_csv(hostile / "manifest.csv", index=False)
    before = _tree(tmp_path)
    _invoke("generate", "--method", "mtf", "--mask-type", "plain", "--manifest", hostile, "--out", tmp_path / "o",
            "--no-grid")
    out = read_manifest(tmp_path / "o").set_index("key")
    assert out.loc["p1/fine.jpg", "status"] == "ok"
    for key in ok["key"][:4]:
        assert out.loc[key, "status"] == "skipped" and out.loc[key, "reason"].startswith("unsafe_path:"), key
    after = {k: v for k, v in _tree(tmp_path).items() if not k.startswith("o/") and k != "o"}
    assert after == before and not escape.exists() and not (tmp_path.parent / "escape.jpg").exists()
    assert not Path("/tmp/escape2.jpg").exists()


def test_output_collision_guard_turns_a_shared_file_into_a_skipped_row(swept, tmp_path, monkeypatch):
    """If a name scheme ever maps two keys to one file, the later row is skipped, never a silent second ok."""
    import mfrbench.imageio as imageio

    monkeypatch.setattr(imageio, "output_rel", lambda key, ext, folder="images": f"{folder}/same{ext}")
    _invoke("generate", "--method", "mtf", "--mask-type", "plain", "--manifest", swept[0] / "aligned",
            "--out", tmp_path / "o", "--no-grid", "--limit", 3)
    df = read_manifest(tmp_path / "o")
    assert (df["status"] == "ok").sum() == 1
    assert sum(r.startswith("output_collision: images/same.jpg is the output of ") for r in df["reason"]) == 2


def test_dataset_report_on_the_gallery_manifest(swept):
    out = _invoke("dataset-report", swept[0] / "aligned")
    assert "symlink_loop" in out and "not_regular" in out


@pytest.fixture(scope="module")
def fr_run(swept):
    """train-fr --data <the raw gallery folder>: the FIFO, loop and dangling link are left out, nothing hangs."""
    tmp = swept[0]
    _invoke("train-fr", "--data", tmp / "gallery", "--out", tmp / "fr", "--backbone", "mobilefacenet",
            "--embedding-dim", 8, "--epochs", 1, "--batch-size", 4, "--workers", 0, "--val-identities", 0,
            "--device", "cpu", "--no-progress")
    return tmp / "fr"


def test_train_fr_on_the_raw_gallery_folder(fr_run):
    assert (fr_run / "checkpoints" / "last.pt").is_file()


def test_eval_on_a_folder_benchmark_made_of_galleries(swept, fr_run, models_root):
    """eval --benchmark folder over masked/ and unmasked/ galleries: one row, bad images never fatal."""
    from mfrbench.results import read_results

    bench = swept[0] / "bench"
    make_gallery(bench / "masked")
    make_gallery(bench / "unmasked")
    before = _tree(swept[0])
    out = _invoke("eval", "--run", fr_run, "--benchmark", "folder", "--root", bench, "--results",
                  swept[0] / "res", "--cache", swept[0] / "cache", "--bootstrap", 10, "--no-flip")
    rows = read_results(swept[0] / "res")
    assert len(rows) == 1 and rows["benchmark"][0] == "folder" and "coverage" in out
    changed = {k for k, v in _tree(swept[0]).items() if before.get(k) != v}
    assert all(k.split("/")[0] in ("res", "cache") for k in changed), sorted(changed)[:5]


def test_quality_fid_reads_the_gallery_as_real_photos(swept, monkeypatch):
    """quality --real over the gallery folder: unreadable entries are left out and counted in the notes."""
    import numpy as np

    import mfrbench.metrics.quality as Q
    from mfrbench.quality import fid_kid

    tmp, exp = swept[0], swept[1]
    monkeypatch.setattr(Q, "load_inception", lambda: None)  # the features are not the point here: the reading is
    monkeypatch.setattr(Q, "inception_features", lambda model, x: x.reshape(len(x), -1)[:, :8].astype(np.float64)
                        + np.random.default_rng(len(x)).normal(size=(len(x), 8)))
    generated = sorted(str(p) for p in (tmp / "aligned" / "images").rglob("*.jpg"))
    cols, notes = fid_kid(tmp / "gallery", generated, real_limit=None, kid_subset=5, seed=0, progress=False)
    unreadable = [k for k, v in exp.items() if v not in READ_BY_PATH]
    assert cols["n_real"] == len(exp) - len(unreadable)
    assert f"{len(unreadable)} real images unreadable and left out (" in " ".join(notes)


def test_generate_from_raw_gallery_photos(swept, tmp_path, models_root):
    """generate --dataset folder (the photo path: YuNet finds the faces): the same accounting."""
    tmp, exp = swept[0], swept[1]
    before = _tree(tmp)
    _invoke("generate", "--method", "mtf", "--mask-type", "plain", "--dataset", "folder", "--root", tmp / "gallery",
            "--out", tmp_path / "o", "--no-grid", "--landmarker", FIXED)
    df = read_manifest(tmp_path / "o")
    assert sorted(df["key"]) == sorted(exp)
    for r in df.itertuples():
        got = "ok" if r.status == "ok" else r.reason.split(":")[0]
        assert got == exp[r.key] or (exp[r.key] == "ok" and got == "no_face"), (r.key, got)
    assert _tree(tmp) == before


@pytest.fixture(scope="module")
def aux_runs(swept):
    """Seg and Det runs (2 smoke steps each) trained on mtf output of the aligned gallery."""
    tmp = swept[0]
    if not (tmp / "masked" / "manifest.csv").is_file():
        _invoke("generate", "--method", "mtf", "--mask-type", "plain", "--manifest", tmp / "aligned",
                "--out", tmp / "masked", "--no-grid")
    for module in ("seg", "det"):
        _invoke("train-aux", "--module", module, "--data", tmp / "masked", "--faces", tmp / "aligned", "--out",
                tmp / module, "--profile", "smoke", "--steps", 2, "--device", "cpu", "--no-progress")
    return tmp / "seg", tmp / "det"


def test_segment_over_the_gallery(swept, aux_runs):
    """segment: one map per readable input (same-stem inputs keep their own), a reason for every other one."""
    tmp, exp = swept[0], swept[1]
    before = _tree(tmp / "gallery")
    out = _invoke("segment", "--checkpoint", aux_runs[0], "--input", tmp / "gallery", "--out", tmp / "segout",
                  "--no-align")
    written, total = (int(x) for x in re.search(r"(\d+) of (\d+) images segmented", out).groups())
    skipped = {line.split(": ")[0][len("skipped "):]: line.split(": ")[1] for line in out.splitlines()
               if line.startswith("skipped ")}
    readable = {k for k, v in exp.items() if v in READ_BY_PATH}
    assert total == len(exp) and written == len(readable) and written + len(skipped) == total
    assert set(skipped) == set(exp) - readable
    maps = [p for p in (tmp / "segout").rglob("*.png") if p.name != "grid.png"]
    assert len(maps) == written, "two inputs share a map file"
    assert _tree(tmp / "gallery") == before


def test_detect_parts_over_the_gallery(swept, aux_runs):
    """detect-parts: one CSV row per listed input, ok or skipped with the reason."""
    tmp, exp = swept[0], swept[1]
    _invoke("detect-parts", "--checkpoint", aux_runs[1], "--input", tmp / "gallery", "--out", tmp / "parts.csv",
            "--no-align")
    df = pd.read_csv(tmp / "parts.csv", keep_default_na=False)
    assert sorted(df["file"]) == sorted(exp)
    bad = {r.file: r.reason.split(":")[0] for r in df.itertuples() if r.status != "ok"}
    assert bad == {k: v for k, v in exp.items() if v not in READ_BY_PATH}


def test_align_with_two_workers_gives_the_same_manifest(swept, tmp_path, models_root):
    """The listed skips (FIFO, loops, ...) travel to worker processes too: the same bytes as one process."""
    tmp, exp = swept[0], swept[1]
    for w in (1, 2):
        _invoke("align", "--dataset", "folder", "--root", tmp / "gallery", "--out", tmp_path / f"w{w}", "--workers",
                w, "--landmarker", "none", "--no-grid")
    assert (tmp_path / "w1" / "manifest.csv").read_bytes() == (tmp_path / "w2" / "manifest.csv").read_bytes()
    df = read_manifest(tmp_path / "w2")
    assert sorted(df["key"]) == sorted(exp)
    got = {r.key: r.reason.split(":")[0] for r in df.itertuples() if exp[r.key] != "ok"}
    assert got == {k: v for k, v in exp.items() if v != "ok"}


def test_train_gen_on_the_raw_gallery(swept, tmp_path, models_root):
    """train-gen --faces/--masks <the gallery>: aligned once into the run folder, bad files skipped, one step trains."""
    tmp = swept[0]
    before = _tree(tmp / "gallery")
    out = _invoke("train-gen", "--method", "cyclegan", "--profile", "smoke", "--faces", tmp / "gallery", "--masks",
                  tmp / "gallery", "--steps", 1, "--max-faces", 100, "--max-masks", 100, "--out", tmp_path / "cg",
                  "--device", "cpu", "--no-progress")
    assert "1 steps" in out and (tmp_path / "cg" / "checkpoints" / "last.pt").is_file()
    aligned = [p for p in (tmp_path / "cg").rglob("manifest.csv")]
    assert aligned, "the gallery is aligned into the run folder, with a manifest"
    want = {k: "ok" if v == "no_identity" else v for k, v in swept[1].items()}  # any tree of photos here
    for m in aligned:
        df = read_manifest(m.parent)
        assert sorted(df["key"]) == sorted(want)
        for r in df.itertuples():
            got = "ok" if r.status == "ok" else r.reason.split(":")[0]
            assert got == want[r.key] or (want[r.key] == "ok" and got == "no_face"), (r.key, got)
    assert _tree(tmp / "gallery") == before
