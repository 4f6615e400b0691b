"""The append-only results store under ``results/``.

``results/evals.csv``
    One row per evaluation (``kind='eval'``, from ``mfrbench eval``) or per quality measurement
    (``kind='quality'``, from ``mfrbench quality``). Rows are appended, never rewritten; the
    column order is :data:`COLUMNS` (a file with another header is an error, never rewritten).
    Rates are fractions in [0, 1]; a metric that does not apply or is undefined is empty (NaN).
``results/breakdown.csv``
    Per-evaluation breakdown rows (by pair type, mask type, all-pairs set), keyed by ``eval_id``.
``results/plots/<eval_id>-roc.png`` / ``-cmc.png``
    The ROC (log-FAR axis) and CMC of each evaluation, named in the row.
``results/protocols/<benchmark>-<id>/``
    The protocol files each row's ``protocol_id`` points to.

Rows are typed: :class:`EvalRow`, :class:`QualityRow` and :class:`BreakdownRow` are frozen
dataclasses built from ordered column groups, so :data:`COLUMNS` (the file order) and the row
classes cannot drift apart. The TAR columns of all three come from the one :data:`FARS` list
(:func:`tar_col` spells them); a new FAR target is one edit here, not five. Writers may still pass
plain dicts keyed by column name; either way a column outside the row's kind is an error.

Appends and reads hold a lock on the file (``fcntl.flock``: exclusive to append, shared to read), so
processes appending to one store at once never write two headers or interleave rows; each append is one
``write`` of whole lines, started on a fresh line even after a crash mid-row. A read checks every line
(header, field count, typed cells, a final newline) and names the first damaged one in a one-line
:class:`~mfrbench.errors.DamagedFileError`: a damaged store is never silently column-shifted, and
nothing rewrites it (the user fixes or deletes the named line; the other rows are intact).

Generator columns (every row): ``generator`` (the identity's variant, e.g. ``mfgan-no-inv``),
``generator_family`` and ``generator_hash``, from the masked manifest's identity record
(:func:`mfrbench.generate.read_generator_identity`): for ``eval`` rows that of the recognizer's
training data, for ``quality`` rows that of the measured set.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import fcntl
import io
import os
import uuid
from dataclasses import field, fields, is_dataclass, make_dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mfrbench.errors import DamagedFileError, MfrbenchError

EVALS = "evals.csv"
BREAKDOWN = "breakdown.csv"

#: The FAR operating points of every evaluation: each gives the ``tar_far_<far>`` columns (+ ``_lo`` / ``_hi``).
FARS = (1e-4, 1e-3, 1e-2)


def far_label(far: float) -> str:
    """``1e-3`` for 0.001: the spelling of a FAR in column names and table headers."""
    return f"{far:.0e}".replace("e-0", "e-")


def tar_col(far: float, bound: str = "") -> str:
    """Column of TAR at ``far`` (``bound`` ``"lo"`` / ``"hi"``: its 95 % CI ends), e.g. ``tar_far_1e-3_lo``."""
    return f"tar_far_{far_label(far)}" + (f"_{bound}" if bound else "")


def _tar_fields(ci: bool) -> list[tuple[str, type]]:
    return [(tar_col(f, b), float) for f in FARS for b in (("", "lo", "hi") if ci else ("",))]


# Column groups, in file order. A row class is a frozen dataclass over some groups; the evals.csv header
# is the union (COLUMNS), so eval and quality rows share one file.
_ID = [("eval_id", str), ("kind", str), ("time", str)]
_MODEL = [("model", str), ("model_path", str), ("backbone", str), ("loss", str), ("embedding_dim", int),
          ("train_data", str), ("generator", str), ("generator_family", str), ("generator_hash", str),
          ("config_hash", str)]
_VERIFY = [("benchmark", str), ("protocol_id", str), ("root", str), ("metric", str), ("flip", bool),
           ("gallery_rule", str), ("n_genuine", int), ("n_impostor", int), ("n_duplicates", int), ("acc", float),
           ("acc_std", float), ("acc_protocol", str), ("ci_method", str), *_tar_fields(ci=True), ("auc", float),
           ("eer", float), ("rank1", float), ("rank1_lo", float), ("rank1_hi", float), ("rank5", float),
           ("rank5_lo", float), ("rank5_hi", float), ("n_probes", int), ("n_gallery_ids", int),
           ("n_distractors", int), ("coverage", float), ("detect_rate", float), ("fallback", str)]
_QUALITY = [("ssim", float), ("psnr", float), ("fid", float), ("kid", float), ("kid_std", float),
            ("identity_cos", float), ("n_images", int), ("n_real", int), ("quality_data", str),
            ("quality_protocol", str), ("nonmask_source", str)]
_TAIL = [("notes", str), ("roc_png", str), ("cmc_png", str), ("seconds", float), ("tool_version", str)]
_BREAKDOWN = [("eval_id", str), ("benchmark", str), ("subset", str), ("n_genuine", int), ("n_impostor", int),
              ("acc", float), ("acc_protocol", str), *_tar_fields(ci=False), ("auc", float), ("n_probes", int),
              ("rank1", float), ("rank5", float)]


def _row_class(name: str, doc: str, groups: list[tuple[str, type]]) -> type:
    """A frozen dataclass with one optional field per column (``None`` = empty cell, i.e. not measured).

    Field names are identifiers (``tar_far_1e_3``); each field's ``metadata["column"]`` is its CSV
    column (``tar_far_1e-3``), see :func:`row_columns`.
    """
    cls = make_dataclass(name, [(n.replace("-", "_"), t | None, field(default=None, metadata={"column": n}))
                                for n, t in groups], frozen=True)
    cls.__doc__ = doc
    cls.__module__ = __name__
    return cls


def row_columns(cls: type) -> list[str]:
    """The CSV columns of a row class, in field order."""
    return [f.metadata["column"] for f in fields(cls)]


#: One ``mfrbench eval`` row (``kind='eval'``): the recognizer, the benchmark and its metrics.
EvalRow = _row_class("EvalRow", "One evaluation of a recognizer on a benchmark (kind='eval').",
                     _ID + _MODEL + _VERIFY + _TAIL)
#: One ``mfrbench quality`` row (``kind='quality'``): the generated set's identity and image-quality metrics.
QualityRow = _row_class("QualityRow", "One image-quality measurement of a generated masked set (kind='quality').",
                        _ID + _MODEL + _QUALITY + _TAIL)
#: One ``breakdown.csv`` row: an evaluation's numbers on one subset (pair type, mask type, all-pairs set).
BreakdownRow = _row_class("BreakdownRow", "One evaluation's numbers on one subset of its benchmark.", _BREAKDOWN)
ROW_CLASSES = {"eval": EvalRow, "quality": QualityRow}

#: Column order of ``evals.csv`` (documented in ``results/README.md``).
COLUMNS = [n for n, _ in _ID + _MODEL + _VERIFY + _QUALITY + _TAIL]
BREAKDOWN_COLUMNS = [n for n, _ in _BREAKDOWN]
#: The metric columns of a breakdown row (what an evaluation fills per subset).
BREAKDOWN_METRICS = [c for c in BREAKDOWN_COLUMNS if c not in ("eval_id", "benchmark", "subset")]
#: Columns read back as text (never parsed as numbers: hashes like ``1e10`` stay strings).
TEXT_COLUMNS = sorted({n for n, t in _ID + _MODEL + _VERIFY + _QUALITY + _TAIL if t is str})


def store_paths(results: str | os.PathLike) -> tuple[Path, Path, Path]:
    """(folder, evals CSV, breakdown CSV) of a store given as a folder or as a ``.csv`` file.

    A folder holds ``evals.csv`` and ``breakdown.csv``; a file ``X.csv`` is the evals table
    itself, with ``X-breakdown.csv`` (and the plots and protocols) next to it.

    Raises:
        MfrbenchError: ``results`` is an existing file that is not a ``.csv`` (``report --results notes.txt``).
    """
    p = Path(results)
    if p.suffix.lower() == ".csv" and not p.is_dir():
        return p.parent, p, p.with_name(f"{p.stem}-breakdown.csv")
    if p.exists() and not p.is_dir():
        raise MfrbenchError(f"--results {p} is a file, not a results store: give a folder (evals.csv inside) or "
                            "an evals .csv file")
    return p, p / EVALS, p / BREAKDOWN


def require_store(results: str | os.PathLike) -> Path:
    """The evals CSV of an existing store (``report`` reads one; it must not invent an empty one).

    Raises:
        MfrbenchError: there is no ``evals.csv`` at ``results``.
    """
    path = store_paths(results)[1]
    if not path.is_file():
        raise MfrbenchError(f"no results store at {results} ({path} does not exist): run `mfrbench eval` or "
                            "`mfrbench quality` first, or pass the --results folder they wrote")
    return path


def new_eval_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else repr(float(v))
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v)


#: Column -> type of every table, for the cell checks of :func:`_checked_text`.
_TYPES = {n: t for n, t in _ID + _MODEL + _VERIFY + _QUALITY + _TAIL + _BREAKDOWN}


@contextlib.contextmanager
def _locked(path: Path, mode: str, lock: int):
    """``path`` opened in binary ``mode`` under ``flock(lock)``; the lock goes with the file on close."""
    with open(path, mode) as f:
        fcntl.flock(f.fileno(), lock)
        yield f


def _header_error(path: Path, first: str, header: str) -> MfrbenchError:
    if first and header.startswith(first):
        return DamagedFileError(f"{path}:1: the header is truncated: restore the header line (the column order is "
                                "in results/README.md) or move the file aside")
    return MfrbenchError(f"{path} has a different header (an older schema?); it is never rewritten: move it "
                         "aside or pass another --results folder")


def _append(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Append ``rows`` to ``path`` under an exclusive lock; the header only into an empty file."""
    unknown = sorted({k for r in rows for k in r} - set(columns))
    if unknown:
        raise ValueError(f"Expected result columns from {path.name}'s schema, but got unknown {unknown}")
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ",".join(columns)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    with _locked(path, "a+b", fcntl.LOCK_EX) as f:
        size = os.fstat(f.fileno()).st_size  # under the lock: another appender cannot be between this and the write
        lead = ""
        if size == 0:
            lead = header + "\n"
        else:
            f.seek(0)
            first = f.readline().decode("utf-8", "replace").rstrip("\r\n")
            if first != header:
                raise _header_error(path, first, header)
            f.seek(size - 1)
            if f.read(1) != b"\n":  # a writer died mid-row: start on a fresh line, the damaged one stays visible
                lead = "\n"
        f.seek(0, os.SEEK_END)
        # One write of whole lines: a reader or a later appender never sees half of this call's rows glued on.
        f.write((lead + buf.getvalue()).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def _check_cell(value: str, kind: type) -> bool:
    if value == "" or kind is str:
        return True
    if kind is bool:
        return value in ("true", "false", "True", "False")
    try:
        float(value) if kind is float else int(value)
    except ValueError:
        return False
    return True


def _checked_text(path: Path, columns: list[str]) -> str:
    """The text of a store table, read under a shared lock, with every line checked.

    Raises:
        DamagedFileError: naming the file and the first damaged line (truncated, wrong field count, a cell of the
            wrong type, bytes that are not text).
    """
    with _locked(path, "rb", fcntl.LOCK_SH) as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DamagedFileError(f"{path}:{line}: not text (garbage appended?): delete that line; the rows before it "
                               "are intact") from err
    fix = "fix or delete that line; the other rows are intact"
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        first = next(reader, [])
        if first != columns:
            raise _header_error(path, ",".join(first), ",".join(columns))
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) != len(columns):
                raise DamagedFileError(f"{path}:{line}: {len(row)} fields, expected {len(columns)} (a truncated or "
                                       f"damaged row): {fix}")
            bad = next((c for c, v in zip(columns, row) if not _check_cell(v, _TYPES.get(c, str))), None)
            if bad is not None:
                raise DamagedFileError(f"{path}:{line}: column {bad} holds {row[columns.index(bad)][:40]!r}, "
                                       f"not a {_TYPES[bad].__name__}: {fix}")
    except csv.Error as err:
        raise DamagedFileError(f"{path}:{reader.line_num}: not CSV ({err}): {fix}") from err
    if text and not text.endswith("\n"):
        raise DamagedFileError(f"{path}:{max(reader.line_num, 1)}: the last row is truncated (no line end; a "
                               f"writer stopped mid-row): {fix}")
    return text


