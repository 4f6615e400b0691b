"""The stage graph behind ``mfrbench reproduce``: keys, caching, a changed option, failures, skips, kill + resume.

These graphs use small Python stages (no data, no torch), so every rule of the engine is pinned in
well under a second; tests/test_reproduce.py runs the real study's smoke profile on the kit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mfrbench.errors import MfrbenchError
from mfrbench.stages import Graph, Stage, StageSkipped, fingerprint, load_rates, read_state


def _graph(tmp_path: Path, calls: list[str], *, scale: int = 2, fail: str = "", data: Path | None = None,
           missing: str | None = None) -> Graph:
    """a -> b -> d and a -> c -> d, plus report (soft on b, c, d) and x (independent)."""
    def make(name: str):
        def run(ctx):
            calls.append(name)
            if name == fail:
                raise ValueError(f"{name} broke")
            if name == "c" and missing:
                raise StageSkipped(missing)
            got = {p: json.loads((p / "out.json").read_text()) for p in set(ctx.deps.values())  # roles alias
                   if (p / "out.json").is_file()}
            value = sum(v["value"] for v in got.values()) + ctx.stage.params.get("scale", 1)
            (ctx.out / "out.json").write_text(json.dumps({"value": value}))
            return {"value": value, "resume": ctx.resume}
        return run

    inputs = (str(data),) if data else ()
    stages = [
        Stage("a", make("a"), {"scale": scale}, inputs=inputs, kind="t:a"),
        Stage("b", make("b"), {}, roles={"up": "a"}, kind="t:b"),
        Stage("c", make("c"), {"k": 1}, deps=("a",), kind="t:c"),
        Stage("d", make("d"), {}, deps=("b", "c"), kind="t:d"),
        Stage("x", make("x"), {}, kind="t:x"),
        Stage("report", make("report"), {}, soft_deps=("b", "c", "d"), kind="t:r"),
    ]
    return Graph(stages, tmp_path / "study", default_rates={"t:a": 3.0})


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MFRBENCH_CACHE", str(tmp_path / "cache"))


def test_second_run_does_nothing_and_a_changed_option_reruns_only_its_dependants(tmp_path):
    calls: list[str] = []
    g = _graph(tmp_path, calls)
    assert [it.status for it in g.plan()] == ["todo"] * 6
    status = g.run(echo=lambda s: None, progress=False)
    assert set(status.values()) == {"done"} and sorted(calls) == ["a", "b", "c", "d", "report", "x"]
    assert json.loads((g.folder("d") / "out.json").read_text())["value"] == (2 + 1) + (2 + 1) + 1

    calls.clear()
    g = _graph(tmp_path, calls)
    assert {it.status for it in g.plan()} == {"cached"}
    g.run(echo=lambda s: None, progress=False)
    assert calls == []

    calls.clear()
    g2 = _graph(tmp_path, calls, scale=5)  # a's option: a, b, c, d and the report rerun; x stays cached
    g2.run(echo=lambda s: None, progress=False)
    assert sorted(calls) == ["a", "b", "c", "d", "report"]
    assert g2.folder("x") == g.folder("x") and g2.folder("a") != g.folder("a")
    assert (g.folder("a") / "out.json").is_file()  # content-addressed: the old result is still there

    calls.clear()
    _graph(tmp_path, calls, scale=2).run(echo=lambda s: None, progress=False)  # switching back finds it
    assert calls == []


def test_an_input_file_change_changes_the_key(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("one")
    k1 = _graph(tmp_path, [], data=data).keys["d"]
    (data / "g.txt").write_text("two")
    import mfrbench.stages as st

    st._FP_CACHE.clear()
    assert _graph(tmp_path, [], data=data).keys["d"] != k1
    assert fingerprint(tmp_path / "nowhere") != fingerprint(data)


def test_copied_data_keeps_every_key_and_one_changed_byte_changes_it(tmp_path):
    """Data copied or re-provisioned with fresh mtimes and inodes is the same data (a stat key lost a whole study)."""
    import shutil

    import mfrbench.stages as st

    pristine = tmp_path / "pristine"
    (pristine / "sub").mkdir(parents=True)
    (pristine / "f.txt").write_text("one")
    (pristine / "sub" / "g.bin").write_bytes(b"\x00" * 1000)
    data = tmp_path / "data"
    shutil.copytree(pristine, data, copy_function=shutil.copy)  # copy: contents only, fresh mtimes
    k1 = _graph(tmp_path, [], data=data).keys["d"]
    shutil.rmtree(data)
    shutil.copytree(pristine, data, copy_function=shutil.copy)
    os.utime(data / "f.txt", ns=(1, 1))
    st._FP_CACHE.clear()
    assert _graph(tmp_path, [], data=data).keys["d"] == k1
    raw = bytearray((data / "sub" / "g.bin").read_bytes())
    raw[500] = 1
    (data / "sub" / "g.bin").write_bytes(bytes(raw))  # same size, same path: only the content differs
    st._FP_CACHE.clear()
    assert _graph(tmp_path, [], data=data).keys["d"] != k1


def test_a_failed_stage_is_named_with_its_log_and_rerun_command_and_the_rest_goes_on(tmp_path):
    calls, lines = [], []
    g = _graph(tmp_path, calls, fail="b")
    with pytest.raises(MfrbenchError, match="1 stage\\(s\\) failed: b"):
        g.run(echo=lines.append, progress=False)
    text = "\n".join(lines)
    assert "b FAILED: b broke" in text and str(g.log_path("b")) in text and "--only b" in text
    assert "d: not run, needs b (failed)" in text
    assert "c" in calls and "x" in calls and "report" in calls  # independent work and the soft report still ran
    assert "ValueError: b broke" in g.log_path("b").read_text()
    assert read_state(g.folder("b"))["status"] == "failed"
    calls.clear()
    _graph(tmp_path, calls).run(echo=lambda s: None, progress=False)  # fixed: b resumes, then d; report reruns
    assert sorted(calls) == ["b", "d", "report"]


def test_missing_data_is_a_recorded_skip_and_blocks_only_what_needs_it(tmp_path):
    calls, lines = [], []
    g = _graph(tmp_path, calls, missing="no MFR2 here")
    g.run(echo=lines.append, progress=False)
    assert read_state(g.folder("c"))["status"] == "skipped"
    assert "c: skipped" in "\n".join(lines) and "no MFR2 here" in "\n".join(lines)
    plan = {it.name: it for it in _graph(tmp_path, [], missing="no MFR2 here").plan()}
    assert plan["c"].status == "skipped" and plan["d"].status == "blocked" and plan["report"].status == "done" or \
        plan["report"].status == "cached"


def test_requires_skips_at_plan_time(tmp_path):
    g = Graph([Stage("a", lambda ctx: {}, requires=lambda: "dataset 'mfr2' not found"),
               Stage("b", lambda ctx: {}, deps=("a",))], tmp_path)
    plan = {it.name: it for it in g.plan()}
    assert plan["a"].status == "skipped" and "mfr2" in plan["a"].reason
    assert plan["b"].status == "blocked"
    assert "skipped" in g.describe(list(plan.values()))


def test_only_runs_the_named_stages_and_what_they_need(tmp_path):
    calls = []
    g = _graph(tmp_path, calls)
    g.run(["c"], echo=lambda s: None, progress=False)
    assert sorted(calls) == ["a", "c"]
    with pytest.raises(MfrbenchError, match="matches no stage"):
        g.select(["nope*"])


def test_rates_are_learned_from_finished_stages(tmp_path):
    g = _graph(tmp_path, [])
    assert g.plan()[0].estimate_s == 3.0  # the default rate of kind t:a
    g.run(echo=lambda s: None, progress=False)
    assert "t:a" in load_rates()


def test_cycles_and_unknown_dependencies_are_one_line_errors(tmp_path):
    with pytest.raises(MfrbenchError, match="cycle"):
        Graph([Stage("a", lambda c: {}, deps=("b",)), Stage("b", lambda c: {}, deps=("a",))], tmp_path)
    with pytest.raises(MfrbenchError, match="unknown stage 'z'"):
        Graph([Stage("a", lambda c: {}, deps=("z",))], tmp_path)


KILL_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from mfrbench.stages import Graph, Stage

    def slow(ctx):
        # a stage with its own checkpoint: it counts to 30, one step per 0.1 s, and resumes from the count
        ck = ctx.out / "count.json"
        n = json.loads(ck.read_text())["n"] if ck.is_file() else 0
        starts = (json.loads(ck.read_text())["starts"] if ck.is_file() else 0) + 1
        while n < 30:
            n += 1
            ck.write_text(json.dumps({"n": n, "starts": starts}))
            time.sleep(0.1)
        return {"n": n, "resumed": ctx.resume, "starts": starts}

    g = Graph([Stage("first", lambda ctx: {"ok": 1}), Stage("slow", slow, deps=("first",))], sys.argv[1])
    g.run(echo=print, progress=False)
""")


