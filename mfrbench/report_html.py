"""``mfrbench report --html``: the whole study on one self-contained page.

:func:`write_html_report` writes ``report.html`` and an ``images/`` folder next to it. Nothing else
is needed to read it (no network, no scripts, the CSS inline, images by relative path), so the
folder can be committed, zipped or mailed and opened in any browser. The page holds:

* our **Table I** of generation quality for every generator (the paper's own Table I is illegible
  in every copy, so it has no paper values), from the store's ``kind=quality`` rows;
* a **sample grid**: the same 8 faces through every generator (input | output | mask map);
* per benchmark, **Table II** and **Table III** with their CIs and the paper's values side by side
  (the paper tests on RMFRD only, so its values stand next to ``rmfrd`` alone), one **ROC** (log-FAR)
  and one **CMC** figure per Table II column and for Table III with a curve per cell (drawn from the
  curves each evaluation saves; a column with an older evaluation shows each cell's own images), and
  the **breakdown** by pair type and mask type;
* the **provenance** of every number: each cell's tooltip names its row (eval id, recognizer run,
  config hash, generator hash, protocol, data) and links to the provenance table at the end.

The tables are :mod:`mfrbench.reports`' own frames (``build_table1/2/3``), never recomputed here, so
the page and the CSV/Markdown tables cannot disagree. Missing cells, benchmarks, plots and sample
faces are listed in words, never dropped, and every string from the store or a manifest is escaped.
"""

from __future__ import annotations

import html
import math
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from mfrbench import __version__
from mfrbench.reports import TAR, _num, _pct, _plain, build_table1, build_table2, build_table3
from mfrbench.results import now_iso, read_breakdown, read_results, store_paths

