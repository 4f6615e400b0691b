"""Merge shard folders (``--shard i/N`` runs) into the output folder one process would have written.

:func:`merge_shards` (``mfrbench merge OUT SHARD_DIR...``):

1. **accounting**: every shard has finished, all are shards of the same run (kind, seed, config but
   for ``shard``), each index ``0 .. N-1`` is there exactly once, every row sits in the shard its key
   belongs to, all shards listed the same inputs (count and fingerprint, :mod:`mfrbench.shards`), and
   the union of their rows is that list. Anything else is a one-line :class:`MfrbenchError` naming
   the shard;
2. **duplicates**: the manifest's rule (smallest key of a content hash stays, :mod:`mfrbench.manifest`)
   applied across shards, so it does not matter which shard saw which copy;
3. **output**: the shards' output files hard-linked (copied across file systems) into ``OUT``, one
   ``manifest.csv`` whose bytes equal a one-process run's, ``manifest.json`` (the same but for its
   times), and the shards' journals joined into ``OUT/rows.jsonl`` (a later run with the same
   arguments and no ``--shard`` resumes it and finds nothing left to do).

Memory stays flat as the shards grow: the shards' CSVs (each in key order) are read as streams and
merged with :func:`heapq.merge`; the duplicate rule keeps 8 bytes per candidate row (the hash prefix)
on a first pass, and full hashes only for the few prefixes seen twice.
"""

from __future__ import annotations

import csv
import heapq
import io
import json
import logging
import os
import re
import shutil
import sys
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from mfrbench.errors import MfrbenchError
from mfrbench.imageio import atomic_write_bytes, atomic_writer
from mfrbench.manifest import (
    CORE_COLUMNS,
    DUPLICATE,
    JOURNAL,
    MANIFEST_CSV,
    MANIFEST_JSON,
    _now,
    csv_columns,
    csv_line,
    is_dedupe_candidate,
)
from mfrbench.seeds import key_digest
from mfrbench.shards import Shard

log = logging.getLogger(__name__)

csv.field_size_limit(sys.maxsize)  # landmark cells are long


@dataclass
class ShardDir:
    """One shard folder: its metadata, its :class:`Shard`, and its CSV header."""

    path: Path
    meta: dict
    shard: Shard
    header: list[str]

    def records(self) -> Iterator[tuple[str, list[str]]]:
        """(raw CSV record, its 9 core cells), in key order. A record is one line unless a quoted cell
        holds a line break; the core cells are split off, and parsed only when one of them is quoted."""
        with open(self.path / MANIFEST_CSV, newline="", encoding="utf-8") as f:
            f.readline()
            for rec in f:
                while rec.count('"') % 2:  # a quoted cell goes on past this line break
                    more = f.readline()
                    if not more:
                        raise MfrbenchError(f"{self.path / MANIFEST_CSV} ends inside a quoted cell (truncated)")
                    rec += more
                core = rec.split(",", N_CORE)[:N_CORE]  # the core cells lead: usually unquoted, so a split is exact
                if len(core) < N_CORE or '"' in "".join(core):
                    core = next(csv.reader([rec]))[:N_CORE]
                else:
                    core[-1] = core[-1].rstrip("\r\n")
                yield rec, core


#: The core columns lead every manifest CSV (``mfrbench.manifest.csv_columns``): key 0, sha1 2, source 5,
#: status 7, reason 8.
N_CORE = len(CORE_COLUMNS)
KEY, SHA1, SOURCE, STATUS, REASON = (CORE_COLUMNS.index(c) for c in ("key", "sha1", "source", "status", "reason"))


def _config(meta: dict) -> dict:
    return {k: v for k, v in (meta.get("config") or {}).items() if k != "shard"}


