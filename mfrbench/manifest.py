"""The manifest: one row per input image for every derived dataset (aligned, masked, ...).

Format (schema version 1), in an output directory ``OUT/``:

``OUT/manifest.csv``
    One row per input image, read with :func:`read_manifest` (pandas). Core columns, always
    present (see :data:`CORE_COLUMNS`):

    ``key``           unique id of the input within its dataset (its path relative to the root)
    ``src_path``      absolute path of the input file
    ``sha1``          content hash of the input bytes (empty if the file could not be read)
    ``identity``      identity label as a string (empty when the dataset has none)
    ``is_masked``     whether the *input* shows a masked face
    ``source``        dataset adapter name (``celeba``, ``lfw``, ``synthetic``, ...)
    ``out_path``      output file, relative to ``OUT/`` (empty when skipped)
    ``status``        ``ok`` or ``skipped``
    ``reason``        why it was skipped (``code: detail``), empty when ok

    Stages add their own columns (alignment: ``bbox``, ``score``, ``lmk5``, ``lmk68``,
    ``lmk5_crop``, ``lmk68_crop``; generators: ``mask_type``, ``wearing``, ...). List-valued
    cells (boxes, landmarks) are JSON arrays, decoded back to lists by :func:`read_manifest`.

    Rows are in key order and columns are the core ones, then the others in name order; each
    cell is a function of its value alone (:func:`cell`), so the file does not depend on how the
    work was split: one process, ``--workers``, or ``--shard`` runs merged by ``mfrbench merge``
    give the same bytes.

``OUT/manifest.json``
    Run-level metadata: ``schema_version``, ``kind`` (``aligned``, ``masked``, ...),
    ``tool_version``, the resolved ``config``, ``seed``, counts (``inputs``, ``ok``,
    ``skipped``, skip reasons by code), ``synthetic`` (true when any input was synthetic),
    creation and finish time. Masked sets add ``seed_version`` (the per-image seed scheme,
    :mod:`mfrbench.seeds`; absent means version 1); a shard of a run adds ``shard``
    (:mod:`mfrbench.shards`).

``OUT/rows.jsonl``
    The append-only journal written while the run goes. It makes runs resumable: a killed run
    restarted with the same config skips every key already in the journal; a truncated last
    line (the kill landed mid-write) is ignored and that image is redone. The CSV and JSON are
    written atomically from the journal when the run finishes.

Invariant, checked on finish: ``inputs == ok + skipped`` and every key appears exactly once.

Duplicates (``dedupe``): of the ok rows with the same content hash ``sha1``, the one with the
smallest key stays ok; the others become ``skipped`` with reason ``duplicate: same content as <key>``
and their output files are removed. The rule looks at the set of rows only, never at the order
they were processed in, so it gives the same answer for any split of the work. The journal keeps
the rows as the workers returned them; the rule is applied when the CSV is written.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

from mfrbench import __version__
from mfrbench.errors import DamagedFileError, MfrbenchError
from mfrbench.imageio import atomic_write_bytes, atomic_writer

SCHEMA_VERSION = 1
CORE_COLUMNS = ["key", "src_path", "sha1", "identity", "is_masked", "source", "out_path", "status", "reason"]
JSON_COLUMNS = ("bbox", "lmk5", "lmk68", "lmk5_crop", "lmk68_crop", "anchors", "covered_parts")
MANIFEST_CSV = "manifest.csv"
MANIFEST_JSON = "manifest.json"
JOURNAL = "rows.jsonl"
#: The reason of a row skipped as a duplicate, followed by the key that was kept.
DUPLICATE = "duplicate: same content as "


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _jsonable(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    return v


class ManifestWriter:
    """Append rows to a resumable journal; write ``manifest.csv`` + ``manifest.json`` on close.

    Args:
        out_dir: output directory of the run.
        kind: what the run produces (``aligned``, ``masked``, ...).
        config: the resolved, JSON-serialisable run config. A resumed run must match it.
        seed: the run's seed (also recorded in the metadata).
        resume: continue a journal left by an earlier run with the same config. With
            ``resume=False`` an existing journal is an error (never silently overwritten).
    """

    def __init__(self, out_dir: str | os.PathLike, *, kind: str, config: dict, seed: int | None = None,
                 resume: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.kind = kind
        self.config = json.loads(json.dumps(config, default=str))
        self.seed = seed
        self.journal_path = self.out_dir / JOURNAL
        self.meta_path = self.out_dir / MANIFEST_JSON
        self._rows: dict[str, dict] = {}
        self.resumed = 0
        started = None
        if self.journal_path.exists() and self.meta_path.exists():
            meta = read_manifest_meta(self.out_dir)
            if not resume:
                raise MfrbenchError(f"{self.out_dir} already holds a {meta.get('kind')} run; "
                                    "pass --resume to continue it or choose a new --out")
            if meta.get("config") != self.config:
                diff = sorted(k for k in set(meta.get("config", {})) | set(self.config)
                              if meta.get("config", {}).get(k) != self.config.get(k))
                raise MfrbenchError(f"{self.out_dir} holds a run with a different config (differs in "
                                    f"{', '.join(diff)}); rerun with the same arguments or choose a new --out")
            started = meta.get("created")
            for row in _read_journal(self.journal_path):
                self._rows[row["key"]] = row
            self.resumed = len(self._rows)
            # Rewrite the journal without a possibly truncated tail, so appends start clean.
            atomic_write_bytes(self.journal_path, b"".join(
                (json.dumps(r) + "\n").encode() for r in self._rows.values()))
        self.created = started or _now()
        self._write_meta(finished=None)
        self._fh = open(self.journal_path, "a", encoding="utf-8")

    # ------------------------------------------------------------------ rows
    def done_keys(self) -> set[str]:
        """Keys finished by an earlier (killed) run: skip them when resuming."""
        return set(self._rows)

    def rows(self) -> list[dict]:
        return list(self._rows.values())

    def add(self, row: dict) -> None:
        """Record one input's outcome. ``key`` and ``status`` are required."""
        missing = [c for c in ("key", "status") if c not in row]
        if missing:
            raise ValueError(f"Expected manifest row with {missing}, but got keys {sorted(row)}")
        if row["status"] not in ("ok", "skipped"):
            raise ValueError(f"Expected status 'ok' or 'skipped', but got {row['status']!r}")
        line = json.dumps({k: _jsonable(v) for k, v in row.items()})
        if row["key"] in self._rows:
            raise ValueError(f"duplicate manifest key {row['key']!r}")
        self._rows[row["key"]] = json.loads(line)  # what a resumed run reads back from the journal, exactly
        self._fh.write(line + "\n")
        self._fh.flush()

    # ------------------------------------------------------------------ finish
    def counts(self) -> dict[str, Any]:
        status = Counter(r["status"] for r in self._rows.values())
        reasons = Counter(str(r.get("reason", "")).split(":")[0] for r in self._rows.values()
                          if r["status"] == "skipped")
        return {"inputs": len(self._rows), "ok": status.get("ok", 0), "skipped": status.get("skipped", 0),
                "skip_reasons": dict(sorted(reasons.items()))}

    def _write_meta(self, finished: str | None, extra: dict | None = None) -> dict:
        synthetic = any(r.get("source") == "synthetic" for r in self._rows.values())
        meta = {
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind,
            "tool": "mfrbench",
            "tool_version": __version__,
            "created": getattr(self, "created", None) or _now(),
            "finished": finished,
            "seed": self.seed,
            "config": self.config,
            "synthetic": synthetic,
            **self.counts(),
            **(extra or {}),
        }
        atomic_write_bytes(self.meta_path, json.dumps(meta, indent=2).encode())
        return meta

    def close(self, expected_inputs: int | None = None, extra_meta: dict | None = None, *,
              dedupe: bool = False) -> dict:
        """Write the final CSV and metadata; check ``inputs == ok + skipped`` (and the count).

        ``dedupe``: apply the duplicate rule (module docstring) and remove the duplicates' output files.
        """
        self._fh.close()
        if expected_inputs is not None and len(self._rows) != expected_inputs:
            raise MfrbenchError(f"manifest has {len(self._rows)} rows for {expected_inputs} inputs")
        rows = [self._rows[k] for k in sorted(self._rows)]
        if dedupe:
            rows = list(dedupe_sorted(rows, out_dir=self.out_dir))
        self._rows = {r["key"]: r for r in rows}
        counts = self.counts()
        assert counts["inputs"] == counts["ok"] + counts["skipped"]
        write_csv(self.out_dir / MANIFEST_CSV, csv_columns(k for r in rows for k in r), rows)
        return self._write_meta(finished=_now(), extra=extra_meta)

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._fh.closed:
            self._fh.close()


