"""A study as a graph of stages, each keyed by the content hash of its inputs and config.

``mfrbench reproduce`` runs some forty steps (align, Seg, Det, six GANs, generations, recognizers,
evaluations, quality, report). A user who changes one option, kills a run or comes back a day later
must get exactly the work that is not done yet, and nothing else. This is what make, DVC and
Snakemake do, reduced to what the study needs:

* a stage's **key** is the sha256 of its name, its parameters (JSON), the keys of the stages it
  depends on, and a fingerprint of the external files it reads: the relative path and the
  *content* digest of every file, as DVC does. A stat fingerprint (size, mtime) broke every key
  when the same data was copied or re-provisioned with fresh mtimes (it happened to this
  project's own study), so contents are hashed once and remembered by (path, size, mtime, inode)
  in ``$MFRBENCH_CACHE/file-digests.sqlite`` (DVC's state database does the same), and
  ``--dry-run`` stays fast. A changed option changes the key of its stage and of everything
  downstream, and only that;
* a stage writes into ``OUT/stages/<name>-<key10>/``: folders are content-addressed, so switching an
  option back finds the old result, and no stage ever deletes another's output;
* ``stage.json`` in that folder says ``running`` (a killed stage: its function is called again with
  ``ctx.resume`` and continues from its own checkpoint), ``done`` (cached) or ``failed``;
* a stage whose data is missing (``Stage.requires`` returns a reason) is ``skipped`` with that
  reason at plan time, and so is everything that needs it; ``soft_deps`` (a report) run with what
  exists and list the rest;
* two ``reproduce`` processes may share one study folder (one runs ``--only 'fr-*'`` on the core
  the other leaves idle, or ``reproduce --jobs 2`` starts them): a stage is run under an exclusive
  lock on ``<folder>/.lock``; a process passes over a stage another one holds and takes the next
  whose needs are met (work stealing, as Snakemake's cluster mode shares a DAG through its lock
  files), and a stage another process finished is taken as done, never run twice;
* estimates are seconds per unit of work, measured on this machine by earlier stages of the same
  kind (``$MFRBENCH_CACHE/stage-rates.json``), else the study's defaults.

The core never imports the plugins: a study (stage functions calling generators and recognizers)
is built in the CLI layer (:mod:`mfrbench.cli.study`) and handed to :class:`Graph`.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import stat
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from mfrbench.errors import MfrbenchError

log = logging.getLogger(__name__)

STATE_FILE = "stage.json"


class StageSkipped(Exception):
    """Raised by a stage function when its data turns out to be missing: a recorded skip, not a failure."""


@dataclass
class Stage:
    """One node of the study.

    ``run(ctx)`` does the work into ``ctx.out`` and returns a small JSON-able summary. ``params``
    are what defines the output (they join the key); ``inputs`` are external files or folders
    (fingerprinted); ``kind`` and ``units`` give the estimate (seconds per unit of that kind).
    """

    name: str
    run: Callable[["StageContext"], dict | None]
    params: dict = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    soft_deps: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    kind: str = "misc"
    units: float = 1.0
    requires: Callable[[], str | None] | None = None
    note: str = ""
    #: role -> stage name: the stage function finds a dependency's folder as ``ctx.deps[role]`` (its
    #: ``deps`` are these stages plus any listed directly)
    roles: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.deps = tuple(dict.fromkeys((*self.roles.values(), *self.deps)))


@dataclass
class StageContext:
    stage: Stage
    out: Path
    deps: dict[str, Path]
    summaries: dict[str, dict]
    resume: bool
    log_path: Path


@dataclass
class PlanItem:
    name: str
    key: str
    folder: Path
    status: str          # cached | todo | resume | skipped | blocked
    reason: str = ""
    estimate_s: float = 0.0


# --------------------------------------------------------------------------- fingerprints and keys
_FP_CACHE: dict[str, str] = {}


def digests_path() -> Path:
    return Path(os.environ.get("MFRBENCH_CACHE", Path.home() / ".cache" / "mfrbench")) / "file-digests.sqlite"


class _DigestCache:
    """Content digests remembered by (path, size, mtime_ns, inode): a file is read again only when one changes.

    SQLite, so two ``reproduce`` processes sharing a cache never corrupt it; a cache that cannot be
    opened (read-only home) only costs re-hashing."""

    def __init__(self):
        import sqlite3

        self.db = None
        try:
            path = digests_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), timeout=30)
            self.db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, "
                            "mtime_ns INTEGER, ino INTEGER, digest TEXT)")
        except (OSError, sqlite3.Error):
            self.db = None
        self.new: list[tuple] = []

    def digest(self, path: str, st: os.stat_result) -> str:
        if self.db is not None:
            row = self.db.execute("SELECT size, mtime_ns, ino, digest FROM files WHERE path = ?", (path,)).fetchone()
            if row and tuple(row[:3]) == (st.st_size, st.st_mtime_ns, st.st_ino):
                return row[3]
        with open(path, "rb") as f:
            d = hashlib.file_digest(f, "blake2b").hexdigest()[:32]
        self.new.append((path, st.st_size, st.st_mtime_ns, st.st_ino, d))
        return d

    def close(self) -> None:
        if self.db is None:
            return
        import sqlite3

        try:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", self.new)
        except sqlite3.Error:
            pass
        self.db.close()


def fingerprint(path: str | os.PathLike) -> str:
    """A content fingerprint of a file or folder tree: sorted (relative path, content digest) of every file.

    Copying the data (new mtimes, new inodes) keeps every key; changing one byte of one file
    changes it. Unreadable files count as missing, so the stage that reads them reports why."""
    p = Path(path)
    ck = str(p.resolve()) if p.exists() else str(p)
    if ck in _FP_CACHE:
        return _FP_CACHE[ck]
    h = hashlib.sha256()
    cache = _DigestCache()
    try:
        if not p.exists():
            h.update(b"missing")
        elif p.is_file():
            h.update(cache.digest(ck, p.stat()).encode())
        else:
            for dirpath, dirnames, filenames in os.walk(p, followlinks=False):
                dirnames.sort()
                rel, real = os.path.relpath(dirpath, p), os.path.realpath(dirpath)  # once per folder, not per file
                for f in sorted(filenames):
                    full = os.path.join(real, f)
                    try:
                        st = os.stat(full)
                        d = cache.digest(full, st) if stat.S_ISREG(st.st_mode) else "not-a-file"
                    except OSError:
                        d = "unreadable"
                    h.update(f"{rel}/{f}\0{d}\n".encode("utf-8", "surrogateescape"))
    finally:
        cache.close()
    _FP_CACHE[ck] = h.hexdigest()[:16]
    return _FP_CACHE[ck]


def stage_key(stage: Stage, dep_keys: dict[str, str]) -> str:
    body = {"name": stage.name, "params": stage.params, "deps": dep_keys,
            "inputs": {str(p): fingerprint(p) for p in stage.inputs}}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def read_state(folder: Path) -> dict:
    try:
        return json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, obj: Any) -> None:
    from mfrbench.imageio import atomic_write_bytes  # light: planning must not import torch (--dry-run < 2 s)

    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def _write_state(folder: Path, state: dict) -> None:
    _write_json(folder / STATE_FILE, state)


# --------------------------------------------------------------------------- measured rates
def rates_path() -> Path:
    return Path(os.environ.get("MFRBENCH_CACHE", Path.home() / ".cache" / "mfrbench")) / "stage-rates.json"


def load_rates(path: Path | None = None) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in json.loads((path or rates_path()).read_text()).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def record_rate(kind: str, seconds: float, units: float, path: Path | None = None) -> None:
    """Blend a finished stage's seconds per unit into this machine's rate for its kind (half old, half new)."""
    if units <= 0 or seconds <= 0:
        return
    path = path or rates_path()
    rates = load_rates(path)
    new = seconds / units
    rates[kind] = new if kind not in rates else 0.5 * rates[kind] + 0.5 * new
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, rates)


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


# --------------------------------------------------------------------------- the graph
class Graph:
    """Stages in dependency order, their keys, plan and run (see the module docstring)."""

    poll_s = 2.0  #: how often a process whose runnable stages are all held elsewhere looks again

    def __init__(self, stages: Iterable[Stage], out: str | os.PathLike, *,
                 default_rates: dict[str, float] | None = None, rerun_hint: Callable[[str], str] | None = None,
                 where: str = "of work on this machine") -> None:
        self.stages = {s.name: s for s in stages}
        self.where = where  # what the estimates mean (a GPU profile's are GPU-hours)
        self.out = Path(out)
        self.default_rates = dict(default_rates or {})
        self.rerun_hint = rerun_hint or (lambda name: f"--only {name}")
        self.order = self._toposort()
        self.keys: dict[str, str] = {}
        for name in self.order:
            s = self.stages[name]
            self.keys[name] = stage_key(s, {d: self.keys[d] for d in (*s.deps, *s.soft_deps) if d in self.keys})

    def _toposort(self) -> list[str]:
        order, state = [], {}

        def visit(n: str, path: tuple[str, ...]) -> None:
            if state.get(n) == "done":
                return
            if state.get(n) == "open":
                raise MfrbenchError(f"stage cycle: {' -> '.join((*path, n))}")
            if n not in self.stages:
                raise MfrbenchError(f"stage {path[-1]!r} depends on unknown stage {n!r}")
            state[n] = "open"
            for d in (*self.stages[n].deps, *self.stages[n].soft_deps):
                visit(d, (*path, n))
            state[n] = "done"
            order.append(n)

        for n in self.stages:
            visit(n, ())
        return order

    def folder(self, name: str) -> Path:
        return self.out / "stages" / f"{name}-{self.keys[name][:10]}"

    def estimate(self, name: str, rates: dict[str, float]) -> float:
        s = self.stages[name]
        return rates.get(s.kind, self.default_rates.get(s.kind, 1.0)) * s.units

    def select(self, only: Iterable[str] | None) -> set[str]:
        """The stages ``--only`` names (glob patterns) plus what they need; all stages without ``only``."""
        if not only:
            return set(self.order)
        picked = set()
        for pat in only:
            hit = [n for n in self.order if fnmatch.fnmatchcase(n, pat)]
            if not hit:
                raise MfrbenchError(f"--only {pat!r} matches no stage; stages: {', '.join(self.order)}")
            picked.update(hit)
        todo = list(picked)
        while todo:
            s = self.stages[todo.pop()]
            for d in s.deps + s.soft_deps:
                if d not in picked:
                    picked.add(d)
                    todo.append(d)
        return picked

    def plan(self, only: Iterable[str] | None = None) -> list[PlanItem]:
        rates = {**self.default_rates, **load_rates()}
        chosen = self.select(only)
        items: dict[str, PlanItem] = {}
        for name in self.order:
            if name not in chosen:
                continue
            s, folder = self.stages[name], self.folder(name)
            st = read_state(folder)
            item = PlanItem(name, self.keys[name], folder, "todo")
            bad = [d for d in s.deps if items[d].status in ("skipped", "blocked")]
            reason = s.requires() if s.requires else None
            if reason:
                item.status, item.reason = "skipped", reason
            elif bad:
                item.status, item.reason = "blocked", f"needs {bad[0]} ({items[bad[0]].status}: {items[bad[0]].reason})"
            elif st.get("status") == "done" and self._soft_changed(s, st, items):
                item.status, item.reason = "todo", "its optional inputs changed"
            elif st.get("status") == "done":
                item.status = "cached"
            elif st.get("status") == "skipped":
                item.status, item.reason = "skipped", st.get("reason", "")
            elif st:
                item.status = "resume"
            if item.status in ("todo", "resume"):
                item.estimate_s = self.estimate(name, rates)
            items[name] = item
        return list(items.values())

    @staticmethod
    def _soft_changed(s: Stage, st: dict, items: dict[str, PlanItem]) -> bool:
        """A stage with optional inputs (the report) reruns when the set of them it will see differs from the
        set it saw: a stage that failed before and is fixed now, or one whose data appeared."""
        if not s.soft_deps:
            return False
        now = {d for d in s.soft_deps if d in items and items[d].status in ("cached", "todo", "resume")}
        return now != set(st.get("soft_done", ())) or any(items[d].status != "cached" for d in now)

    def describe(self, plan: list[PlanItem]) -> str:
        """The plan as text: one line per stage, then totals (what ``--dry-run`` prints)."""
        lines = [f"{'stage':<34} {'status':<8} {'estimate':>9}  folder / reason"]
        for it in plan:
            est = fmt_seconds(it.estimate_s) if it.status in ("todo", "resume") else "-"
            where = it.reason if it.reason else os.path.relpath(it.folder, self.out)
            lines.append(f"{it.name:<34} {it.status:<8} {est:>9}  {where}")
        kinds = ("cached", "todo", "resume", "skipped", "blocked")
        counts = {k: sum(1 for it in plan if it.status == k) for k in kinds}
        total = sum(it.estimate_s for it in plan)
        lines.append(f"{len(plan)} stages: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
                     + f"; estimated {fmt_seconds(total)} {self.where}")
        return "\n".join(lines)

    # ----------------------------------------------------------------------- running
    def run(self, only: Iterable[str] | None = None, *, echo: Callable[[str], None] = print,
            progress: bool = True) -> dict:
        """Run every stage of the plan that is not done; return ``{stage: status}``.

        A failed stage is recorded (``stage.json``, its log) and its dependants are not run; the
        others go on. Raises :class:`MfrbenchError` at the end when any stage failed.
        """
        plan = self.plan(only)
        work = [it for it in plan if it.status in ("todo", "resume")]
        status = {it.name: it.status for it in plan}
        reasons = {it.name: it.reason for it in plan}
        for it in plan:
            if it.status == "skipped":
                echo(f"skip {it.name}: {it.reason}")
        echo(f"{len(plan)} stages, {len(work)} to run (estimated {fmt_seconds(sum(i.estimate_s for i in work))}), "
             f"{sum(1 for i in plan if i.status == 'cached')} cached; stage folders in {self.out / 'stages'}")
        view = _Progress(work, enabled=progress)
        echo = view.writer(echo)
        failures: list[str] = []
        self._t_start = time.time()
        try:
            self._run_pending(work, status, reasons, view, echo, failures)
        finally:
            view.close()
        if failures:
            raise MfrbenchError(f"{len(failures)} stage(s) failed: {', '.join(failures)} (logs in {self.out / 'logs'})")
        return status

    def _run_pending(self, work: list[PlanItem], status: dict, reasons: dict, view: "_Progress",
                     echo: Callable[[str], None], failures: list[str]) -> None:
        """Work-stealing over the plan: take the first stage in plan order whose needs are met and whose lock is
        free. A stage another ``reproduce`` process is running is passed over, and its dependants wait;
        so two or more processes on one study folder (``--jobs``) share the work, each stage run once."""
        pending, n, total = list(work), 0, len(work)
        while pending:
            names = {p.name for p in pending}
            for it in pending:
                s = self.stages[it.name]
                blocker = next((d for d in s.deps if status.get(d) in ("failed", "blocked", "skipped")), None)
                if blocker:
                    status[it.name] = "blocked"
                    reasons[it.name] = f"needs {blocker} ({status.get(blocker)})"
                    view.finish(it)
                    n += 1
                    echo(f"[{n}/{total}] {it.name}: not run, {reasons[it.name]}")
                    break
                waiting = [d for d in (*s.deps, *s.soft_deps) if d in names]
                if waiting:
                    continue  # a need still to run here, or running in another process
                result = self._try_one(it, status, n + 1, view)
                if result is None:
                    continue  # another process holds it
                n += 1
                self._say_result(it, result, n, total, status, reasons, echo, failures)
                break
            else:
                time.sleep(self.poll_s)  # every runnable stage is held by another process: wait for one
                continue
            pending.remove(it)

    def _try_one(self, it: PlanItem, status: dict, n: int, view: "_Progress") -> tuple[str, str] | None:
        """Run ``it`` if no other process holds it: ``(status, error)``, or ``None`` when it is held."""
        it.folder.mkdir(parents=True, exist_ok=True)
        with open(it.folder / ".lock", "a") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            prev = read_state(it.folder)
            if prev.get("key") == it.key and not self.stages[it.name].soft_deps:
                done = None
                if prev.get("status") in ("done", "skipped"):
                    done = ("cached" if prev["status"] == "done" else "skipped"), prev.get("reason", "")
                elif prev.get("status") == "failed" and float(prev.get("t_started", 0)) > self._t_start:
                    done = "failed-elsewhere", prev.get("error", "")  # failed in another process of this run
                if done is not None:
                    view.finish(it)  # another process's work counts on this bar too, or it ends short of 100 %
                    return done
            view.start(n, it)
            try:
                return self._run_locked(it, status, prev)
            finally:
                view.finish(it)

    def _say_result(self, it: PlanItem, res: tuple[str, str], n: int, total: int, status: dict, reasons: dict,
                    echo: Callable[[str], None], failures: list[str]) -> None:
        result, err = res
        status[it.name] = "failed" if result == "failed-elsewhere" else result
        if result in ("failed", "failed-elsewhere"):
            failures.append(it.name)
            by = " (in another run)" if result == "failed-elsewhere" else ""
            echo(f"[{n}/{total}] {it.name} FAILED{by}: {err}\n    log: {self.log_path(it.name)}\n"
                 f"    rerun it alone: {self.rerun_hint(it.name)}")
        elif result == "cached":
            echo(f"[{n}/{total}] {it.name}: done by another run")
        else:
            st = read_state(it.folder)
            extra = f" ({reasons.get(it.name) or st.get('reason', '')})" if result == "skipped" else ""
            echo(f"[{n}/{total}] {it.name}: {result} in {fmt_seconds(st.get('seconds', 0.0))}{extra}")

    def ledger(self, only: Iterable[str] | None = None) -> list[dict]:
        """One row per planned stage with what its ``stage.json`` says (status, wall seconds, attempt, times):
        the study's per-stage record, written next to its report. ``seconds`` is the last attempt's."""
        rows = []
        for it in self.plan(only):
            st = read_state(it.folder) if it.status not in ("skipped", "blocked") else {}
            status = st.get("status", it.status)
            rows.append({"stage": it.name, "kind": self.stages[it.name].kind, "status": status,
                         "seconds": st.get("seconds"), "attempt": st.get("attempt"), "started": st.get("started"),
                         "finished": st.get("finished"), "folder": os.path.relpath(it.folder, self.out),
                         "reason": it.reason or st.get("reason") or st.get("error") or ""})
        return rows

    def log_path(self, name: str) -> Path:
        return self.out / "logs" / f"{name}.log"

    def _run_locked(self, it: PlanItem, status: dict[str, str], prev: dict) -> tuple[str, str]:
        s = self.stages[it.name]
        state = {"name": s.name, "key": it.key, "params": s.params, "status": "running",
                 "deps": {d: str(self.folder(d)) for d in (*s.deps, *s.soft_deps)},
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "t_started": time.time(),
                 "attempt": int(prev.get("attempt", 0)) + 1}
        _write_state(it.folder, state)
        avail = [d for d in (*s.deps, *s.soft_deps) if status.get(d) in ("cached", "done")]
        state["soft_done"] = [d for d in s.soft_deps if d in avail]
        deps = {d: self.folder(d) for d in avail}
        deps.update({role: deps[name] for role, name in s.roles.items() if name in deps})
        ctx = StageContext(stage=s, out=it.folder, deps=deps,
                           summaries={d: read_state(self.folder(d)).get("summary", {}) for d in avail},
                           resume=bool(prev), log_path=self.log_path(it.name))
        t0 = time.perf_counter()
        try:
            with _stage_log(ctx.log_path):
                summary = s.run(ctx) or {}
        except StageSkipped as e:
            state.update(status="skipped", reason=str(e), seconds=time.perf_counter() - t0)
            _write_state(it.folder, state)
            return "skipped", str(e)
        except Exception as e:  # noqa: BLE001 - recorded, named with its log, and the run goes on
            state.update(status="failed", error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)
            _write_state(it.folder, state)
            with open(ctx.log_path, "a") as f:
                f.write(traceback.format_exc())
            return "failed", str(e).splitlines()[0] if str(e) else type(e).__name__
        secs = time.perf_counter() - t0
        state.update(status="done", seconds=round(secs, 2), summary=summary,
                     finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        _write_state(it.folder, state)
        if not prev:  # a resumed stage's time is only part of its work: it would bias the rate
            record_rate(s.kind, secs, s.units)
        return "done", ""


@contextlib.contextmanager
def _stage_log(path: Path):
    """Send logging, stdout and stderr of a stage to its log file; the terminal keeps the one progress view."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    with open(path, "a", buffering=1) as f:
        f.write(f"==== {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        old_level, old_handlers = root.level, root.handlers[:]
        root.handlers = [handler]  # the terminal's handler comes back after the stage
        root.setLevel(min(old_level, logging.INFO) if old_level else logging.INFO)
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield
        finally:
            root.handlers = old_handlers
            root.setLevel(old_level)


class _Progress:
    """One progress line across stages: stage n/N, its name, elapsed, and the whole study's ETA.

    The bar counts *estimated seconds* of work: a ticker advances it with the clock inside a stage
    (capped at that stage's estimate) and a finished stage jumps to its full share, so the rate, and
    with it tqdm's ETA, is how fast this machine does the estimated work.
    """

    def __init__(self, work: list[PlanItem], *, enabled: bool) -> None:
        self.bar = None
        self.total = sum(max(i.estimate_s, 1.0) for i in work)
        self.done = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._cur: tuple[PlanItem, float, str] | None = None
        self._n = len(work)
        if enabled and work:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=round(self.total), unit="est-s", file=sys.__stderr__, dynamic_ncols=True,
                            bar_format="{desc} |{bar}| {percentage:3.0f}% [{elapsed}<{remaining}]")
            threading.Thread(target=self._tick, daemon=True).start()

    def writer(self, echo: Callable[[str], None]) -> Callable[[str], None]:
        """``echo`` while no bar is shown; above the bar (which is redrawn below) while one is."""
        def say(msg: str) -> None:
            if self.bar is None:
                echo(msg)
            else:
                with self._lock:
                    self.bar.write(msg, file=sys.__stdout__)
        return say

    def start(self, n: int, it: PlanItem) -> None:
        with self._lock:
            self._cur = (it, time.perf_counter(), f"[{n}/{self._n}] {it.name}")
            if self.bar is not None:
                self.bar.set_description_str(self._cur[2], refresh=True)

    def _tick(self) -> None:
        while not self._stop.wait(2.0):
            with self._lock:
                if self.bar is None or self._cur is None:
                    continue
                it, t0, label = self._cur
                spent = time.perf_counter() - t0
                target = self.done + min(spent, 0.95 * max(it.estimate_s, 1.0))
                self.bar.set_description_str(f"{label} {fmt_seconds(spent)} (est {fmt_seconds(it.estimate_s)})",
                                             refresh=False)
                if round(target) > self.bar.n:
                    self.bar.update(round(target) - self.bar.n)
                self.bar.refresh()  # a stage past its estimate still shows the clock moving

    def finish(self, it: PlanItem) -> None:
        with self._lock:
            self.done += max(it.estimate_s, 1.0)
            self._cur = None
            if self.bar is not None and round(self.done) > self.bar.n:
                self.bar.update(round(self.done) - self.bar.n)

    def close(self) -> None:
        self._stop.set()
        if self.bar is not None:
            self.bar.close()
