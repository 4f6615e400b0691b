"""The shared harness of the throughput benchmarks: each configuration runs in a fresh child
process (clean peak-RSS readings, no warm caches), started by re-running the script with
``--child MODE --n N``; the child prints one JSON line."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Callable


def parse(n_default: int = 500, repeats_default: int = 3, quick: tuple[int, int] = (60, 1)):
    """Parse ``--n --repeats --quick --child``; return (args, n, repeats)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=n_default)
    ap.add_argument("--repeats", type=int, default=repeats_default)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", default=None)
    a = ap.parse_args()
    n, reps = quick if a.quick else (a.n, a.repeats)
    return a, n, reps


def child_main(a, child: Callable[[str, int], dict]) -> bool:
    """In a child process: run ``child(mode, n)``, print its JSON line, return True."""
    if not a.child:
        return False
    print(json.dumps(child(a.child, a.n)))
    return True


def run_child(script: str, mode: str, n: int) -> dict:
    """Run ``script`` as a child for ``mode`` on ``n`` inputs (single-threaded BLAS/OpenMP)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, script, "--child", mode, "--n", str(n)], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def eval_protocol_kwargs(benchmark: str) -> dict:
    """What ``mfrbench eval`` passes for ``benchmark`` by default (lfw-masked: mtf on one side)."""
    from mfrbench.cli.evaluate import protocol_kwargs

    return protocol_kwargs(benchmark)
