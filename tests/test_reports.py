"""The append-only results store and the Table II / Table III reports."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from click.testing import CliRunner

from mfrbench.cli import cli
from mfrbench.errors import MfrbenchError
from mfrbench.reports import PAPER_TABLE2, PAPER_TABLE3, build_table2, build_table3, write_reports
from mfrbench.results import (
    BREAKDOWN_COLUMNS,
    COLUMNS,
    FARS,
    EvalRow,
    QualityRow,
    append_row,
    read_results,
    row_columns,
    tar_col,
)

#: The family of each variant the tests use (what the masked manifest's identity record says).
FAMILY = {"mtf": "mtf", "iamgan": "iamgan", "cyclegan": "cyclegan", "mfgan": "mfgan", "mfgan-no-inv": "mfgan",
          "mfgan-no-cor": "mfgan", "mfgan-no-sty": "mfgan"}


def _row(eid, gen, loss, acc, tar, r5, *, bench="rmfrd", time="2026-01-01T00:00:00", kind="eval", **kw):
    base = {"eval_id": eid, "kind": kind, "time": time, "model": f"m-{eid}", "generator": gen,
            "generator_family": FAMILY.get(gen, gen), "generator_hash": f"h-{gen}"}
    if kind == "quality":
        return {**base, **kw}
    return {**base, "loss": loss, "benchmark": bench, "acc": acc, "acc_std": 0.01, "tar_far_1e-3": tar, "rank5": r5,
            "acc_protocol": "10-fold by probe identity", **kw}


def test_store_appends_and_keeps_nan(tmp_path):
    append_row(tmp_path, _row("a", "mtf", "arcface", 0.7, float("nan"), 0.5))
    append_row(tmp_path, _row("b", "mtf", "arcface", 0.8, 0.6, None))
    first = (tmp_path / "evals.csv").read_text().splitlines()
    assert first[0] == ",".join(COLUMNS) and len(first) == 3
    df = read_results(tmp_path)
    assert df.eval_id.tolist() == ["a", "b"]
    assert math.isnan(df["tar_far_1e-3"][0]) and math.isnan(df.rank5[1])  # NaN stays NaN, never 0
    append_row(tmp_path, _row("c", "mtf", "arcface", 0.9, 0.7, 0.6))
    assert (tmp_path / "evals.csv").read_text().splitlines()[:3] == first  # earlier rows untouched


def test_store_refuses_other_schema_and_unknown_columns(tmp_path):
    (tmp_path / "evals.csv").write_text("a,b\n1,2\n")
    with pytest.raises(MfrbenchError, match="different header"):
        append_row(tmp_path, _row("x", "mtf", "arcface", 0.7, 0.5, 0.5))
    assert (tmp_path / "evals.csv").read_text() == "a,b\n1,2\n"
    with pytest.raises(ValueError, match=r"unknown \['bogus'\]"):
        append_row(tmp_path / "new", {"eval_id": "y", "bogus": 1})


def test_row_classes_and_columns_come_from_one_far_list():
    """The TAR columns of evals.csv and breakdown.csv, and the row dataclasses, derive from FARS.

    Before issue 11 ``tar_far_1e-*`` was spelled out in five files, so a new FAR target had to be
    added in each (and evaluate's breakdown list could drift from the CSV schema)."""
    tars = [c for c in COLUMNS if c.startswith("tar_far_")]
    assert tars == [tar_col(f, b) for f in FARS for b in ("", "lo", "hi")]
    assert [c for c in BREAKDOWN_COLUMNS if c.startswith("tar_far_")] == [tar_col(f) for f in FARS]
    assert tar_col(1e-3, "lo") == "tar_far_1e-3_lo"
    assert set(row_columns(EvalRow)) | set(row_columns(QualityRow)) == set(COLUMNS)
    assert "ssim" not in row_columns(EvalRow) and "tar_far_1e-3" not in row_columns(QualityRow)


def test_store_takes_row_dataclasses_and_refuses_columns_of_another_kind(tmp_path):
    append_row(tmp_path, EvalRow(eval_id="a", kind="eval", time="t", generator="mtf", tar_far_1e_3=0.5))
    df = read_results(tmp_path)
    assert df.generator.tolist() == ["mtf"] and df["tar_far_1e-3"].tolist() == [0.5]
    with pytest.raises(ValueError, match=r"Expected EvalRow columns in a kind='eval' row, but got unknown \['ssim'\]"):
        append_row(tmp_path, {"eval_id": "b", "kind": "eval", "ssim": 0.9})


def test_table2_mfgan_cell_takes_the_full_mfgan_row_never_an_ablation():
    """Newer rows of an ablation and of mixed data must not fill Table II's MFGAN cell.

    Before issue 11 the report matched substrings of the ``generator`` field against a list, so a
    newer row of ``iamgan+mfgan`` data (label ``mfgan``) took the MFGAN cell, and ablation
    recognizers were recorded as ``mfgan`` in the first place (``name`` read before ``method``)."""
    res = pd.DataFrame([
        _row("full", "mfgan", "arcface", 0.90, 0.78, 0.79, time="2026-01-01T00:00:00"),
        _row("abl", "mfgan-no-inv", "arcface", 0.50, 0.40, 0.40, time="2026-03-01T00:00:00"),
        _row("mix", "iamgan+mfgan", "arcface", 0.60, 0.50, 0.50, time="2026-04-01T00:00:00",
             generator_family="iamgan+mfgan"),
        _row("nofam", "mfgan", "arcface", 0.10, 0.10, 0.10, time="2026-05-01T00:00:00", generator_family=""),
    ], columns=COLUMNS)
    t2, missing = build_table2(res, benchmark="rmfrd")
    cell = t2[(t2.generator == "MFGAN") & (t2.loss == "ArcFace")].iloc[0]
    assert cell.eval_id == "full" and cell.acc == 0.90
    others = t2[(t2.variant != "mfgan") & (t2.loss == "ArcFace")].set_index("variant")
    assert others.loc["mfgan-no-inv"].eval_id == "abl" and others.loc["iamgan+mfgan"].eval_id == "mix"
    assert any("have no generator_family" in m for m in missing)  # the pre-identity row fills nothing
    t3, _ = build_table3(res, benchmark="rmfrd")
    assert t3.set_index("generator").loc["mfgan"].eval_id == "full"
    assert t3.set_index("generator").loc["mfgan-no-inv"].eval_id == "abl"


def test_table2_latest_row_best_marked_missing_listed():
    res = pd.DataFrame([
        _row("old", "mfgan", "arcface", 0.50, 0.40, 0.40, time="2026-01-01T00:00:00"),
        _row("new", "mfgan", "arcface", 0.91, 0.78, 0.79, time="2026-02-01T00:00:00"),
        _row("m1", "mtf", "softmax", 0.77, 0.65, 0.90),
        _row("other", "mfgan", "arcface", 0.99, 0.99, 0.99, bench="lfw"),
    ], columns=COLUMNS)
    t2, missing = build_table2(res, benchmark="rmfrd")
    assert len(t2) == 12 and len(missing) == 10
    cell = t2[(t2.generator == "MFGAN") & (t2.loss == "ArcFace")].iloc[0]
    assert cell.eval_id == "new" and cell.acc == 0.91  # latest wins; other benchmarks ignored
    assert set(cell.best_in.split(";")) == {"acc", "tar_far_1e-3"}
    mtf = t2[(t2.generator == "MTF") & (t2.loss == "Softmax")].iloc[0]
    assert mtf.best_in == "rank5"
    empty = t2[(t2.generator == "IAMGAN") & (t2.loss == "Triplet")].iloc[0]
    assert math.isnan(empty.acc) and empty.eval_id == "" and "IAMGAN / Triplet: no eval row on rmfrd" in missing
    assert (cell.paper_acc, cell["paper_tar_far_1e-3"], cell.paper_rank5) == PAPER_TABLE2[("mfgan", "arcface")]


def test_table3_joins_eval_and_quality_rows():
    res = pd.DataFrame([
        _row("e1", "mfgan-no-sty", "arcface", 0.8, 0.7, 0.75),
        _row("e2", "mfgan-no-sty", "softmax", 0.9, 0.9, 0.9),  # other loss: not in Table III
        _row("q1", "mfgan-no-sty", "", None, None, None, kind="quality", ssim=0.8, psnr=27.0, fid=30.0),
        _row("q0", "mfgan", "", None, None, None, kind="quality", ssim=0.1, psnr=1.0, fid=99.0,
             time="2026-06-01T00:00:00"),  # newer, but the full MFGAN's: not the w/o L_sty row's
        _row("q2", "cyclegan", "", None, None, None, kind="quality", ssim=0.7, psnr=18.0, fid=60.0),
    ], columns=COLUMNS)
    t3, missing = build_table3(res, benchmark="rmfrd", loss="arcface")
    assert t3.variant.tolist() == ["CycleGAN", "w/o L_inv", "w/o λ_cor", "w/o L_sty", "w/o compositing (ours)",
                                   "All (MFGAN)"]
    sty = t3.set_index("generator").loc["mfgan-no-sty"]
    assert sty.eval_id == "e1" and sty.quality_id == "q1" and sty.ssim == 0.8 and sty.acc == 0.8
    assert "fid" not in sty.best_in.split(";") or sty.fid == 30.0
    cyc = t3.set_index("generator").loc["cyclegan"]
    assert math.isnan(cyc.acc) and cyc.fid == 60.0 and "CycleGAN: no arcface eval row on rmfrd" in missing
    assert "fid" in sty.best_in.split(";")  # lower FID is better
    assert sty.paper_fid == PAPER_TABLE3["mfgan-no-sty"][5]


def test_report_cli_writes_all_formats(tmp_path):
    append_row(tmp_path, _row("a", "mfgan", "arcface", 0.9, 0.7, 0.8))
    r = CliRunner().invoke(cli, ["report", "--results", str(tmp_path), "--out", str(tmp_path / "t"), "--with-paper"])
    assert r.exit_code == 0, r.output
    assert "table2: 12 rows, 1 with results, 11 missing cells" in r.output
    for name in ("table2", "table3"):
        for ext in ("csv", "md", "tex"):
            assert (tmp_path / "t" / f"{name}.{ext}").is_file()
    md = (tmp_path / "t" / "table2.md").read_text()
    assert "| MFGAN | ArcFace | **90.0 ± 1.0** | **70.0** | **80.0** | 90.9 | 78.4 | 78.9 | [1] |" in md
    assert ("- [1] eval `a` (recognizer m-a; training-data generator `mfgan` family `mfgan` hash `h-mfgan`); "
            "Acc protocol: 10-fold by probe identity") in md
    tex = (tmp_path / "t" / "table2.tex").read_text()
    assert "\\textbf{90.0 $\\pm$ 1.0}" in tex and "\\end{tabular}" in tex
    out = write_reports(tmp_path, tmp_path / "t2")
    assert "paper" not in (tmp_path / "t2" / "table2.md").read_text()
    assert len(out["missing"]["table3"]) == 11  # 6 rows x (eval, quality); the MFGAN ArcFace eval row fills one


def test_store_as_a_csv_file(tmp_path):
    from mfrbench.results import read_breakdown, store_paths

    f = tmp_path / "mine.csv"
    assert store_paths(f) == (tmp_path, f, tmp_path / "mine-breakdown.csv")
    append_row(f, _row("a", "mtf", "arcface", 0.7, 0.5, 0.5), [{"subset": "pair:x", "n_genuine": 3}])
    assert read_results(f).eval_id.tolist() == ["a"] and read_breakdown(f).subset.tolist() == ["pair:x"]
    r = CliRunner().invoke(cli, ["report", "--results", str(f)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "table2.csv").is_file()
