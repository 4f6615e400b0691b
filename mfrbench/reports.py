"""``mfrbench report``: the paper's Table II and Table III (and our Table I) from the results store.

* **Table II** (rows: training-data generator x loss; columns Acc, TAR@FAR=1e-3, Rank-5) on
  one benchmark (default ``rmfrd``, as the paper). The paper's rows (MTF, IAMGAN, MFGAN x
  Softmax, Triplet, CosFace, ArcFace) are always listed; other (generator, loss) pairs found in
  the store follow them.
* **Table III** (rows: CycleGAN, MFGAN w/o L_inv, w/o lambda_cor, w/o L_sty, full MFGAN;
  columns Acc, TAR@FAR=1e-3, Rank-5 of a recognizer with one loss (default ArcFace) trained on
  each generator's data, and SSIM, PSNR, FID of the generated data from ``mfrbench quality``).
* **Table I** (ours: the paper's is illegible): generation quality of every generator (SSIM, PSNR,
  FID, KID, identity cosine, correct-wearing share), for the HTML report (:mod:`mfrbench.report_html`).

Rows are matched on the generator identity the results store carries (``generator`` = the
variant/preset, ``generator_family``; :mod:`mfrbench.generate`), exactly: Table II's MFGAN row takes
only ``mfgan`` rows (family ``mfgan``), never an ablation (``mfgan-no-inv``, ...); each Table III row
takes its own variant's eval and quality rows. A cell holds the **latest** matching row (by time);
the table names the row it came from (``eval_id``, the recognizer run, the quality row) and the
accuracy protocol of each cell. Missing cells stay empty and are listed under the table, never
filled in. The best value per column is marked (bold in Markdown and
LaTeX, ``best_in`` in the CSV). ``with_paper=True`` adds the published values side by side
(from ``../shared/reference/mfgan-paper.txt``, copied into :data:`PAPER_TABLE2` /
:data:`PAPER_TABLE3`). Rates are shown in percent; the CSVs keep fractions.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mfrbench.results import read_breakdown, read_results, tar_col

LOSSES = [("softmax", "Softmax"), ("triplet", "Triplet"), ("cosface", "CosFace"), ("arcface", "ArcFace")]
#: Table II rows: (family, variant, label). A row matches a store row whose generator identity is exactly this.
T2_GENERATORS = [("mtf", "mtf", "MTF"), ("iamgan", "iamgan", "IAMGAN"), ("mfgan", "mfgan", "MFGAN")]
#: Table III rows: (family, variant, label); the full MFGAN is variant ``mfgan`` only.
T3_VARIANTS = [("cyclegan", "cyclegan", "CycleGAN"), ("mfgan", "mfgan-no-inv", "w/o L_inv"),
               ("mfgan", "mfgan-no-cor", "w/o λ_cor"), ("mfgan", "mfgan-no-sty", "w/o L_sty"),
               ("mfgan", "mfgan-plain", "w/o compositing (ours)"), ("mfgan", "mfgan", "All (MFGAN)")]
TAR = tar_col(1e-3)  # the paper's TAR@FAR=1e-3 column

#: Paper Table II (Mask-CelebA training data, RMFRD test): (generator, loss) -> (Acc, TAR@FAR=1e-3, Rank-5), in %.
PAPER_TABLE2 = {
    ("mtf", "softmax"): (77.2, 65.1, 61.2), ("mtf", "triplet"): (77.8, 66.2, 64.6),
    ("mtf", "cosface"): (78.4, 67.9, 66.5), ("mtf", "arcface"): (78.5, 67.9, 66.3),
    ("iamgan", "softmax"): (82.1, 69.2, 75.1), ("iamgan", "triplet"): (83.2, 70.4, 77.1),
    ("iamgan", "cosface"): (83.6, 71.5, 72.9), ("iamgan", "arcface"): (83.7, 71.6, 73.1),
    ("mfgan", "softmax"): (89.2, 75.9, 80.3), ("mfgan", "triplet"): (90.1, 76.7, 82.8),
    ("mfgan", "cosface"): (90.4, 78.1, 78.1), ("mfgan", "arcface"): (90.9, 78.4, 78.9),
}
#: Paper Table III: variant -> (Acc %, TAR@FAR=1e-3 %, Rank-5 %, SSIM, PSNR dB, FID).
PAPER_TABLE3 = {
    "cyclegan": (76.3, 64.8, 65.7, 0.723, 18.42, 64.29),
    "mfgan-no-inv": (80.3, 68.5, 70.8, 0.747, 20.44, 58.46),
    "mfgan-no-cor": (85.4, 73.9, 76.3, 0.764, 23.31, 47.66),
    "mfgan-no-sty": (87.2, 75.3, 80.1, 0.813, 27.31, 25.98),
    "mfgan": (90.9, 78.4, 82.8, 0.838, 29.52, 21.73),
}

REC_COLS = [("acc", "Acc", True), (TAR, "TAR@FAR=1e-3", True), ("rank5", "Rank-5", True)]
QUAL_COLS = [("ssim", "SSIM", True), ("psnr", "PSNR", True), ("fid", "FID", False)]  # bool: higher is better

#: Our Table I rows (generation quality; the paper's own Table I is illegible in every copy, so it has no
#: paper values): every generator of Tables II and III, as (family, variant, label).
T1_GENERATORS = [T2_GENERATORS[0], T2_GENERATORS[1], T3_VARIANTS[0],
                 *[(f, v, f"MFGAN {lab}") for f, v, lab in T3_VARIANTS[1:-1]], T2_GENERATORS[2]]
T1_COLS = QUAL_COLS + [("kid", "KID", False), ("identity_cos", "identity cos", True),
                       ("correct_wearing", "correct wearing", True)]


def _of_generator(df: pd.DataFrame, family: str, variant: str) -> pd.DataFrame:
    """The rows whose generator identity is exactly (family, variant): no substring or prefix matching."""
    return df[(df["generator"] == variant) & (df["generator_family"] == family)]


def _latest(df: pd.DataFrame) -> pd.Series | None:
    if df.empty:
        return None
    return df.sort_values("time").iloc[-1]


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f


def _table(rows: list[dict], cols: list[tuple[str, str, bool]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    best = {c: set() for c, _, _ in cols}
    for c, _, higher in cols:
        vals = pd.to_numeric(df.get(c), errors="coerce") if c in df else pd.Series(dtype=float)
        if vals.notna().any():
            target = vals.max() if higher else vals.min()
            best[c] = set(df.index[vals == target])
    df["best_in"] = [";".join(c for c, _, _ in cols if i in best[c]) for i in df.index]
    return df


def _eval_source(r: pd.Series | None) -> dict:
    """Where a cell's recognizer numbers come from (empty when the cell is missing)."""
    keys = ("eval_id", "model", "model_path", "generator_hash", "acc_protocol")
    return {k: (str(r[k]) if r is not None and k in r.index else "") for k in keys}