REPORT = "report.html"
IMAGES = "images"
GRID = "samples.jpg"  # a photo grid: JPEG is a quarter of the PNG (the committed report stays < 3 MB)
N_FACES = 8
#: The benchmark of the paper's Tables II and III; its values are shown next to this one only.
PAPER_BENCHMARK = "rmfrd"
_OURS = ("roc-", "cmc-", GRID)  # files in images/ this module writes (older ones of these are removed)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1250px;
padding:0 16px;color:#222;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:2px solid #ddd}
h3{font-size:16px;margin:20px 0 6px}.meta{color:#555;font-size:13px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px}th{background:#f2f2f2;text-align:left;vertical-align:bottom}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{font-weight:700}td.paper{color:#666;background:#fafafa}td.none{color:#bbb;text-align:center}
td a{color:inherit;text-decoration:none;border-bottom:1px dotted #999}
.missing{color:#8a4b00}.missing li{margin:1px 0}figure{display:inline-block;margin:4px 8px 12px 0}
figcaption{font-size:12px;color:#555;max-width:560px}img{border:1px solid #ddd}
table.prov td{font-size:12px;word-break:break-all;max-width:260px}nav a{margin-right:12px}
"""


def _e(v) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _anchor(eval_id: str) -> str:
    return "prov-" + re.sub(r"[^A-Za-z0-9_-]", "_", eval_id)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s)


def _missing_html(lines: Iterable[str], what: str) -> str:
    lines = list(lines)
    if not lines:
        return ""
    items = "".join(f"<li>{_e(m)}</li>" for m in lines)
    return f'<div class="missing"><b>{_e(what)} ({len(lines)}):</b><ul>{items}</ul></div>'


class _Provenance:
    """The store's rows by ``eval_id``; remembers each row a cell used, for the provenance table."""

    FIELDS = [("eval_id", "row"), ("kind", "kind"), ("time", "time"), ("benchmark", "benchmark"),
              ("model", "model"), ("model_path", "run"), ("config_hash", "config hash"),
              ("generator", "generator"), ("generator_family", "family"), ("generator_hash", "generator hash"),
              ("protocol", "protocol"), ("data", "data"), ("method", "method"), ("tool_version", "mfrbench"),
              ("notes", "notes")]

    def __init__(self, results: pd.DataFrame) -> None:
        self.rows = {str(r["eval_id"]): r for _, r in results.iterrows()}
        self.used: dict[str, None] = {}

    def fields(self, eval_id: str) -> dict[str, str]:
        r = self.rows[eval_id]
        g = lambda c: "" if c not in r.index or pd.isna(r[c]) else str(r[c])  # noqa: E731
        quality = g("kind") == "quality"
        method = ([f"non-mask: {g('nonmask_source')}" if g("nonmask_source") else "", g("quality_protocol")]
                  if quality else [g("acc_protocol"), g("ci_method")])
        return {**{c: g(c) for c, _ in self.FIELDS},
                "protocol": f"{g('benchmark')}-{g('protocol_id')}" if g("protocol_id") else "",
                "data": g("quality_data") if quality else g("train_data"),
                "method": "; ".join(x for x in method if x)}

    def title(self, eval_id: str) -> str:
        f = self.fields(eval_id)
        return (f"{f['kind']} row {eval_id} | run {f['model_path'] or f['model'] or '-'} | config "
                f"{f['config_hash'] or '-'} | generator {f['generator']} ({f['generator_family']}) hash "
                f"{f['generator_hash'] or '-'} | protocol {f['protocol'] or '-'} | data {f['data'] or '-'}")

    def cell(self, text: str, eval_id: str, *, best: bool = False) -> str:
        """A number's ``<td>``: its tooltip names the row, its link goes to the row's provenance entry."""
        if not text:
            return '<td class="none" title="not measured">&ndash;</td>'
        if not eval_id or eval_id not in self.rows:
            return f'<td class="num">{_e(text)}</td>'
        self.used[eval_id] = None
        cls = "num best" if best else "num"
        return (f'<td class="{cls}" title="{_e(self.title(eval_id))}"><a href="#{_anchor(eval_id)}">'
                f"{_e(text)}</a></td>")

    def table(self) -> str:
        heads = "".join(f"<th>{_e(h)}</th>" for _, h in self.FIELDS)
        body = []
        for eid in self.used:
            f = self.fields(eid)
            body.append(f'<tr id="{_anchor(eid)}">' + "".join(_long_td(f[c]) for c, _ in self.FIELDS) + "</tr>")
        if not body:
            return "<p>No table cell holds a measured number yet.</p>"
        return f'<table class="prov"><tr>{heads}</tr>{"".join(body)}</table>'


def _long_td(text: str, limit: int = 90) -> str:
    """A cell of free text cut to ``limit`` characters; the whole text is its tooltip."""
    if len(text) <= limit:
        return f"<td>{_e(text)}</td>"
    return f'<td title="{_e(text)}">{_e(text[:limit])}&hellip;</td>'


def _table(heads: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in heads)
    return f"<table><tr>{head}</tr>" + "".join(f"<tr>{''.join(r)}</tr>" for r in rows) + "</table>"


def _td(text: str, cls: str = "") -> str:
    return f'<td class="{cls}">{_e(text)}</td>' if cls else f"<td>{_e(text)}</td>"


def _paper_td(v, digits: int) -> str:
    return f'<td class="num paper" title="published value">{_e(_plain(_num(v), digits))}</td>'


def _with_ci(row: pd.Series, prov: _Provenance, col: str) -> str:
    """``v [lo, hi]`` in percent; the CI ends come from the table frame or, if it lacks them, the cell's row."""
    src = prov.rows.get(str(row.get("eval_id") or ""))

    def get(c: str) -> float:
        if c in row.index:
            return _num(row[c])
        return _num(src[c]) if src is not None and c in src.index else float("nan")

    v, lo, hi = get(col), get(f"{col}_lo"), get(f"{col}_hi")
    text = _pct(v)
    if text and not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{_pct(lo)}, {_pct(hi)}]"
    return text


# --------------------------------------------------------------------------- Tables II and III
def _rec_heads(paper: bool) -> list[str]:
    heads = []
    for h in ("Acc (± std)", "TAR@FAR=1e-3 [95% CI]", "Rank-5 [95% CI]"):
        heads += [h, f"paper {h.split(' ')[0]}"] if paper else [h]
    return heads


def _rec_cells(row: pd.Series, prov: _Provenance, paper: bool) -> list[str]:
    best = set(str(row["best_in"]).split(";"))
    eid = str(row.get("eval_id") or "")
    out = []
    for col, text in (("acc", _pct(row["acc"], row.get("acc_std"))), (TAR, _with_ci(row, prov, TAR)),
                      ("rank5", _with_ci(row, prov, "rank5"))):
        out.append(prov.cell(text, eid, best=col in best))
        if paper:
            out.append(_paper_td(row[f"paper_{col}"], 1))
    return out


def _quality_cells(row: pd.Series, prov: _Provenance, paper: bool) -> list[str]:
    best = set(str(row["best_in"]).split(";"))
    out = []
    for col, digits in (("ssim", 3), ("psnr", 2), ("fid", 2)):
        out.append(prov.cell(_plain(_num(row[col]), digits), str(row.get("quality_id") or ""), best=col in best))
        if paper:
            out.append(_paper_td(row[f"paper_{col}"], digits))
    return out


def _paper_note(bench: str, with_paper: bool) -> str:
    if not with_paper:
        return ""
    if bench != PAPER_BENCHMARK:
        return f"<p class=meta>The paper reports these tables on {PAPER_BENCHMARK} only: no paper values here.</p>"
    return "<p class=meta>Grey columns: the paper's published values (percent; SSIM, PSNR dB, FID as printed).</p>"


def _table2_html(res: pd.DataFrame, prov: _Provenance, bench: str, with_paper: bool
                 ) -> tuple[str, list[str], dict[str, str]]:
    """Table II on ``bench``: (html, missing cells, eval_id -> row label of every filled cell)."""
    df, missing = build_table2(res, benchmark=bench)
    paper = with_paper and bench == PAPER_BENCHMARK
    rows = [[_td(r["generator"]), _td(r["loss"])] + _rec_cells(r, prov, paper) for _, r in df.iterrows()]
    used = {str(r["eval_id"]): f"{r['generator']} / {r['loss']}" for _, r in df.iterrows() if r["eval_id"]}
    out = (f"<h3>Table II: recognizers trained on each generator's masked data, tested on {_e(bench)}</h3>"
           + _paper_note(bench, with_paper) + _table(["Generator", "Loss"] + _rec_heads(paper), rows)
           + _missing_html(missing, "Missing cells"))
    return out, missing, used


def _table3_html(res: pd.DataFrame, prov: _Provenance, bench: str, loss: str, with_paper: bool
                 ) -> tuple[str, list[str], dict[str, str]]:
    """Table III on ``bench``: (html, missing cells, eval_id -> row label of every filled recognizer cell)."""
    df, missing = build_table3(res, benchmark=bench, loss=loss)
    paper = with_paper and bench == PAPER_BENCHMARK
    heads = ["Method"] + _rec_heads(paper)
    for h in ("SSIM", "PSNR (dB)", "FID"):
        heads += [h, f"paper {h.split(' ')[0]}"] if paper else [h]
    rows = [[_td(r["variant"])] + _rec_cells(r, prov, paper) + _quality_cells(r, prov, paper)
            for _, r in df.iterrows()]
    used = {str(r["eval_id"]): f"{r['variant']} ({loss})" for _, r in df.iterrows() if r["eval_id"]}
    out = (f"<h3>Table III: MFGAN ablations ({_e(loss)} recognizer on {_e(bench)}; quality of the generated data)"
           "</h3>" + _paper_note(bench, with_paper) + _table(heads, rows) + _missing_html(missing, "Missing cells"))
    return out, missing, used


# --------------------------------------------------------------------------- Table I
def _table1_html(res: pd.DataFrame, prov: _Provenance, wearing: dict[str, tuple[float, str]]
                 ) -> tuple[str, list[str]]:
    df, missing = build_table1(res, wearing=wearing)
    heads = ["Generator", "SSIM (non-mask)", "PSNR (dB, non-mask)", "FID", "KID (± std)", "identity cos",
             "correct wearing", "N generated / real", "non-mask region from"]
    rows = []
    for _, r in df.iterrows():
        best, qid = set(str(r["best_in"]).split(";")), str(r["quality_id"])
        kid = _plain(r["kid"], 4) + (f" ± {_plain(r['kid_std'], 4)}" if _plain(r["kid"], 4) and
                                     _plain(r["kid_std"], 4) else "")
        n = "" if math.isnan(r["n_images"]) else f"{int(r['n_images'])} / " + (
            "-" if math.isnan(r["n_real"]) else str(int(r["n_real"])))
        cells = [prov.cell(t, qid, best=c in best) for c, t in (
            ("ssim", _plain(r["ssim"], 3)), ("psnr", _plain(r["psnr"], 2)), ("fid", _plain(r["fid"], 2)),
            ("kid", kid), ("identity_cos", _plain(r["identity_cos"], 3)))]
        share = _pct(r["correct_wearing"])
        wear = (f'<td class="num{" best" if "correct_wearing" in best else ""}" title="{_e(r["wearing_source"])}">'
                f"{_e(share)}</td>") if share else '<td class="none" title="not measured">&ndash;</td>'
        rows.append([_td(r["generator"])] + cells + [wear, prov.cell(n, qid), _td(r["nonmask_source"])])
    note = ("<p class=meta>Ours alone: the paper's own Table I is illegible in every copy, so there are no paper "
            "values to set beside it. SSIM/PSNR on the non-mask area of input vs output; FID/KID against real "
            "masked faces (compare only at equal N); correct wearing in percent (hover for its source).</p>")
    return ("<h2 id=table1>Table I: generation quality</h2>" + note + _table(heads, rows)
            + _missing_html(missing, "Missing rows and caveats")), missing


# --------------------------------------------------------------------------- sample grid
TILE, PAD = 112, 2


def _manifests(generated: dict[str, str | os.PathLike]) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The ok rows of each generator's masked manifest, by key (``abs_map_path`` added); unreadable ones listed."""
    from mfrbench.errors import MfrbenchError
    from mfrbench.manifest import read_manifest, resolve_manifest_path

    frames, problems = {}, []
    for label, folder in generated.items():
        try:
            df = read_manifest(folder, status="ok")
            base = resolve_manifest_path(folder).parent
        except MfrbenchError as err:
            problems.append(f"{label}: {err}")
            continue
        if "map_out_path" not in df.columns:
            problems.append(f"{label}: {folder} has no map_out_path column (not a masked manifest)")
            continue
        df["abs_map_path"] = [str(base / m) if m else "" for m in df["map_out_path"]]
        frames[label] = df[(df["abs_out_path"] != "") & (df["abs_map_path"] != "")].set_index("key", drop=False)
    return frames, problems


def sample_keys(frames: dict[str, pd.DataFrame], n: int = N_FACES, seed: int = 0) -> list[str]:
    """``n`` keys ok in every manifest, drawn with ``seed`` from the sorted common keys: the same faces each run."""
    if not frames:
        return []
    common = sorted(set.intersection(*(set(df.index) for df in frames.values())))
    pick = np.random.default_rng(seed).choice(len(common), size=min(n, len(common)), replace=False)
    return [common[i] for i in sorted(pick)]


def _load(path: str, problems: list[str], what: str, *, mask: bool = False) -> np.ndarray:
    """An RGB tile (a mask map as white-on-black); a grey tile, and a listed problem, when it cannot be read."""
    from PIL import Image

    from mfrbench.imageio import load_rgb

    try:
        if not mask:
            return load_rgb(path, min_side=1)
        m = np.asarray(Image.open(path))
        return ((m[..., 0] if m.ndim == 3 else m) > 0).astype(np.uint8) * 255  # 1 = mask pixel -> white
    except (OSError, ValueError) as err:
        problems.append(f"{what}: cannot read {path} ({type(err).__name__}); a grey tile stands in")
        return np.full((TILE, TILE, 3), 160, np.uint8)


def _with_header(grid: np.ndarray, labels: list[str]) -> np.ndarray:
    """The grid under a strip naming each column (ASCII: the bitmap font has no other glyphs)."""
    from PIL import Image, ImageDraw, ImageFont

    strip = 14
    img = Image.new("RGB", (grid.shape[1], grid.shape[0] + strip), "white")
    img.paste(Image.fromarray(grid), (0, strip))
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    for c, label in enumerate(labels):
        text = label.encode("ascii", "replace").decode()[:18]
        draw.text((PAD + c * (TILE + PAD) + 1, 1), text, fill=(0, 0, 0), font=font)
    return np.asarray(img)


def write_sample_grid(frames: dict[str, pd.DataFrame], out_png: Path, *, n: int = N_FACES, seed: int = 0
                      ) -> tuple[list[str], list[str]]:
    """The same ``n`` faces through every generator, one row per face: input | (output | mask map) per generator.

    Returns:
        (keys of the faces shown, problems to list on the page).
    """
    from mfrbench.imageio import save_image
    from mfrbench.viz import image_grid

    keys, problems = sample_keys(frames, n, seed), []
    if frames and len(keys) < n:
        problems.append(f"only {len(keys)} of {n} faces are ok in every generator's manifest")
    if not keys:
        return [], problems
    first = next(iter(frames.values()))
    tiles = []
    for k in keys:
        tiles.append(_load(first.loc[k, "src_path"], problems, f"input {k}"))
        for label, df in frames.items():
            tiles.append(_load(df.loc[k, "abs_out_path"], problems, f"{label} {k}"))
            tiles.append(_load(df.loc[k, "abs_map_path"], problems, f"{label} map {k}", mask=True))
    labels = ["input"] + [x for lab in frames for x in (lab, f"{lab} map")]
    save_image(out_png, _with_header(image_grid(tiles, cols=len(labels), size=TILE, pad=PAD), labels))
    return keys, problems


def _wearing(generated: dict[str, str | os.PathLike], frames: dict[str, pd.DataFrame]
             ) -> dict[str, tuple[float, str]]:
    """Correct-wearing share of each generated set, by variant, with its source.

    Generators with exact maps (mtf) draw the wearing mode, so their manifest's ``wearing`` column
    gives it by construction; a GAN's share is its run's Det read-out (``RUN/quality.json``
    ``det_correct_wearing``, on the run's own read-out sample). Otherwise there is none.
    """
    import json

    from mfrbench.errors import MfrbenchError
    from mfrbench.generate import read_generator_identity

    out: dict[str, tuple[float, str]] = {}
    for label, df in frames.items():
        try:
            ident = read_generator_identity(generated[label])
        except MfrbenchError:
            continue
        w = df["wearing"].astype(str) if "wearing" in df.columns else pd.Series(dtype=str)
        w = w[w != ""]
        readout = Path(ident.run) / "quality.json" if ident.run else None
        if ident.maps == "exact" and len(w):
            out[ident.variant] = (float((w == "correct").mean()),
                                  f"{label}: share of its {len(w)} outputs drawn with wearing mode 'correct'")
        elif readout is not None and readout.is_file():
            share = json.loads(readout.read_text()).get("det_correct_wearing")
            if isinstance(share, (int, float)):
                out[ident.variant] = (float(share), f"{label}: Det's wearing call on the run's read-out ({readout})")
    return out


def _samples_html(frames: dict[str, pd.DataFrame], problems: list[str], images: Path, seed: int,
                  written: set[str]) -> tuple[str, list[str]]:
    head = "<h2 id=samples>Samples: the same faces through every generator</h2>"
    if not frames:
        lines = problems + ["no generated manifests given (mfrbench report --html --generated LABEL=DIR)"]
        return head + _missing_html(lines, "No sample grid"), lines
    keys, more = write_sample_grid(frames, images / GRID, seed=seed)
    problems = problems + more
    if not keys:
        return head + _missing_html(problems, "No sample grid"), problems
    written.add(GRID)
    cols = " | ".join(["input"] + [f"{lab} | {lab} mask map" for lab in frames])
    return (head + f"<p class=meta>Columns: {_e(cols)}. Faces (manifest keys, drawn with seed {seed} from those ok "
            f"in every manifest): {_e(', '.join(keys))}.</p>"
            f'<img src="{IMAGES}/{GRID}" alt="sample grid" style="max-width:100%">'
            + _missing_html(problems, "Problems")), problems


# --------------------------------------------------------------------------- plots and breakdown
def _copy_plot(src: str, store_dir: Path, dest: Path) -> bool:
    """Copy an evaluation's plot as a 256-colour PNG (line plots look the same at a fraction of the bytes).

    A store merged by ``mfrbench reproduce`` keeps the plots under its own ``plots/``, so the file's
    name is looked up there when the path in the row no longer exists.
    """
    from PIL import Image

    for p in ([Path(src), store_dir / "plots" / Path(src).name] if src else []):
        if p.is_file():
            with Image.open(p) as im:
                im.convert("RGB").quantize(256).save(dest, optimize=True)
            return True
    return False


def _curves_of(prov: _Provenance, eid: str, store_dir: Path):
    """The saved curves of one evaluation, looked up beside its ROC image and under the store's ``plots/``."""
    from mfrbench.evaluate import curves_path, load_curves

    src = prov.rows[eid].get("roc_png")
    dirs = ([Path(str(src)).parent] if isinstance(src, str) and src else []) + [store_dir / "plots"]
    for d in dirs:
        p = curves_path(d, eid)
        if p.is_file():
            return load_curves(p)
    return None


def _overlay(kind: str, curves: dict[str, object], title: str, dest: Path) -> None:
    """One figure with a curve per cell (the way cells are compared), saved as a 256-colour PNG."""
    from PIL import Image

    from mfrbench.evaluate import FARS
    from mfrbench.viz import curve_figure

    tmp = dest.with_suffix(".tmp.png")
    curve_figure(kind, curves, title, tmp, fars=FARS, size=(5.6, 4.2), dpi=100, lw=1.2, ms=2.5, legend=7)
    with Image.open(tmp) as im:
        im.convert("RGB").quantize(256).save(dest, optimize=True)
    tmp.unlink()


def _overlay_html(prov: _Provenance, title: str, cells: dict[str, str], bench: str, store_dir: Path,
                  images: Path, written: set[str]) -> str | None:
    """ROC and CMC of a group of cells on one figure each; None when a cell has no saved curves (an
    evaluation made before they were saved), and the caller shows each cell's own plots instead."""
    loaded = {eid: _curves_of(prov, eid, store_dir) for eid in cells}
    if not cells or any(v is None for v in loaded.values()):
        return None
    figs = []
    for i, kind in enumerate(("roc", "cmc")):
        curves = {cells[e]: v[i] for e, v in loaded.items() if v[i] is not None}
        if not curves:
            continue
        name = f"{kind}-{_slug(bench)}-{re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-')}.png"
        _overlay(kind, curves, f"{bench} | {title}", images / name)
        written.add(name)
        links = ", ".join(f'<a href="#{_anchor(e)}">{_e(cells[e])}</a>' for e in cells if loaded[e][i] is not None)
        figs.append(f'<figure><img src="{IMAGES}/{_e(name)}" alt="{kind.upper()} {_e(title)}" width="480">'
                    f"<figcaption>{kind.upper()} · {_e(title)}: {links}</figcaption></figure>")
    return "".join(figs)


def _plots_html(prov: _Provenance, groups: list[tuple[str, dict[str, str]]], labels: dict[str, str], bench: str,
                store_dir: Path, images: Path, written: set[str]) -> tuple[str, list[str]]:
    """Per group of cells (a Table II column, Table III): one ROC and one CMC with a curve per cell
    (``labels``: each cell's full name, for the fallback to its own images)."""
    figs, missing, shown = [], [], set()
    for title, cells in groups:
        over = _overlay_html(prov, title, cells, bench, store_dir, images, written)
        if over is None:  # each cell's own images, once per page section
            over, miss = _cell_plots_html(prov, {e: labels[e] for e in cells if e not in shown}, bench, store_dir,
                                          images, written)
            missing += miss
            shown.update(cells)
        figs.append(f"<h4>{_e(title)}</h4>" + over)
    if not any(cells for _, cells in groups):
        return "<p>No evaluation fills a cell of these tables, so there is no curve to show.</p>", missing
    return "".join(figs) + _missing_html(missing, "Missing plots"), missing


def _cell_plots_html(prov: _Provenance, used: dict[str, str], bench: str, store_dir: Path, images: Path,
                     written: set[str]) -> tuple[str, list[str]]:
    """Each cell's own ROC and CMC images, as its evaluation drew them."""
    figs, missing = [], []
    for eid, label in used.items():
        row = prov.rows[eid]
        for kind in ("roc", "cmc"):
            src = "" if pd.isna(row.get(f"{kind}_png")) else str(row.get(f"{kind}_png") or "")
            name = f"{kind}-{_slug(bench)}-{_slug(eid)}.png"
            if not _copy_plot(src, store_dir, images / name):
                why = f"not found at {src}" if src else "not written by its evaluation"
                missing.append(f"{label}: {kind.upper()} plot of {eid} {why}")
                continue
            written.add(name)
            figs.append(f'<figure><img src="{IMAGES}/{_e(name)}" alt="{kind.upper()} {_e(label)}" width="400">'
                        f'<figcaption>{kind.upper()} · {_e(label)} · <a href="#{_anchor(eid)}">{_e(eid)}</a>'
                        "</figcaption></figure>")
    return "".join(figs), missing


def _count(v) -> str:
    return "" if pd.isna(v) else str(int(v))


def _breakdown_html(bd: pd.DataFrame, prov: _Provenance, used: dict[str, str], bench: str) -> str:
    """The breakdown rows of the evaluations in the tables, by pair type, by mask type, then the others."""
    sub = bd[(bd["benchmark"].astype(str) == bench) & bd["eval_id"].astype(str).isin(used)].copy()
    if sub.empty:
        return "<p>No breakdown rows for the evaluations in these tables (one pair type and one mask type?).</p>"
    order = {e: i for i, e in enumerate(used)}
    sub = sub.assign(_o=sub["eval_id"].astype(str).map(order)).sort_values(["_o", "subset"], kind="stable")
    subset = sub["subset"].astype(str)
    pair, mask = subset.str.startswith("pair:"), subset.str.startswith(("mask:", "probe-mask:"))
    heads = ["Cell", "subset", "genuine", "impostor", "Acc", "TAR@FAR=1e-3", "AUC", "probes", "Rank-1", "Rank-5"]
    out = []
    for title, m in (("By pair type", pair), ("By mask type (of the masked side / probe)", mask),
                     ("Other subsets", ~(pair | mask))):
        rows = []
        for _, r in sub[m].iterrows():
            eid = str(r["eval_id"])
            vals = (_count(r["n_genuine"]), _count(r["n_impostor"]), _pct(_num(r["acc"])), _pct(_num(r[TAR])),
                    _plain(_num(r["auc"]), 3), _count(r["n_probes"]), _pct(_num(r["rank1"])),
                    _pct(_num(r["rank5"])))
            rows.append([_td(used[eid]), _td(r["subset"])] + [prov.cell(v, eid) for v in vals])
        if rows:
            out.append(f"<h4>{_e(title)}</h4>" + _table(heads, rows))
    return "".join(out)


# --------------------------------------------------------------------------- page
def _plot_groups(used2: dict[str, str], used3: dict[str, str], loss: str) -> list[tuple[str, dict[str, str]]]:
    """Table II's cells by loss (one figure compares the generators under one loss), then Table III's."""
    by_loss: dict[str, dict[str, str]] = {}
    for eid, label in used2.items():
        gen, _, name = label.partition(" / ")
        by_loss.setdefault(name, {})[eid] = gen
    groups = [(f"Table II, {name}", cells) for name, cells in by_loss.items()]
    if used3:
        groups.append((f"Table III ({loss})", {e: lab.rsplit(" (", 1)[0] for e, lab in used3.items()}))
    return groups


def _benchmark_section(res: pd.DataFrame, bd: pd.DataFrame, prov: _Provenance, bench: str, *, loss: str,
                       with_paper: bool, store_dir: Path, images: Path, written: set[str]) -> tuple[str, list[str]]:
    head = f'<h2 id="bench-{_slug(bench)}">Benchmark {_e(bench)}</h2>'
    if not ((res["kind"] == "eval") & (res["benchmark"].astype(str) == bench)).any():
        line = f"{bench}: no eval rows in the store (not measured; its data may be absent)"
        return head + _missing_html([line], "Not measured"), [line]
    t2, m2, used2 = _table2_html(res, prov, bench, with_paper)
    t3, m3, used3 = _table3_html(res, prov, bench, loss, with_paper)
    used = dict(used2)
    for k, v in used3.items():
        used.setdefault(k, v)
    plots, mp = _plots_html(prov, _plot_groups(used2, used3, loss), used, bench, store_dir, images, written)
    lines = [f"{bench} Table II: {m}" for m in m2] + [f"{bench} Table III: {m}" for m in m3] + \
            [f"{bench} plots: {m}" for m in mp]
    return (head + t2 + t3 + "<h3>ROC (log-FAR) and CMC, a curve per filled cell</h3>" + plots
            + f"<h3>Breakdown on {_e(bench)} by pair type and mask type</h3>" + _breakdown_html(bd, prov, used, bench)
            ), lines


def _benchmarks(res: pd.DataFrame, requested: Iterable[str] | None) -> list[str]:
    """The requested benchmarks, or every benchmark with eval rows (the paper's first)."""
    if requested is not None:
        return list(dict.fromkeys(requested))
    found = set(res.loc[res["kind"] == "eval", "benchmark"].astype(str)) - {"", "nan"}
    return sorted(found, key=lambda b: (b != PAPER_BENCHMARK, b)) or [PAPER_BENCHMARK]


def _summary(missing: list[str]) -> str:
    """Everything not measured, in one list folded under a count (each section lists its own again)."""
    if not missing:
        return "<p>Every cell of every table on this page is measured.</p>"
    return (f'<details class="missing"><summary><b>{len(missing)} cells, rows, plots or benchmarks not measured or '
            f"missing</b> (listed again under each table)</summary>{_missing_html(missing, 'All of them')}</details>")


def _page(results_dir, res: pd.DataFrame, sections: list[tuple[str, str, str]], missing: list[str],
          prov: _Provenance) -> str:
    n_eval, n_q = int((res["kind"] == "eval").sum()), int((res["kind"] == "quality").sum())
    nav = "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t, _ in sections) + '<a href="#provenance">Provenance</a>'
    meta = (f"<p class=meta>Results store {_e(results_dir)}: {n_eval} eval rows, {n_q} quality rows. Written "
            f"{_e(now_iso())} by mfrbench {_e(__version__)}. Rates in percent (Acc as mean ± std over folds, "
            "TAR and Rank-5 with 95 % identity-bootstrap CIs); bold = best measured value per column; &ndash; = "
            "not measured. Hover a number for the row it came from; click it for that row's provenance.</p>")
    return ("<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1"><title>mfrbench report</title>'
            f"<style>{CSS}</style></head><body><h1>mfrbench report</h1>{meta}<nav>{nav}</nav>"
            + _summary(missing)
            + "".join(s for _, _, s in sections)
            + "<h2 id=provenance>Provenance of every number</h2><p class=meta>One line per results row a cell "
              "uses: the recognizer run and its config hash, the training data's generator and its hash, the "
              "protocol folder under the store's protocols/, and the data.</p>" + prov.table()
            + "</body></html>\n")


def write_html_report(results_dir: str | os.PathLike = "results", out_dir: str | os.PathLike | None = None, *,
                      benchmarks: Iterable[str] | None = None, loss: str = "arcface",
                      generated: dict[str, str | os.PathLike] | None = None, with_paper: bool = True,
                      seed: int = 0) -> Path:
    """Write ``report.html`` and its ``images/`` folder; return the page's path.

    Args:
        results_dir: the results store (a folder holding ``evals.csv``, or an evals ``.csv`` file).
        out_dir: where ``report.html`` and ``images/`` go (default: the store's folder, as the tables).
        benchmarks: the benchmarks to report, in order (default: every one with eval rows, rmfrd
            first); one without rows gets a section saying it was not measured.
        loss: the recognizer loss of Table III.
        generated: generator label -> masked manifest folder (``mfrbench generate`` output), for the
            sample grid and the correct-wearing column; none: the page says there is no grid.
        with_paper: the paper's values next to ours (on rmfrd, the paper's benchmark, only).
        seed: which common faces the sample grid shows.
    """
    from mfrbench.imageio import atomic_write_bytes

    res, bd = read_results(results_dir), read_breakdown(results_dir)
    store_dir = store_paths(results_dir)[0]
    out = Path(out_dir) if out_dir else store_dir
    images = out / IMAGES
    images.mkdir(parents=True, exist_ok=True)
    prov, written = _Provenance(res), set()
    frames, problems = _manifests(generated or {})
    t1, missing = _table1_html(res, prov, _wearing(generated or {}, frames))
    missing = [f"Table I: {m}" for m in missing]
    samples, grid_missing = _samples_html(frames, problems, images, seed, written)
    sections = [("table1", "Table I", t1), ("samples", "Samples", samples)]
    missing += [f"samples: {m}" for m in grid_missing]
    for bench in _benchmarks(res, benchmarks):
        html_, lines = _benchmark_section(res, bd, prov, bench, loss=loss.lower(), with_paper=with_paper,
                                          store_dir=store_dir, images=images, written=written)
        sections.append((f"bench-{_slug(bench)}", bench, html_))
        missing += lines
    for p in images.iterdir():  # a plot of an earlier report's cell must not linger next to this one
        if p.name.startswith(_OURS) and p.name not in written:
            p.unlink()
    path = out / REPORT
    atomic_write_bytes(path, _page(results_dir, res, sections, missing, prov).encode("utf-8"))
    return path
