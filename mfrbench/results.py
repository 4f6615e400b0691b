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
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from mfrbench.errors import MfrbenchError

EVALS = "evals.csv"
BREAKDOWN = "breakdown.csv"

#: Column order of ``evals.csv`` (documented in ``results/README.md``).
COLUMNS = [
    "eval_id", "kind", "time", "model", "model_path", "backbone", "loss", "embedding_dim", "train_data",
    "generator", "generator_family", "generator_hash", "config_hash", "benchmark", "protocol_id", "root", "metric", "flip", "gallery_rule",
    "n_genuine", "n_impostor", "n_duplicates", "acc", "acc_std", "acc_protocol", "ci_method",
    "tar_far_1e-4", "tar_far_1e-4_lo", "tar_far_1e-4_hi",
    "tar_far_1e-3", "tar_far_1e-3_lo", "tar_far_1e-3_hi",
    "tar_far_1e-2", "tar_far_1e-2_lo", "tar_far_1e-2_hi",
    "auc", "eer", "rank1", "rank1_lo", "rank1_hi", "rank5", "rank5_lo", "rank5_hi",
    "n_probes", "n_gallery_ids", "n_distractors", "coverage", "detect_rate", "fallback",
    "ssim", "psnr", "fid", "kid", "kid_std", "identity_cos", "n_images", "n_real", "quality_data", "quality_protocol", "nonmask_source",
    "notes", "roc_png", "cmc_png", "seconds", "tool_version",
]
BREAKDOWN_COLUMNS = ["eval_id", "benchmark", "subset", "n_genuine", "n_impostor", "acc", "acc_protocol",
                     "tar_far_1e-4", "tar_far_1e-3", "tar_far_1e-2", "auc", "n_probes", "rank1", "rank5"]


def store_paths(results: str | os.PathLike) -> tuple[Path, Path, Path]:
    """(folder, evals CSV, breakdown CSV) of a store given as a folder or as a ``.csv`` file.

    A folder holds ``evals.csv`` and ``breakdown.csv``; a file ``X.csv`` is the evals table
    itself, with ``X-breakdown.csv`` (and the plots and protocols) next to it.
    """
    p = Path(results)
    if p.suffix.lower() == ".csv":
        return p.parent, p, p.with_name(f"{p.stem}-breakdown.csv")
    return p, p / EVALS, p / BREAKDOWN


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


def _append(path: Path, columns: list[str], rows: list[dict]) -> None:
    unknown = sorted({k for r in rows for k in r} - set(columns))
    if unknown:
        raise ValueError(f"Expected result columns from {path.name}'s schema, but got unknown {unknown}")
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ",".join(columns)
    if path.exists() and path.stat().st_size:
        with open(path, encoding="utf-8") as f:
            first = f.readline().rstrip("\r\n")
        if first != header:
            raise MfrbenchError(f"{path} has a different header (an older schema?); it is never rewritten: move it "
                                "aside or pass another --results folder")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if not path.exists() or path.stat().st_size == 0:
        w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    # One write call in append mode: rows land whole, after whatever is already there.
    with open(path, "a", encoding="utf-8") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())


def append_row(results_dir: str | os.PathLike, row: dict, breakdown: list[dict] | None = None) -> Path:
    """Append one row (and its breakdown rows) to the store; return the ``evals.csv`` path."""
    _, path, bd = store_paths(results_dir)
    _append(path, COLUMNS, [row])
    if breakdown:
        _append(bd, BREAKDOWN_COLUMNS, [{"eval_id": row["eval_id"], **b} for b in breakdown])
    return path


def read_results(results_dir: str | os.PathLike, *, kind: str | None = None) -> pd.DataFrame:
    """All rows of ``evals.csv`` (empty frame with :data:`COLUMNS` when there is none)."""
    path = store_paths(results_dir)[1]
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    text = ("eval_id", "kind", "time", "model", "model_path", "backbone", "loss", "train_data", "generator",
            "config_hash", "benchmark", "protocol_id", "root", "metric", "acc_protocol", "fallback", "quality_data",
            "generator_family", "generator_hash", "ci_method", "quality_protocol", "nonmask_source",
            "notes", "roc_png", "cmc_png", "tool_version", "gallery_rule")
    df = pd.read_csv(path, dtype={c: str for c in text}, keep_default_na=False, na_values=[""])
    for c in text:
        if c in df:
            df[c] = df[c].fillna("")
    if kind is not None:
        df = df[df["kind"] == kind].reset_index(drop=True)
    return df


def read_breakdown(results_dir: str | os.PathLike) -> pd.DataFrame:
    path = store_paths(results_dir)[2]
    if not path.is_file():
        return pd.DataFrame(columns=BREAKDOWN_COLUMNS)
    return pd.read_csv(path, keep_default_na=False, na_values=[""])
