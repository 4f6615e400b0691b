"""The Ray Data engine (``--engine ray``, ``pip install mfrbench[ray]``): the same per-image function on a Ray cluster.

:func:`map_records` is a drop-in for :func:`mfrbench.pipeline.map_records`: the records go through
``ray.data`` in windows of ``window`` records; each window is a ``map_batches`` over a pool of
``workers`` actors, each of which builds the stage's worker once (``factory(**factory_kwargs)``,
exactly as a local worker process does) and calls it on the local engine's chunks of ``chunk``
records (so a backend whose randomness is per batch sees the same batches). Rows come back
in input order (``preserve_order``), as JSON, and go into the same manifest writer, duplicate rule
and resume journal as a local run, so the output is byte-identical to ``--engine local``.

The cluster is the one ``ray.init()`` finds: ``RAY_ADDRESS`` (or ``ray start`` on this machine), else
a local one with this machine's cores. Every node needs mfrbench (and the data paths) installed the
same way. Within one window memory is bounded by the window; actors are started again for each
window, which costs a model load per window (seconds, against the window's minutes of work).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any, Callable, Iterable, Iterator

from mfrbench.datasets import FaceRecord
from mfrbench.errors import MfrbenchError

log = logging.getLogger(__name__)

#: Records per Ray Data execution (actors are started once per window).
WINDOW = 20_000


def _jsonable(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


class _RecordsWorker:
    """A Ray actor: the stage's worker, built once, applied to batches of JSON-encoded records."""

    def __init__(self, factory: Callable[..., Any], factory_kwargs: dict) -> None:
        import cv2

        cv2.setNumThreads(1)  # one actor per core, as the local pool does
        self.fn = factory(**factory_kwargs)
        import sys

        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from mfrbench.pipeline import _call_chunk

        out = []
        for item in batch["chunk"]:  # each item is one chunk of the local engine: the same generator batches
            recs = [FaceRecord(**d) for d in json.loads(item)]
            out.append(json.dumps(_call_chunk(self.fn, recs), default=_jsonable))
        return {"rows": np.array(out, dtype=object)}


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the engine needs Ray Data, not only Ray core
    except ImportError as err:
        raise MfrbenchError("--engine ray needs Ray Data: pip install 'mfrbench[ray]'") from err
    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING, include_dashboard=False)
    return ray


def map_records(records: Iterable[FaceRecord], factory: Callable[..., Any], factory_kwargs: dict, *,
                workers: int = 1, chunk: int = 8, window: int = WINDOW) -> Iterator[dict]:
    """Yield the stage worker's row for each record, in input order, computed by ``workers`` Ray actors.

    The records are cut into the local engine's chunks (``chunk`` records, windows a multiple of it), and
    each chunk is one worker call, so a backend sees the same batches as with ``--engine local``.
    """
    from mfrbench.pipeline import chunks

    ray = _ray()
    factory(**factory_kwargs)  # a bad config fails here, once, clearly (as the local engine does)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    per_call = max(1, 256 // chunk)  # chunks per actor call: Ray's per-call cost spread over ~256 images
    for win in chunks(records, max(chunk, window // chunk * chunk)):
        items = [{"chunk": json.dumps([asdict(r) for r in ch])} for ch in chunks(win, chunk)]
        out = ray.data.from_items(items).map_batches(
            _RecordsWorker, fn_constructor_kwargs={"factory": factory, "factory_kwargs": factory_kwargs},
            batch_size=per_call, batch_format="numpy", concurrency=workers, num_cpus=1)
        n = 0
        for item in out.iter_rows():
            for row in json.loads(item["rows"]):
                n += 1
                yield row
        if n != len(win):
            raise MfrbenchError(f"Ray returned {n} rows for {len(win)} records")