def read_shard(path: str | os.PathLike) -> ShardDir:
    """A finished shard folder, or a one-line error saying what it is instead."""
    p = Path(path)
    meta_path = p / MANIFEST_JSON
    if not meta_path.is_file():
        raise MfrbenchError(f"shard {p} has no {MANIFEST_JSON} (not an mfrbench output folder, or never started)")
    meta = json.loads(meta_path.read_text())
    rec = meta.get("shard") or (meta.get("config") or {}).get("shard")  # config: also while it runs
    if not isinstance(rec, dict):
        raise MfrbenchError(f"{p} is not a shard (its {MANIFEST_JSON} has no shard record: run with --shard i/N)")
    if not meta.get("finished") or not (p / MANIFEST_CSV).is_file():
        raise MfrbenchError(f"shard {rec.get('index')}/{rec.get('count')} in {p} has not finished: rerun its "
                            "command (same arguments) to complete it")
    with open(p / MANIFEST_CSV, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    if header[:N_CORE] != CORE_COLUMNS:
        raise MfrbenchError(f"shard {p}'s manifest.csv does not start with the core columns (written by another "
                            "mfrbench version?): rerun the shard")
    return ShardDir(p, meta, Shard(int(rec["index"]), int(rec["count"])), header)


def check_shards(shards: list[ShardDir]) -> list[ShardDir]:
    """The shards in index order, after the accounting checks that need only their metadata."""
    if not shards:
        raise MfrbenchError("give at least one shard folder")
    first = shards[0]
    n = first.shard.count
    by_index: dict[int, ShardDir] = {}
    for s in shards:
        if s.shard.count != n:
            raise MfrbenchError(f"{s.path} is shard {s.shard}, but {first.path} is a shard of {n}")
        if s.shard.index in by_index:
            raise MfrbenchError(f"shard {s.shard} given twice: {by_index[s.shard.index].path} and {s.path}")
        by_index[s.shard.index] = s
        for what, a, b in (("kind", first.meta.get("kind"), s.meta.get("kind")),
                           ("seed", first.meta.get("seed"), s.meta.get("seed")),
                           ("schema_version", first.meta.get("schema_version"), s.meta.get("schema_version")),
                           ("seed_version", first.meta.get("seed_version"), s.meta.get("seed_version"))):
            if a != b:
                raise MfrbenchError(f"shard {s.shard} in {s.path} has {what} {b!r}, shard {first.shard} in "
                                    f"{first.path} has {a!r}: not shards of one run")
        ca, cb = _config(first.meta), _config(s.meta)
        if ca != cb:
            diff = sorted(k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k))
            raise MfrbenchError(f"shard {s.shard} in {s.path} was run with a different config than shard "
                                f"{first.shard} in {first.path} (differs in {', '.join(diff)})")
        for k in ("inputs_all", "inputs_fingerprint"):
            if s.meta["shard"].get(k) != first.meta["shard"].get(k):
                raise MfrbenchError(f"shard {s.shard} in {s.path} listed other inputs than shard {first.shard} in "
                                    f"{first.path} ({s.meta['shard'].get('inputs_all')} vs "
                                    f"{first.meta['shard'].get('inputs_all')} inputs): rerun it on the same input")
    missing = [f"{i}/{n}" for i in range(n) if i not in by_index]
    if missing:
        raise MfrbenchError(f"missing shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} (given: "
                            f"{', '.join(str(by_index[i].shard) for i in sorted(by_index))})")
    return [by_index[i] for i in range(n)]


