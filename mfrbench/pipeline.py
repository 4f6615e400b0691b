"""Run a per-image function over a dataset into a manifest: parallel, streaming, resumable.

Every stage that turns images into images (``align``, ``generate``) goes through
:func:`process_records`, so they share the guarantees the manifest promises:

* **nothing lost**: each input becomes exactly one row. A :class:`SkipImage` raised by the
  worker becomes a ``skipped`` row with its reason; an unexpected exception on one image
  becomes a ``skipped`` row with reason ``error: <type>: <message>`` (and a log warning)
  instead of killing a 200k-image run;
* **streaming**: at most ``workers * 4`` chunks are in flight, so memory does not grow with
  the dataset (``multiprocessing.Pool.imap`` would read the whole input iterator ahead);
* **resumable**: keys already in the journal are not redone; output files are written
  atomically by the workers;
* **duplicates**: of inputs with the same bytes, the one with the smallest key stays and the
  others are ``skipped`` with reason ``duplicate: same content as <key>`` (their output files are
  removed when the manifest is written), so the same photo cannot sit on both sides of a
  train/test split, and the choice does not depend on how the work was split;
* **shards**: ``shard=Shard(i, N)`` processes only the inputs whose key digest is ``i`` mod ``N``
  (:mod:`mfrbench.shards`); ``mfrbench merge`` joins the N shard folders into what one run writes.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from mfrbench.datasets import FaceRecord
from mfrbench.errors import MfrbenchError, SkipImage
from mfrbench.manifest import ManifestWriter
from mfrbench.shards import InputTally, Shard, shard_record, take

log = logging.getLogger(__name__)

Worker = Callable[[FaceRecord], dict]

_WORKER: Worker | None = None
_INIT_ERROR: BaseException | None = None


def base_row(rec: FaceRecord) -> dict:
    """The core manifest columns of ``rec`` (status and output filled in by the stage)."""
    return {"key": rec.key, "src_path": rec.path, "sha1": "", "identity": rec.identity or "",
            "is_masked": bool(rec.is_masked), "source": rec.source, "out_path": "", "status": "skipped",
            "reason": ""}


def _listed_skip(rec: FaceRecord) -> dict:
    """The row of a record its listing already refused (``rec.skip``: a FIFO, a symlink loop, ...): never opened."""
    row = base_row(rec)
    row["reason"] = rec.skip
    return row


def _safe_call(fn: Worker, rec: FaceRecord) -> dict:
    if rec.skip:
        return _listed_skip(rec)
    try:
        return fn(rec)
    except SkipImage as skip:
        row = base_row(rec)
        row["reason"] = skip.reason
        return row
    except Exception as err:  # one bad image must not kill a long run; it is recorded instead
        row = base_row(rec)
        row["reason"] = f"error: {type(err).__name__}: {err}"
        return row


def _init_worker(factory: Callable[..., Worker], kwargs: dict) -> None:
    global _WORKER, _INIT_ERROR
    import cv2

    cv2.setNumThreads(1)  # one process per core: nested threading only adds contention
    try:
        _WORKER = factory(**kwargs)
    except BaseException as err:  # raising here would make Pool respawn workers forever
        _INIT_ERROR = err
        return
    if "torch" in sys.modules:  # only when the worker uses torch: importing it costs seconds
        sys.modules["torch"].set_num_threads(1)


def _call_chunk(fn: Worker, chunk: Sequence[FaceRecord]) -> list[dict]:
    """Rows for ``chunk``: one ``fn.process_batch(chunk)`` call when the worker has it (batched
    generators), else ``fn(rec)`` per record; a failing batch falls back to per-record calls."""
    batch = getattr(fn, "process_batch", None)
    readable = [rec for rec in chunk if not rec.skip]
    if batch is not None and readable:
        try:
            rows = batch(readable)
            if len(rows) == len(readable):
                it = iter(rows)
                return [_listed_skip(rec) if rec.skip else next(it) for rec in chunk]
            log.warning("process_batch returned %d rows for %d records; redoing one by one", len(rows),
                        len(readable))
        except Exception as err:  # noqa: BLE001 - recorded per record below
            log.warning("batch of %d failed (%s: %s); redoing one by one", len(readable), type(err).__name__, err)
    return [_safe_call(fn, rec) for rec in chunk]


def _run_chunk(chunk: Sequence[FaceRecord]) -> list[dict]:
    if _INIT_ERROR is not None:
        raise _INIT_ERROR
    assert _WORKER is not None
    return _call_chunk(_WORKER, chunk)


def chunks(it: Iterable[FaceRecord], n: int) -> Iterator[list[FaceRecord]]:
    """Consecutive lists of ``n`` records (the last one shorter), in input order."""
    buf: list[FaceRecord] = []
    for rec in it:
        buf.append(rec)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def map_records(records: Iterable[FaceRecord], factory: Callable[..., Worker], factory_kwargs: dict, *,
                workers: int = 1, chunk: int = 8) -> Iterator[dict]:
    """Yield ``worker(rec)`` rows in input order, with at most ``4 * workers`` chunks in flight.

    ``factory(**factory_kwargs)`` builds the per-process worker (detectors, templates, ...)
    once per process, never once per image. A worker with a ``process_batch(records) -> rows``
    method gets ``chunk`` records per call (batched generators).
    """
    fn = factory(**factory_kwargs)  # also in the parent: a bad config fails here, once, clearly
    if workers <= 1:
        if hasattr(fn, "process_batch"):
            for ch in chunks(records, chunk):
                yield from _call_chunk(fn, ch)
            return
        for rec in records:
            yield _safe_call(fn, rec)
        return
    del fn
    # forkserver (not fork: the parent may hold threads) with the heavy modules preloaded, so each
    # worker starts by forking a warm process instead of re-importing numpy/cv2/pandas.
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["mfrbench.pipeline", "cv2", factory.__module__])
    else:
        ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(factory, factory_kwargs)) as pool:
        pending: deque = deque()
        for ch in chunks(records, chunk):
            pending.append(pool.apply_async(_run_chunk, (ch,)))
            while len(pending) >= 4 * workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


ENGINES = ("local", "ray")


def engine_map(engine: str) -> Callable[..., Iterator[dict]]:
    """The ``map_records`` of an engine: this module's process pool, or Ray Data's (``pip install mfrbench[ray]``)."""
    if engine == "local":
        return map_records
    if engine == "ray":
        from mfrbench.ray_engine import map_records as ray_map

        return ray_map
    raise MfrbenchError(f"Expected an engine in {', '.join(ENGINES)}, but got {engine!r}")


def process_records(records: Iterable[FaceRecord], out_dir: str | os.PathLike, *, kind: str, config: dict,
                    factory: Callable[..., Worker], factory_kwargs: dict, seed: int | None = None,
                    workers: int = 1, total: int | None = None, resume: bool = True, dedupe: bool = True,
                    desc: str = "images", progress: bool = True, extra_meta: dict | None = None,
                    chunk: int = 8, shard: Shard | None = None, engine: str = "local") -> dict:
    """Process ``records`` into ``out_dir`` and return the manifest metadata (with counts).

    ``chunk``: records per worker task (and per ``process_batch`` call). ``shard``: process only
    that shard's records; ``out_dir`` becomes a shard folder (its config and ``manifest.json`` name the
    shard and count every listed input, for ``mfrbench merge``). ``engine``: ``local`` (a process
    pool of ``workers``) or ``ray`` (``workers`` Ray actors, :mod:`mfrbench.ray_engine`); the output
    does not depend on it.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    tally = InputTally()
    if shard is not None:  # part of the config: a resumed shard folder must be the same shard
        config, total = {**config, "shard": shard.to_dict()}, None
    writer = ManifestWriter(out_dir, kind=kind, config=config, seed=seed, resume=resume)
    done = writer.done_keys()
    claimed = {r[c]: r["key"] for r in writer.rows() if r["status"] == "ok"
               for c in r if c.endswith("out_path") and r[c]}
    n_inputs = 0
    n_skipped = writer.counts()["skipped"]

    def todo() -> Iterator[FaceRecord]:
        nonlocal n_inputs
        for rec in take(records, shard, tally if shard is not None else None):
            n_inputs += 1
            if rec.key not in done:
                yield rec

    bar = tqdm(total=total, initial=len(done) if total else 0, desc=desc, unit="img", disable=not progress,
               dynamic_ncols=True, mininterval=0.5)
    try:
        for row in engine_map(engine)(todo(), factory, factory_kwargs, workers=workers, chunk=chunk):
            if row["status"] == "ok":
                _claim_outputs(row, claimed)
            writer.add(row)
            bar.update(1)
            if row["status"] == "skipped":
                n_skipped += 1
                bar.set_postfix(skipped=n_skipped, refresh=False)
    finally:
        bar.close()
        writer.__exit__()
    if shard is not None:
        extra_meta = {**(extra_meta or {}), "shard": {**shard_record(shard, tally), "dedupe": dedupe}}
    return writer.close(expected_inputs=n_inputs, extra_meta=extra_meta, dedupe=dedupe)


def _claim_outputs(row: dict, claimed: dict[str, str]) -> None:
    """Record which key owns each output file of an ok ``row``; a file another key already owns makes it skipped.

    Output names are unique per key (:func:`mfrbench.imageio.output_rel`), so this never fires on inputs
    the adapters list; it keeps the manifest honest if a name scheme or a hand-made manifest ever maps
    two keys to one file (the later write replaced the earlier one's file: rerun with --no-resume).
    """
    cols = [c for c in row if c.endswith("out_path") and row[c]]
    owner = next((claimed[row[c]] for c in cols if claimed.get(row[c], row["key"]) != row["key"]), None)
    if owner is None:
        claimed.update({row[c]: row["key"] for c in cols})
        return
    path = next(row[c] for c in cols if claimed.get(row[c]) == owner)
    row.update({c: "" for c in cols})
    row.update(status="skipped", reason=f"output_collision: {path} is the output of {owner}")


def record_to_dict(rec: FaceRecord) -> dict[str, Any]:
    return asdict(rec)