def _unlabelled(rows: pd.DataFrame, variants: set[str]) -> list[str]:
    """Rows naming a table generator without its family: written before identity records; never matched."""
    old = rows[rows["generator"].isin(variants) & (rows["generator_family"] == "")]
    if old.empty:
        return []
    return [f"{len(old)} row(s) of generator(s) {sorted(set(old['generator']))} have no generator_family (written "
            "before generator identity records) and fill no cell: re-run train-fr / quality on regenerated data"]


def _store_frame(results: pd.DataFrame) -> pd.DataFrame:
    df = results.copy()
    for c in ("generator", "generator_family", "loss", "benchmark", "kind"):
        df[c] = df[c].fillna("").astype(str) if c in df else ""
    return df


def build_table2(results: pd.DataFrame, *, benchmark: str = "rmfrd") -> tuple[pd.DataFrame, list[str]]:
    """Rows of Table II and the list of missing cells."""
    res = _store_frame(results)
    ev = res[(res["kind"] == "eval") & (res["benchmark"] == benchmark)].copy()
    ev["lossn"] = ev["loss"].str.lower()
    keys = [(f, v, lab, lo) for f, v, lab in T2_GENERATORS for lo, _ in LOSSES]
    known = {(f, v, lo) for f, v, _, lo in keys}
    found = {(f, v, lo) for f, v, lo in zip(ev["generator_family"], ev["generator"], ev["lossn"]) if f}
    extra = [(f, v, v, lo) for f, v, lo in sorted(found - known)]
    rows, missing = [], []
    for fam, var, label, lo in keys + extra:
        r = _latest(_of_generator(ev, fam, var)[lambda d: d.lossn == lo])
        row = {"generator": label, "loss": dict(LOSSES).get(lo, lo), "variant": var, "family": fam}
        if r is None:
            missing.append(f"{row['generator']} / {row['loss']}: no eval row on {benchmark}")
        for c in ("acc", "acc_std", TAR, tar_col(1e-3, "lo"), tar_col(1e-3, "hi"), "rank5", "rank5_lo", "rank5_hi",
                  "coverage"):
            row[c] = _num(r[c]) if r is not None else float("nan")
        row.update(_eval_source(r))
        row["paper_acc"], row[f"paper_{TAR}"], row["paper_rank5"] = PAPER_TABLE2.get((var, lo), (np.nan,) * 3)
        rows.append(row)
    return _table(rows, REC_COLS), missing + _unlabelled(ev, {v for _, v, _ in T2_GENERATORS})