def _candidate_prefixes(shards: list[ShardDir]) -> set[int]:
    """Pass 1: check that each row is in its key's shard and the union is the listed input; return the
    hash prefixes (64 bits) seen on more than one duplicate-rule candidate row."""
    prefixes = array("Q")
    keys_n, fp_sum = 0, 0
    for s in shards:
        n = 0
        for _, core in s.records():
            key = core[KEY]
            d = key_digest(key)
            owner = int.from_bytes(d[:8], "big") % s.shard.count  # mfrbench.shards.shard_of
            if owner != s.shard.index:
                raise MfrbenchError(f"shard {s.shard} in {s.path} holds {key!r}, which belongs to shard "
                                    f"{owner}/{s.shard.count}: not made by mfrbench --shard, or renamed")
            h = core[SHA1]
            if h and is_dedupe_candidate(core[STATUS], core[REASON]):
                prefixes.append(int(h[:16], 16))
            n += 1
            fp_sum += int.from_bytes(d[:16], "big")  # mfrbench.shards.fingerprint
        if n != s.meta.get("inputs"):
            raise MfrbenchError(f"shard {s.shard} in {s.path} has {n} rows but its {MANIFEST_JSON} counts "
                                f"{s.meta.get('inputs')}: the folder was changed after it finished")
        keys_n += n
    want = shards[0].meta["shard"]
    fp = f"{fp_sum & ((1 << 128) - 1):032x}"
    if keys_n != want["inputs_all"] or fp != want["inputs_fingerprint"]:
        raise MfrbenchError(f"the {len(shards)} shards hold {keys_n} rows, not the {want['inputs_all']} inputs they "
                            "listed (or other keys): a shard ran on a different input")
    if not len(prefixes):
        return set()
    u, c = np.unique(np.frombuffer(prefixes, np.uint64), return_counts=True)
    return set(u[c > 1].tolist())


def _place(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s bytes: a hard link, or a copy across file systems (atomically either way)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def merge_shards(out_dir: str | os.PathLike, shard_dirs: list[str | os.PathLike], *, progress: bool = False,
                 files: bool = True) -> dict:
    """Merge ``shard_dirs`` into ``out_dir``; return the merged manifest metadata.

    ``files=False`` writes the manifest only (``benchmarks/bench_shards.py`` times the two parts apart).

    Raises:
        MfrbenchError: a shard is missing, doubled, unfinished, of another run or other input, or
            ``out_dir`` already holds a manifest.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    if (out / MANIFEST_JSON).exists():
        raise MfrbenchError(f"{out} already holds a manifest: choose a new OUT (or delete it to merge again)")
    shards = check_shards([read_shard(p) for p in shard_dirs])
    for s in shards:
        if s.path.resolve() == out.resolve():
            raise MfrbenchError(f"OUT {out} is one of the shards: merge into a new folder")
    rep = _candidate_prefixes(shards) if shards[0].meta["shard"].get("dedupe", True) else set()
    columns = csv_columns(c for s in shards for c in s.header)
    out_cols = [i for i, c in enumerate(columns) if c.endswith("out_path")]
    kept: dict[str, str] = {}
    counts: Counter = Counter()
    reasons: Counter = Counter()
    synthetic = False

    def stream(k: int, s: ShardDir) -> Iterator[tuple[str, int, str, list[str]]]:
        for rec, core in s.records():
            yield core[KEY], k, rec, core

    def cells(k: int, rec: str) -> list[str]:
        """The record's cells in the merged column order (a shard may lack columns other shards have)."""
        row = next(csv.reader([rec]))
        hdr = shards[k].header
        return row if hdr == columns else [row[hdr.index(c)] if c in hdr else "" for c in columns]

    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=sum(s.meta["inputs"] for s in shards), desc="merge", unit="row", disable=not progress,
               mininterval=0.5)
    last = None
    with atomic_writer(out / MANIFEST_CSV) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8", newline="")
        f.write(csv_line(columns))
        for key, k, rec, core in heapq.merge(*(stream(k, s) for k, s in enumerate(shards))):
            if key == last:
                raise MfrbenchError(f"{key!r} is in two shards (one is {shards[k].path})")
            last = key
            status, reason, h, row, changed = core[STATUS], core[REASON], core[SHA1], None, False
            if h and int(h[:16], 16) in rep and is_dedupe_candidate(status, reason):
                first = kept.setdefault(h, key)
                if first != key:
                    row = cells(k, rec)
                    for j in out_cols:
                        row[j] = ""
                    status, reason, changed = "skipped", DUPLICATE + first, True
                    row[STATUS], row[REASON] = status, reason
            if status == "ok" and files:
                row = row or cells(k, rec)
                for j in out_cols:
                    if row[j]:
                        _place(shards[k].path / row[j], out / row[j])
            if status != "ok":
                reasons[reason.split(":")[0]] += 1
            counts[status] += 1
            synthetic = synthetic or core[SOURCE] == "synthetic"
            # An unchanged record of a shard with the merged columns is already the line to write (one writer,
            # cells from values alone): copied, not parsed and written again.
            if not changed and shards[k].header == columns:
                f.write(rec)
            else:
                f.write(csv_line(row if row is not None else cells(k, rec)))
            bar.update(1)
        f.flush()
        f.detach()
    bar.close()
    with atomic_writer(out / JOURNAL) as fj:  # raw rows: a resumed run re-applies the duplicate rule itself
        for s in shards:
            with open(s.path / JOURNAL, "rb") as src:
                shutil.copyfileobj(src, fj, 1 << 20)
    meta = dict(shards[0].meta)
    meta.pop("shard", None)
    meta.update(created=min(s.meta.get("created") or "" for s in shards), finished=_now(), config=_config(meta),
                synthetic=synthetic, inputs=sum(counts.values()), ok=counts.get("ok", 0),
                skipped=counts.get("skipped", 0), skip_reasons=dict(sorted(reasons.items())))
    atomic_write_bytes(out / MANIFEST_JSON, json.dumps(meta, indent=2).encode())
    log.info("merged %d shards into %s: %d rows", len(shards), out, meta["inputs"])
    return meta