def _read_journal(path: Path) -> Iterable[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # truncated by a kill mid-write: redo that image
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def cell(v: Any) -> str:
    """A manifest CSV cell: a function of the value alone (lists and dicts as JSON, None and NaN empty)."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def csv_columns(names: Iterable[str]) -> list[str]:
    """The manifest's column order: :data:`CORE_COLUMNS`, then every other name in sorted order."""
    extra = set(names) - set(CORE_COLUMNS)
    return CORE_COLUMNS + sorted(extra)


def csv_line(cells: Iterable[str]) -> str:
    """One CSV line (minimal quoting, ``\\n``-terminated), as :func:`write_csv` writes it."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(list(cells))
    return buf.getvalue()


def write_csv(path: str | os.PathLike, columns: list[str], rows: Iterable[dict]) -> None:
    """Stream ``rows`` (dicts; missing keys are empty cells) into the CSV at ``path``, atomically."""
    with atomic_writer(path) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8", newline="")
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([cell(r.get(c)) for c in columns])
        f.flush()
        f.detach()


def is_dedupe_candidate(status: str, reason: str) -> bool:
    """Rows the duplicate rule looks at: ok ones, and ones it already turned into duplicates."""
    return status == "ok" or str(reason).startswith(DUPLICATE)


def as_duplicate(row: dict, kept: str) -> dict:
    """A copy of ``row`` skipped as a duplicate of ``kept`` (its output columns emptied)."""
    row = dict(row)
    row.update({c: "" for c in row if c.endswith("out_path")})
    row.update(status="skipped", reason=DUPLICATE + kept)
    return row


def dedupe_sorted(rows: Iterable[dict], *, out_dir: str | os.PathLike | None = None) -> Iterator[dict]:
    """Apply the duplicate rule to ``rows`` given in key order (the first row of a hash is the kept one).

    ``out_dir``: remove the output files of the rows that become duplicates.
    """
    kept: dict[str, str] = {}
    for r in rows:
        h = r.get("sha1")
        if h and r["status"] == "ok":  # a journal holds the rows as processed: only ok ones can be duplicates
            first = kept.setdefault(h, r["key"])
            if first != r["key"]:
                if out_dir is not None:
                    for c in r:
                        if c.endswith("out_path") and r[c]:
                            Path(out_dir, r[c]).unlink(missing_ok=True)
                r = as_duplicate(r, first)
        yield r


def rows_to_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows -> DataFrame with core columns first and list cells JSON-encoded."""
    df = pd.DataFrame(rows)
    for col in CORE_COLUMNS:
        if col not in df.columns:
            df[col] = ""
    for col in df.columns:
        if col in JSON_COLUMNS or df[col].map(lambda v: isinstance(v, (list, dict))).any():
            df[col] = df[col].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v))
    extra = [c for c in df.columns if c not in CORE_COLUMNS]
    return df[CORE_COLUMNS + extra]