def build_table3(results: pd.DataFrame, *, benchmark: str = "rmfrd", loss: str = "arcface"
                 ) -> tuple[pd.DataFrame, list[str]]:
    """Rows of Table III and the list of missing cells."""
    res = _store_frame(results)
    ev = res[(res["kind"] == "eval") & (res["benchmark"] == benchmark)]
    ev = ev[ev["loss"].str.lower() == loss]
    q = res[res["kind"] == "quality"]
    rows, missing = [], []
    for fam, var, label in T3_VARIANTS:
        r = _latest(_of_generator(ev, fam, var))
        qr = _latest(_of_generator(q, fam, var))
        row = {"variant": label, "generator": var, "family": fam}
        if r is None:
            missing.append(f"{label}: no {loss} eval row on {benchmark}")
        if qr is None:
            missing.append(f"{label}: no quality row")
        for c in ("acc", "acc_std", TAR, "rank5"):
            row[c] = _num(r[c]) if r is not None else float("nan")
        for c in ("ssim", "psnr", "fid", "kid", "identity_cos", "n_images"):
            row[c] = _num(qr[c]) if qr is not None else float("nan")
        row.update(_eval_source(r))
        row["quality_id"] = str(qr["eval_id"]) if qr is not None else ""
        row["quality_data"] = str(qr["quality_data"]) if qr is not None else ""
        row["quality_generator_hash"] = str(qr["generator_hash"]) if qr is not None else ""
        for c, v in zip(("paper_acc", f"paper_{TAR}", "paper_rank5", "paper_ssim", "paper_psnr", "paper_fid"),
                        PAPER_TABLE3.get(var, (float("nan"),) * 6)):  # our own rows have no paper value
            row[c] = v
        rows.append(row)
    variants = {v for _, v, _ in T3_VARIANTS}
    return _table(rows, REC_COLS + QUAL_COLS), missing + _unlabelled(pd.concat([ev, q]), variants)


def _unequal_n(df: pd.DataFrame) -> list[str]:
    """A caveat when FID/KID rows were measured at different N (FID is biased at small N: compare at equal N)."""
    sizes = {(int(a), int(b)) for a, b, f in zip(df["n_images"], df["n_real"], df["fid"])
             if not (math.isnan(f) or math.isnan(a) or math.isnan(b))}
    if len(sizes) < 2:
        return []
    return [f"FID/KID measured at unequal N (generated, real) = {sorted(sizes)}: compare only rows at equal N"]


def build_table1(results: pd.DataFrame, *, wearing: dict[str, tuple[float, str]] | None = None
                 ) -> tuple[pd.DataFrame, list[str]]:
    """Rows of our Table I (generation quality per generator) and the list of missing rows and caveats.

    Each row takes the latest ``kind=quality`` row of exactly its generator identity, as Table III
    does; generators found in the store beyond :data:`T1_GENERATORS` follow them. The results store
    has no correct-wearing column, so ``wearing`` (variant -> (share in [0, 1], where it came from))
    brings it in from the caller, who can read manifests and GAN read-outs.
    """
    q = _store_frame(results)
    q = q[q["kind"] == "quality"]
    known = {(f, v) for f, v, _ in T1_GENERATORS}
    found = sorted({(f, v) for f, v in zip(q["generator_family"], q["generator"]) if f} - known)
    rows, missing = [], []
    for fam, var, label in T1_GENERATORS + [(f, v, v) for f, v in found]:
        qr = _latest(_of_generator(q, fam, var))
        row = {"generator": label, "variant": var, "family": fam}
        if qr is None:
            missing.append(f"{label}: no quality row")
        for c in ("ssim", "psnr", "fid", "kid", "kid_std", "identity_cos", "n_images", "n_real"):
            row[c] = _num(qr[c]) if qr is not None else float("nan")
        for c in ("eval_id", "quality_data", "generator_hash", "nonmask_source", "quality_protocol", "model",
                  "config_hash"):
            row["quality_id" if c == "eval_id" else c] = str(qr[c]) if qr is not None and c in qr.index else ""
        row["correct_wearing"], row["wearing_source"] = (wearing or {}).get(var, (float("nan"), ""))
        rows.append(row)
    df = _table(rows, T1_COLS)
    return df, missing + _unequal_n(df) + _unlabelled(q, {v for _, v, _ in T1_GENERATORS})