# --------------------------------------------------------------------------- eval: embedding shards
_EMB_SHARD = re.compile(r"\.shard-(\d+)-of-(\d+)$")


def shard_embeddings_path(cache: Path, shard: Shard) -> Path:
    """Where ``eval --shard i/N`` writes its part of the embeddings file ``cache`` (next to it)."""
    return cache.with_name(f"{cache.stem}.shard-{shard.index}-of-{shard.count}{cache.suffix}")


def assemble_embeddings(cache: Path, paths: list[str], info: dict, *, flip: bool) -> bool:
    """Join the shard files of ``cache`` (``eval --shard``) into ``cache``; ``False`` when there are none.

    Each shard file must hold exactly its shard's images of ``paths``, embedded by the same model; a
    missing shard, or shard files of several N, is a one-line error naming them.
    """
    from mfrbench.evaluate import load_embeddings, save_embeddings
    from mfrbench.shards import shard_of

    found: dict[int, dict[int, Path]] = {}
    for f in sorted(cache.parent.glob(f"{cache.stem}.shard-*-of-*{cache.suffix}")):
        m = _EMB_SHARD.search(f.name[: -len(cache.suffix)] if cache.suffix else f.name)
        if m:
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = f
    if not found:
        return False
    if len(found) > 1:
        raise MfrbenchError(f"embedding shards of {' and '.join(str(n) for n in sorted(found))} shards in "
                            f"{cache.parent} for {cache.name}: delete the stale ones")
    (n, have), = found.items()
    missing = [f"{i}/{n}" for i in range(n) if i not in have]
    if missing:
        raise MfrbenchError(f"embeddings of shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing in "
                            f"{cache.parent} (have {', '.join(f'{i}/{n}' for i in sorted(have))}): run the same "
                            "eval with --shard for them")
    owner = np.array([shard_of(p, n) for p in paths], np.int64)
    parts = {i: load_embeddings(f, model_info=info, keys=[p for p, o in zip(paths, owner) if o == i])
             for i, f in have.items()}                             # each checked: its images exactly, this model
    out = np.zeros((len(paths), parts[0].shape[1]), np.float32)     # (n_images, D); D checked by load_embeddings
    for i, emb in parts.items():
        out[owner == i] = emb
    save_embeddings(cache, out, paths, info, flip=flip)
    log.info("assembled %d embedding shards into %s", n, cache)
    return True
