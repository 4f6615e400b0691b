"""``reproduce --jobs N``: N processes share one study folder, one per core.

The stage graph already lets processes share a folder (each stage runs under its own lock, a process
passes over a held stage and takes the next whose needs are met: :mod:`mfrbench.stages`). This module
only starts the N - 1 helpers with the same options, gives each its share of the cores (PyTorch's
intra-op threads, through ``OMP_NUM_THREADS``: a small network on 2 cores runs faster as two
1-thread processes than as one 2-thread one), and waits for them. Each helper writes its own log
(``OUT/logs/job-<k>.log``); only the first process draws the progress bar and publishes the report.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: set in a helper's environment: its number (1..N-1). A helper neither starts helpers nor publishes.
JOB_ENV = "MFRBENCH_REPRODUCE_JOB"


def is_helper() -> bool:
    return bool(os.environ.get(JOB_ENV))


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def share_threads(jobs: int) -> None:
    """This process's share of the cores, unless the user chose (``OMP_NUM_THREADS`` already set)."""
    if jobs > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_job(jobs)))


def start_helpers(jobs: int, args: list[str], out: Path) -> list[tuple[subprocess.Popen, Path]]:
    """Start ``jobs - 1`` ``mfrbench reproduce`` helpers with ``args`` (the parent's options, without
    ``--jobs``/``--publish``); they share the parent's process group, so Ctrl-C stops them all."""
    procs = []
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for k in range(1, jobs):
        env = {**os.environ, JOB_ENV: str(k), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                                                                  str(threads_per_job(jobs)))}
        log = logs / f"job-{k}.log"
        with open(log, "a") as f:
            p = subprocess.Popen([sys.executable, "-c", "from mfrbench.cli import main; main()", *args],
                                 stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        procs.append((p, log))
    return procs


def wait_helpers(procs: list[tuple[subprocess.Popen, Path]], *, stop: bool) -> list[str]:
    """Wait for the helpers (``stop``: terminate them first: the parent was interrupted; their stages
    resume next time). Returns one line per helper that ended badly, naming its log."""
    bad = []
    for p, log in procs:
        if stop and p.poll() is None:
            p.terminate()
        rc = p.wait()
        if rc and not stop:
            bad.append(f"helper job {log.stem} exited with {rc}; its log: {log}")
    return bad