def test_a_killed_run_resumes_the_stage_it_was_in(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "study"
    env = {**os.environ, "MFRBENCH_CACHE": str(tmp_path / "cache")}
    p = subprocess.Popen([sys.executable, str(script), str(out)], env=env, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        cks = list(out.glob("stages/slow-*/count.json"))
        if cks and json.loads(cks[0].read_text() or '{"n": 0}')["n"] >= 5:
            break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    slow = next(out.glob("stages/slow-*"))
    assert read_state(slow)["status"] == "running"
    r = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "first" not in r.stdout.split("to run")[1].split("slow")[0]  # first was cached
    state = read_state(slow)
    assert state["status"] == "done" and state["attempt"] == 2
    assert state["summary"] == {"n": 30, "resumed": True, "starts": 2}


def test_two_runs_on_one_study_never_run_a_stage_twice(tmp_path):
    """A second ``reproduce`` on the same folder (to use an idle core) waits for a stage the first is in and
    takes it as done: the slow stage counts to 30 once, in one start, and both processes succeed."""
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "study"
    env = {**os.environ, "MFRBENCH_CACHE": str(tmp_path / "cache")}
    a = subprocess.Popen([sys.executable, str(script), str(out)], env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("stages/slow-*/count.json")):
        time.sleep(0.05)
    b = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True, timeout=60)
    assert a.wait(timeout=60) == 0 and b.returncode == 0, b.stderr
    assert "slow: done by another run" in b.stdout
    state = read_state(next(out.glob("stages/slow-*")))
    assert state["attempt"] == 1 and state["summary"] == {"n": 30, "resumed": False, "starts": 1}


STEAL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from mfrbench import stages
    from mfrbench.stages import Graph, Stage

    counted = stages._Progress.finish
    def finish(self, it):  # what this process's progress bar counts
        print("COUNTED", it.name)
        counted(self, it)
    stages._Progress.finish = finish

    def work(name, fail=False):
        def run(ctx):
            time.sleep(1.5)
            if fail:
                raise RuntimeError(name + " broke")
            return {"pid": os.getpid()}
        return run

    fail = sys.argv[2] == "fail"
    g = Graph([Stage("x", work("x")), Stage("y", work("y", fail)), Stage("z", work("z"), deps=("x", "y"))],
              sys.argv[1])
    g.poll_s = 0.1
    try:
        g.run(echo=print, progress=False)
    except Exception as e:
        print("ERROR", e)
""")


@pytest.mark.parametrize("mode", ["ok", "fail"])
def test_two_processes_share_the_work_and_never_run_a_stage_twice(tmp_path, mode):
    """``--jobs 2``: two processes started together take one independent stage each (work stealing), the
    stage that needs both runs once; a stage that fails in one process is not rerun by the other."""
    script = tmp_path / "run.py"
    script.write_text(STEAL_SCRIPT)
    out = tmp_path / "study"
    env = {**os.environ, "MFRBENCH_CACHE": str(tmp_path / "cache")}
    ps = [subprocess.Popen([sys.executable, str(script), str(out), mode], env=env, stdout=subprocess.PIPE, text=True)
          for _ in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in ps]
    x, y = (read_state(next(out.glob(f"stages/{n}-*"))) for n in "xy")
    z = read_state(next(out.glob("stages/z-*"), out / "none"))
    assert x["attempt"] == 1 and y["attempt"] == 1
    if mode == "ok":
        assert x["summary"]["pid"] != y["summary"]["pid"]  # the two independent stages ran side by side
        assert z["attempt"] == 1 and z["status"] == "done"
        assert sum(o.count("done by another run") for o in outs) >= 1
        for o in outs:  # each process's bar reaches the end, counting the other's stages too
            assert sorted(re.findall(r"^COUNTED (\w)", o, flags=re.M)) == ["x", "y", "z"], o
    else:
        assert y["status"] == "failed" and not z  # z never started, in either process
        assert sum("y FAILED (in another run)" in o for o in outs) == 1 and all("ERROR" in o for o in outs)
