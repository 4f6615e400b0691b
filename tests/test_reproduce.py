"""``mfrbench reproduce --profile smoke`` on the data kit: the whole study, then the rules a user relies on.

One smoke study (about 4 minutes on 2 cores) is shared by the tests of this module: a second run does
nothing, a changed option reruns only what depends on it, ``--dry-run`` plans without working, missing
data is a one-line skip. Killing a real run and resuming it is the slow test (the engine's kill and
resume is pinned in tests/test_stages.py in a second).

In the default suite (about 5 minutes on 2 quiet cores: the smoke GAN read-outs leave KID out and
quality uses 8 faces); only the kill + resume test is marked slow.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

MFRBENCH = [sys.executable, "-c", "from mfrbench.cli import main; main()"]


def _reproduce(out: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "MFRBENCH_CACHE": str(out.parent / "cache")}
    return subprocess.run([*MFRBENCH, "reproduce", "--profile", "smoke", "--out", str(out), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _ran(stdout: str) -> list[str]:
    """Names of the stages a run did (its ``[n/N] name: done in`` lines)."""
    return re.findall(r"^\[\d+/\d+\] (\S+): done in", stdout, flags=re.M)


def _by_helper(stdout: str) -> list[str]:
    """Names of the stages another process of the study did (``--jobs``)."""
    return re.findall(r"^\[\d+/\d+\] (\S+): done by another run", stdout, flags=re.M)


@pytest.fixture(scope="module")
def study(kit, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    if not (kit / "celeba-rec" / "train.rec").is_file():
        pytest.skip("celeba-rec/ not in the data kit")
    out = tmp_path_factory.mktemp("study") / "smoke"
    r = _reproduce(out, "--jobs", "2")  # two processes share it, as a user on 2 cores runs it
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r


def test_smoke_study_fills_every_cell_of_its_plan(study):
    out, r = study
    mine, helpers = _ran(r.stdout), _by_helper(r.stdout)
    assert mine and helpers and not set(mine) & set(helpers), r.stdout  # --jobs 2: both processes worked
    helper_log = (out / "logs" / "job-1.log").read_text()
    assert set(helpers) <= set(_ran(helper_log)), helper_log[-2000:]
    assert len(mine) + len(helpers) == len(list((out / "stages").iterdir()))
    t2 = pd.read_csv(out / "report" / "tables" / "rmfrd" / "table2.csv")
    filled = t2[t2["acc"].notna()]
    # the smoke plan: 4 generators + 4 ablations (3 of the paper's, plain output) + the unmasked row, ArcFace each
    assert set(zip(filled["variant"], filled["loss"])) >= {(g, "ArcFace") for g in ("mtf", "iamgan", "mfgan")}
    assert {"cyclegan", "none"} <= set(filled["variant"])
    t3 = pd.read_csv(out / "report" / "tables" / "rmfrd" / "table3.csv")
    assert t3["acc"].notna().all() and t3["fid"].notna().all(), t3  # smoke GANs' SSIM may be NaN (4-step Seg)
    ev = pd.read_csv(out / "report" / "results" / "evals.csv")
    assert (ev["kind"] == "quality").sum() == 8 and (ev["kind"] == "eval").sum() == 9
    # every cell is traceable: its eval row names the recognizer run of this study
    assert all(str(out / "stages") in p for p in ev.loc[ev["kind"] == "eval", "model_path"])
    # and the study's record sits beside the tables: every stage with its wall time, the command and the code
    st = pd.read_csv(out / "report" / "stages.csv")
    assert len(st) == len(mine) + len(helpers) and (st["status"] == "done").all() and (st["seconds"] >= 0).all()
    rec = json.loads((out / "report" / "study.json").read_text())
    assert rec["command"].startswith("mfrbench reproduce --profile smoke") and rec["profile"]["name"] == "smoke"
    assert rec["stages"] == {"done": len(st)} and "commit" in rec


def test_publish_copies_the_report_and_keeps_the_readme(study, tmp_path):
    out, _ = study
    dest = tmp_path / "results-smoke"
    dest.mkdir()
    (dest / "README.md").write_text("what was run\n")
    (dest / "tables").mkdir()
    (dest / "tables" / "stale.csv").write_text("old\n")
    r = _reproduce(out, "--publish", str(dest))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (dest / "README.md").read_text() == "what was run\n" and not (dest / "tables" / "stale.csv").exists()
    assert (dest / "tables" / "rmfrd" / "table2.csv").is_file() and (dest / "html" / "report.html").is_file()
    assert (dest / "study.json").is_file() and not (dest / "stage.json").exists()
    assert (dest / "results" / "evals.csv").is_file() and not (dest / "results" / "plots").exists()


def test_second_run_does_nothing(study):
    out, _ = study
    t0 = time.perf_counter()
    r = _reproduce(out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _ran(r.stdout) == [] and " 0 to run" in r.stdout
    assert time.perf_counter() - t0 < 60


def test_a_changed_option_reruns_only_its_dependants(study):
    out, _ = study
    r = _reproduce(out, "--set", "n_boot=20")
    assert r.returncode == 0, r.stderr[-2000:]
    ran = _ran(r.stdout)
    assert ran and all(n.startswith("eval-") or n == "report" for n in ran), ran
    assert len([n for n in ran if n.startswith("eval-")]) == 9  # 4 generators + 4 ablations + none, on rmfrd


def test_dry_run_plans_without_working_and_names_missing_data(study, kit, tmp_path):
    out, _ = study
    r = _reproduce(out, "--benchmarks", "rmfrd,mfr2", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^faces\s+cached", r.stdout, flags=re.M)
    if not (kit / "mfr2").exists():
        assert re.search(r"^eval-mtf-arcface-mfr2\s+skipped .*'mfr2' not found", r.stdout, flags=re.M), r.stdout
    fresh = tmp_path / "fresh"
    r = _reproduce(fresh, "--dry-run")
    assert r.returncode == 0 and "todo" in r.stdout and not (fresh / "stages").exists()


def test_user_mistakes_are_one_line(kit, tmp_path):  # the plan needs a data root: skips without the kit
    for args, msg in ((["--generators", "stylegan"], "valid: mtf"), (["--losses", "hinge"], "valid: softmax"),
                      (["--set", "nope=1"], "not a study setting"), (["--only", "zzz*", "--dry-run"], "matches no")):
        r = _reproduce(tmp_path / "x", *args, timeout=60)
        assert r.returncode != 0 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


@pytest.mark.slow
def test_killed_smoke_study_resumes(kit, tmp_path):
    out = tmp_path / "smoke"
    env = {**os.environ, "MFRBENCH_CACHE": str(tmp_path / "cache")}
    p = subprocess.Popen([*MFRBENCH, "reproduce", "--profile", "smoke", "--out", str(out)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    deadline = time.time() + 900
    while time.time() < deadline and not list(out.glob("stages/gan-mfgan-*/stage.json")):
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    killed = next(out.glob("stages/gan-mfgan-*"))
    assert json.loads((killed / "stage.json").read_text())["status"] == "running"
    r = _reproduce(out)
    assert r.returncode == 0, r.stderr[-2000:]
    ran = _ran(r.stdout)
    assert "faces" not in ran and "gan-mfgan" in ran
    assert json.loads((killed / "stage.json").read_text())["attempt"] == 2


def test_stage_table_gives_the_clock_span_beside_the_sum_of_stage_times():
    """With --jobs 2 two stages overlap: the clock saw 1m40s of a study whose stages add up to 2m30s."""
    from mfrbench.cli.study import stages_markdown

    def row(name, secs, start, end):
        return {"stage": name, "kind": "k", "status": "done", "seconds": secs, "attempt": 1, "reason": "",
                "started": f"2026-12-03T10:{start}", "finished": f"2026-12-03T10:{end}"}

    md = stages_markdown([row("a", 60, "00:00", "01:00"), row("b", 90, "00:10", "01:40")])
    assert "| **all** | 2 | **2m30s** | |" in md and "finish: **1m40s**" in md


def test_every_stage_runs_with_the_threads_option_whatever_jobs_is(kit, tmp_path, monkeypatch):
    """Numbers must not depend on --jobs: the process's torch threads are --threads before any stage runs."""
    import torch
    from click.testing import CliRunner

    from mfrbench.cli import cli
    from mfrbench.stages import Graph

    monkeypatch.setenv("MFRBENCH_CACHE", str(tmp_path / "cache"))
    seen, before = [], torch.get_num_threads()
    monkeypatch.setattr(Graph, "run", lambda self, *a, **k: seen.append(torch.get_num_threads()))
    try:
        for threads in ("1", "2"):
            res = CliRunner().invoke(cli, ["reproduce", "--profile", "smoke", "--out", str(tmp_path / "s"),
                                           "--root", str(kit), "--threads", threads, "--only", "faces"])
            assert res.exit_code == 0, res.output
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2]


def test_a_gan_stage_is_keyed_on_the_config_its_profile_resolves(monkeypatch):
    """A profile is a name for settings in code: changing what it resolves to must rerun the GAN stage.

    (The key was the profile's name: MFGAN's cpu cycle weight changed and the stage stayed cached.)"""
    from mfrbench.cli.study import _gan_config_hash
    from mfrbench.generators.mfgan import MFGAN

    before = _gan_config_hash("mfgan", "cpu")
    assert before == _gan_config_hash("mfgan", "cpu")                        # stable
    assert before != _gan_config_hash("mfgan-no-cor", "cpu") != _gan_config_hash("cyclegan", "cpu")
    monkeypatch.setattr(MFGAN, "profile_model", {"cpu": {"cycle_drawn_weight": 0.5}})
    assert _gan_config_hash("mfgan", "cpu") != before