def _as_dict(row: object) -> dict:
    """A row given as a dict or as a row dataclass (its ``None`` fields are empty cells)."""
    if is_dataclass(row) and not isinstance(row, type):
        return {f.metadata["column"]: getattr(row, f.name) for f in fields(row) if getattr(row, f.name) is not None}
    return dict(row)  # type: ignore[call-overload]


def _check_kind(row: dict) -> None:
    """A row of a known kind holds only its row class's columns (an eval row has no ``ssim``, ...)."""
    cls = ROW_CLASSES.get(row.get("kind"))
    if cls is not None:
        unknown = sorted(set(row) - set(row_columns(cls)))
        if unknown:
            raise ValueError(f"Expected {cls.__name__} columns in a kind={row['kind']!r} row, but got unknown "
                             f"{unknown}")


def append_row(results_dir: str | os.PathLike, row: "dict | EvalRow | QualityRow",
               breakdown: "list[dict | BreakdownRow] | None" = None) -> Path:
    """Append one row (and its breakdown rows) to the store; return the ``evals.csv`` path.

    Rows are dicts or row dataclasses (:class:`EvalRow`, :class:`QualityRow`, :class:`BreakdownRow`);
    a column outside the row's kind or the file's schema is an error, never a silent new column.
    """
    row = _as_dict(row)
    _check_kind(row)
    _, path, bd = store_paths(results_dir)
    # The breakdown first: a kill between the two appends leaves orphan breakdown rows, never an eval row whose
    # breakdown is missing.
    if breakdown:
        _append(bd, BREAKDOWN_COLUMNS, [{"eval_id": row["eval_id"], **_as_dict(b)} for b in breakdown])
    _append(path, COLUMNS, [row])
    return path