def resolve_manifest_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_CSV
    if not p.is_file():
        hint = " (the run has not finished: rerun it with the same arguments to complete it)" \
            if (p.parent / JOURNAL).exists() else ""
        raise MfrbenchError(f"no manifest at {p}{hint}")
    return p


@contextlib.contextmanager
def damage_named(path: str | os.PathLike):
    """Turn what a damaged manifest file raises while it is parsed (truncated, garbage, not UTF-8) into a one-line
    :class:`~mfrbench.errors.DamagedFileError` naming it."""
    try:
        yield
    except (ValueError, csv.Error) as err:  # pandas ParserError, JSONDecodeError, UnicodeDecodeError are ValueErrors
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        fix = "rerun the command that wrote it into a new --out" if Path(path).name == MANIFEST_JSON else \
            f"rerun the command that wrote it into its folder, same arguments (the CSV is rewritten from {JOURNAL})"
        raise DamagedFileError(f"{path} is damaged ({first}): restore it, or {fix}") from err


def check_row_count(csv_path: Path, n_rows: int) -> None:
    """A finished run's CSV holds the rows its ``manifest.json`` counts (a file cut at a line end still parses)."""
    if not (csv_path.parent / MANIFEST_JSON).is_file():
        return
    meta = read_manifest_meta(csv_path.parent)
    n = meta.get("ok", 0) + meta.get("skipped", 0) if meta.get("finished") else n_rows
    if isinstance(n, int) and n != n_rows:
        raise DamagedFileError(f"{csv_path} holds {n_rows} rows but {MANIFEST_JSON} counts {n}: restore it, or rerun "
                               "the command that wrote it into its folder with the same arguments (the CSV is "
                               f"rewritten from {JOURNAL})")


def read_manifest(path: str | os.PathLike, *, status: str | None = None) -> pd.DataFrame:
    """Read a manifest (its directory or CSV file); decode JSON list columns.

    Adds ``abs_out_path`` (absolute output path) for convenience. ``status='ok'`` keeps ok rows.

    Raises:
        DamagedFileError: the CSV does not parse, or it holds another number of rows than the finished
            run's ``manifest.json`` counts (a file truncated at a line end).
    """
    p = resolve_manifest_path(path)
    with damage_named(p):
        df = pd.read_csv(p, dtype={"identity": str, "key": str, "reason": str, "out_path": str, "sha1": str},
                         keep_default_na=False)
        for col in df.columns:
            if col in JSON_COLUMNS:
                df[col] = df[col].map(lambda v: json.loads(v) if isinstance(v, str) and v else None)
    check_row_count(p, len(df))
    if "is_masked" in df.columns:
        df["is_masked"] = df["is_masked"].map(lambda v: v if isinstance(v, bool) else str(v).lower() == "true")
    df["abs_out_path"] = [str(p.parent / o) if o else "" for o in df["out_path"]]
    if status is not None:
        df = df[df["status"] == status].reset_index(drop=True)
    return df


def read_manifest_meta(path: str | os.PathLike) -> dict:
    p = Path(path)
    meta = (p if p.is_dir() else p.parent) / MANIFEST_JSON
    if not meta.is_file():
        raise MfrbenchError(f"no manifest metadata at {meta}")
    with damage_named(meta):
        out = json.loads(meta.read_bytes().decode("utf-8"))
    if not isinstance(out, dict):
        raise DamagedFileError(f"{meta} is damaged (a JSON {type(out).__name__}, not an object): restore it")
    return out