# --------------------------------------------------------------------------- rendering
def _pct(v: float, std: float | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    s = f"{100 * v:.1f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        s += f" ± {100 * std:.1f}"
    return s


def _plain(v: float, digits: int) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _cells(row: pd.Series, table: str, with_paper: bool) -> list[tuple[str, str, bool]]:
    """(header, text, is_best) for each displayed cell of ``row``."""
    best = set(str(row["best_in"]).split(";"))
    out = [("Acc", _pct(row["acc"], row.get("acc_std")), "acc" in best),
           ("TAR@FAR=1e-3", _pct(row[TAR]), TAR in best),
           ("Rank-5", _pct(row["rank5"]), "rank5" in best)]
    if table == "table3":
        out += [("SSIM", _plain(row["ssim"], 3), "ssim" in best), ("PSNR (dB)", _plain(row["psnr"], 2), "psnr" in best),
                ("FID", _plain(row["fid"], 2), "fid" in best)]
    if with_paper:
        out += [("paper Acc", _plain(row["paper_acc"], 1), False),
                ("paper TAR@FAR=1e-3", _plain(row[f"paper_{TAR}"], 1), False),
                ("paper Rank-5", _plain(row["paper_rank5"], 1), False)]
        if table == "table3":
            out += [("paper SSIM", _plain(row["paper_ssim"], 3), False), ("paper PSNR", _plain(row["paper_psnr"], 2),
                                                                         False),
                    ("paper FID", _plain(row["paper_fid"], 2), False)]
    return out


def _keys(row: pd.Series, table: str) -> list[tuple[str, str]]:
    if table == "table2":
        return [("Generator", str(row["generator"])), ("Loss", str(row["loss"]))]
    return [("Method", str(row["variant"]))]


def _source_note(row: pd.Series, table: str) -> str:
    """One line naming the rows a table row's cells came from and the accuracy protocol of its Acc cell."""
    parts = []
    if row.get("eval_id"):
        run = row.get("model_path") or row.get("model") or "?"
        variant = row["generator"] if table == "table3" else row["variant"]  # table3's "variant" is its label
        parts.append(f"eval `{row['eval_id']}` (recognizer {run}; training-data generator `{variant}` "
                     f"family `{row['family']}` hash `{row.get('generator_hash') or '-'}`); "
                     f"Acc protocol: {row.get('acc_protocol') or 'not stated'}")
    if table == "table3" and row.get("quality_id"):
        parts.append(f"quality `{row['quality_id']}` (set {row.get('quality_data') or '?'}, generator hash "
                     f"`{row.get('quality_generator_hash') or '-'}`)")
    return "; ".join(parts)


def to_markdown(df: pd.DataFrame, table: str, *, with_paper: bool, title: str, missing: list[str]) -> str:
    """The table with a Source column: ``[n]`` points to the note naming the cell's rows and Acc protocol."""
    lines = [f"## {title}", ""]
    heads = [h for h, _ in _keys(df.iloc[0], table)] + [h for h, _, _ in _cells(df.iloc[0], table, with_paper)]
    lines += ["| " + " | ".join(heads + ["Source"]) + " |", "|" + "---|" * (len(heads) + 1)]
    notes = []
    for _, r in df.iterrows():
        cells = [t for _, t in _keys(r, table)] + [f"**{t}**" if b and t else t for _, t, b in
                                                  _cells(r, table, with_paper)]
        note = _source_note(r, table)
        if note:
            notes.append(f"[{len(notes) + 1}] {note}")
        lines.append("| " + " | ".join(cells + [f"[{len(notes)}]" if note else ""]) + " |")
    lines += ["", "Rates in %, Acc as mean ± std over folds; **bold** = best measured value per column; empty = "
                  "not measured. Each cell holds the latest row of exactly that generator variant."]
    if notes:
        lines += ["", "Sources:", ""] + [f"- {n}" for n in notes]
    if missing:
        lines += ["", f"Missing cells ({len(missing)}):", ""] + [f"- {m}" for m in missing]
    return "\n".join(lines) + "\n"


def _tex_escape(s: str) -> str:
    return (s.replace("\\", "\\textbackslash{}").replace("&", "\\&").replace("%", "\\%").replace("_", "\\_")
            .replace("#", "\\#").replace("λ", "$\\lambda$").replace("±", "$\\pm$"))


def to_latex(df: pd.DataFrame, table: str, *, with_paper: bool, title: str) -> str:
    keys = _keys(df.iloc[0], table)
    cells = _cells(df.iloc[0], table, with_paper)
    spec = "l" * len(keys) + "r" * len(cells)
    out = ["\\begin{table}[t]", "\\centering", f"\\caption{{{_tex_escape(title)}}}", f"\\begin{{tabular}}{{{spec}}}",
           "\\hline", " & ".join(_tex_escape(h) for h, _ in keys + [(h, "") for h, _, _ in cells]) + " \\\\", "\\hline"]
    for _, r in df.iterrows():
        vals = [_tex_escape(t) for _, t in _keys(r, table)]
        vals += [("\\textbf{" + _tex_escape(t) + "}") if b and t else _tex_escape(t)
                 for _, t, b in _cells(r, table, with_paper)]
        out.append(" & ".join(vals) + " \\\\")
    out += ["\\hline", "\\end{tabular}", "\\end{table}"]
    return "\n".join(out) + "\n"


def _breakdown_md(results: pd.DataFrame, bd: pd.DataFrame, benchmark: str) -> str:
    if bd.empty:
        return ""
    ev = results[(results["kind"] == "eval")][["eval_id", "model", "generator", "loss"]]
    m = bd[bd["benchmark"] == benchmark].merge(ev, on="eval_id", how="left")
    if m.empty:
        return ""
    lines = [f"## Breakdown on {benchmark} (by pair type and mask type)", "",
             "| model | generator | loss | subset | genuine | impostor | Acc | Acc protocol | TAR@FAR=1e-3 | probes "
             "| Rank-1 | Rank-5 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in m.iterrows():
        n = lambda v: "" if pd.isna(v) else str(int(v))  # noqa: E731
        proto = "" if pd.isna(r["acc_protocol"]) else r["acc_protocol"]
        lines.append(f"| {r['model']} | {r['generator']} | {r['loss']} | {r['subset']} | "
                     f"{n(r['n_genuine'])} | {n(r['n_impostor'])} | {_pct(_num(r['acc']))} | {proto} | "
                     f"{_pct(_num(r[TAR]))} | {n(r['n_probes'])} | {_pct(_num(r['rank1']))} | "
                     f"{_pct(_num(r['rank5']))} |")
    return "\n".join(lines) + "\n"


def write_reports(results_dir: str | os.PathLike = "results", out_dir: str | os.PathLike | None = None, *,
                  benchmark: str = "rmfrd", loss: str = "arcface", with_paper: bool = False) -> dict:
    """Write ``table2``/``table3`` as CSV, Markdown and LaTeX; return paths and missing cells."""
    from mfrbench.imageio import atomic_write_bytes
    from mfrbench.results import store_paths

    res = read_results(results_dir)
    out = Path(out_dir) if out_dir else store_paths(results_dir)[0]
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"rows": len(res), "files": [], "missing": {}}
    for name, (df, missing), title in [
        ("table2", build_table2(res, benchmark=benchmark),
         f"Table II: recognizers trained on masked data from each generator, tested on {benchmark}"),
        ("table3", build_table3(res, benchmark=benchmark, loss=loss),
         f"Table III: MFGAN variants ({loss} recognizer on {benchmark}; image quality of the generated data)"),
    ]:
        paths = {ext: out / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
        atomic_write_bytes(paths["csv"], df.to_csv(index=False).encode())
        md = to_markdown(df, name, with_paper=with_paper, title=title, missing=missing)
        if name == "table2":
            md += "\n" + _breakdown_md(res, read_breakdown(results_dir), benchmark)
        atomic_write_bytes(paths["md"], md.encode())
        atomic_write_bytes(paths["tex"], to_latex(df, name, with_paper=with_paper, title=title).encode())
        report["files"] += [str(p) for p in paths.values()]
        report["missing"][name] = missing
        report[name] = df
    return report