def read_results(results_dir: str | os.PathLike, *, kind: str | None = None) -> pd.DataFrame:
    """All rows of ``evals.csv`` (empty frame with :data:`COLUMNS` when there is none)."""
    path = store_paths(results_dir)[1]
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    text = _checked_text(path, COLUMNS)
    df = pd.read_csv(io.StringIO(text), dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False, na_values=[""])
    for c in TEXT_COLUMNS:
        if c in df:
            df[c] = df[c].fillna("")
    if kind is not None:
        df = df[df["kind"] == kind].reset_index(drop=True)
    return df


def read_breakdown(results_dir: str | os.PathLike) -> pd.DataFrame:
    """All rows of ``breakdown.csv`` (empty frame with :data:`BREAKDOWN_COLUMNS` when there is none)."""
    path = store_paths(results_dir)[2]
    if not path.is_file():
        return pd.DataFrame(columns=BREAKDOWN_COLUMNS)
    return pd.read_csv(io.StringIO(_checked_text(path, BREAKDOWN_COLUMNS)), keep_default_na=False, na_values=[""])


def check_store(results_dir: str | os.PathLike) -> None:
    """Refuse, before any work, a store that an append would fail on or that a read would call damaged.

    ``eval`` and ``quality`` call it first, so a damaged store costs seconds, not an evaluation.
    """
    _, path, bd = store_paths(results_dir)
    for p, cols in ((path, COLUMNS), (bd, BREAKDOWN_COLUMNS)):
        if p.is_file() and p.stat().st_size:
            _checked_text(p, cols)


def merge_stores(sources: "list[str | os.PathLike]", dest: str | os.PathLike) -> Path:
    """Append every row of the stores ``sources`` (checked) to the store ``dest``, with their plots.

    ``mfrbench reproduce`` gives every evaluation stage a store of its own (a stage's output never
    changes once done) and builds the report's store from exactly the stages of the current plan, so
    a table never shows a row of an option that has since changed.
    """
    import shutil

    out_dir, out_evals, out_bd = store_paths(dest)
    out_dir.mkdir(parents=True, exist_ok=True)
    for src in sources:
        folder, evals, bd = store_paths(src)
        for path, cols, out in ((bd, BREAKDOWN_COLUMNS, out_bd), (evals, COLUMNS, out_evals)):
            if not path.is_file():
                continue
            lines = _checked_text(path, cols).splitlines(keepends=True)[1:]
            rows = list(csv.DictReader(io.StringIO("".join([",".join(cols) + "\n", *lines]), newline="")))
            if rows:
                _append(out, cols, rows)
        if (folder / "plots").is_dir():
            shutil.copytree(folder / "plots", out_dir / "plots", dirs_exist_ok=True)
    return out_evals
