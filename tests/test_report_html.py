"""The HTML report (issue 13, point 5): one self-contained page of the whole results store.

The store is real (rows appended through :func:`mfrbench.results.append_row`, quality rows from
:func:`mfrbench.quality.run_quality` on masked sets that :func:`mfrbench.generate.generate_dataset`
wrote from synthetic aligned faces); only the eval rows' numbers are typed in, since a recognizer
run would cost minutes. The page is checked as a file (it parses, every image is local and
exists, nothing points at the network, every number names its row) and, when Debian's
``chromium`` is installed (``.ci/run`` installs it), as a browser sees it: it renders, shows no
console message, and every image loads.
"""

from __future__ import annotations

import html.parser
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mfrbench.cli import cli
from mfrbench.generate import GeneratedBatch, GeneratorIdentity, MaskGenerator, generate_dataset
from mfrbench.report_html import GRID, N_FACES, PAD, TILE, sample_keys, write_html_report
from mfrbench.reports import build_table1
from mfrbench.results import COLUMNS, append_row

HOSTILE = '<script>alert("x")</script>'  # a model name from the store, shown escaped


def _cli(*args) -> str:
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


class HalfMask(MaskGenerator):
    """Greys the lower half (the mask map says so); ``wearing`` goes into each row like mtf's drawn mode."""

    def __init__(self, family: str, variant: str, maps: str, run: str = "") -> None:
        self.family, self.variant, self.maps, self.run, self.name = family, variant, maps, run, variant

    def config(self) -> dict:
        return {"name": self.variant}

    def identity(self) -> GeneratorIdentity:
        return GeneratorIdentity(self.family, self.variant, f"hash-{self.variant}", run=self.run, maps=self.maps)

    def generate(self, images, landmarks, *, rng):
        out, h = images.copy(), images.shape[1]
        out[:, h // 2:] = 90 if self.family == "mtf" else 150
        maps = np.zeros(images.shape[:3], np.uint8)
        maps[:, h // 2:] = 1
        wear = ["correct" if i % 4 else "chin" for i in range(len(images))] if self.maps == "exact" else [""] * len(
            images)
        return GeneratedBatch(out, maps, [{"wearing": w} for w in wear])


def _lower_half(images: np.ndarray) -> np.ndarray:
    keep = np.ones(images.shape[:3], bool)
    keep[:, images.shape[1] // 2:] = False
    return keep


def _plot(path: Path) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (220, 160), "white")
    ImageDraw.Draw(img).line([(10, 150), (60, 40), (210, 10)], fill=(31, 119, 180), width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _eval(store: Path, eid: str, gen: str, fam: str, loss: str, acc: float, *, bench: str = "rmfrd", **kw) -> None:
    roc, cmc = store / "plots" / f"{eid}-roc.png", store / "plots" / f"{eid}-cmc.png"
    _plot(roc)
    _plot(cmc)
    row = {"eval_id": eid, "kind": "eval", "time": f"2026-01-0{len(eid) % 9 + 1}T00:00:00", "model": f"fr-{eid}",
           "model_path": f"/runs/fr-{eid}", "loss": loss, "train_data": f"/data/masked-{gen}", "generator": gen,
           "generator_family": fam, "generator_hash": f"hash-{gen}", "config_hash": f"cfg{eid}", "benchmark": bench,
           "protocol_id": f"p{bench[:3]}", "acc": acc, "acc_std": 0.01, "acc_protocol": "10-fold by identity",
           "ci_method": "identity bootstrap, 1000", "tar_far_1e-3": acc - 0.1, "tar_far_1e-3_lo": acc - 0.15,
           "tar_far_1e-3_hi": acc - 0.05, "rank5": acc - 0.05, "rank5_lo": acc - 0.08, "rank5_hi": acc - 0.02,
           "roc_png": str(roc), "cmc_png": str(cmc), **kw}
    breakdown = [{"subset": "pair:masked-unmasked", "n_genuine": 40, "n_impostor": 60, "acc": acc - 0.02},
                 {"subset": "pair:masked-masked", "n_genuine": 30, "n_impostor": 50, "acc": acc - 0.04},
                 {"subset": "mask:surgical", "n_genuine": 20, "n_impostor": 20, "acc": acc - 0.03, "rank5": 0.5}]
    append_row(store, row, [{**b, "benchmark": bench} for b in breakdown])


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """A store with eval rows on rmfrd and lfw-masked, quality rows of two generated sets, and their manifests."""
    from mfrbench.quality import run_quality

    d = tmp_path_factory.mktemp("html")
    _cli("synth", "--out", d / "syn", "--identities", "4", "--per-identity", "3", "--size", "112")
    _cli("align", "--dataset", "synthetic", "--root", d / "syn", "--out", d / "aligned", "--landmarker", "none")
    gan_run = d / "gan-run"
    gan_run.mkdir()
    (gan_run / "quality.json").write_text(json.dumps({"det_correct_wearing": 0.6}))
    store, sets = d / "results", {}
    for label, gen in (("MTF", HalfMask("mtf", "mtf", "exact")), ("MFGAN", HalfMask("mfgan", "mfgan", "seg",
                                                                                   str(gan_run)))):
        sets[label] = d / f"masked-{gen.variant}"
        generate_dataset(gen, sets[label], manifest=d / "aligned", seed=0, progress=False)
        run_quality(sets[label], results_dir=store, progress=False, nonmask_fn=_lower_half,
                    nonmask_source=None if gen.maps == "exact" else "seg:stand-in")
    _eval(store, "e-mtf", "mtf", "mtf", "arcface", 0.80)
    _eval(store, "e-mfgan", "mfgan", "mfgan", "arcface", 0.90, model=HOSTILE)
    _eval(store, "e-mfgan-sm", "mfgan", "mfgan", "softmax", 0.85, cmc_png="")  # no CMC written: listed
    _eval(store, "e-lfw", "mfgan", "mfgan", "arcface", 0.70, bench="lfw-masked", roc_png="/gone/e-lfw-roc.png")
    out = d / "report"
    page = write_html_report(store, out, benchmarks=["rmfrd", "lfw-masked", "mfr2"], generated=sets)
    return {"dir": d, "store": store, "sets": sets, "page": page, "out": out}


class _Tags(html.parser.HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: Path) -> _Tags:
    p = _Tags()
    p.feed(page.read_text(encoding="utf-8"))
    p.close()
    return p


def test_page_is_self_contained(study):
    """One file plus images/: no network, no scripts or stylesheets to fetch, every image local and present."""
    page, text = study["page"], study["page"].read_text(encoding="utf-8")
    assert page == study["out"] / "report.html"
    assert not re.search(r"https?://|//cdn|@import", text)
    p = _parse(page)
    names = [t for t, _ in p.tags]
    assert "script" not in names and "link" not in names and "iframe" not in names
    srcs = [a["src"] for t, a in p.tags if t == "img"]
    assert len(srcs) >= 1 + 2 * 3 + 1  # the grid, ROC + CMC of the rmfrd cells, lfw-masked's CMC
    for s in srcs:
        assert not Path(s).is_absolute() and s.startswith("images/") and (page.parent / s).is_file(), s
    ids = {a["id"] for _, a in p.tags if "id" in a}
    for t, a in p.tags:
        if t == "a" and a.get("href", "").startswith("#"):
            assert a["href"][1:] in ids, a["href"]  # every provenance link lands on a row
    assert HOSTILE not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text


def test_tables_hold_the_cells_with_cis_and_paper_values(study):
    text = study["page"].read_text(encoding="utf-8")
    rmfrd = text[text.index('id="bench-rmfrd"'):text.index('id="bench-lfw-masked"')]
    assert "Table II" in rmfrd and "Table III" in rmfrd
    assert ">90.0 ± 1.0</a>" in rmfrd and ">80.0 [75.0, 85.0]</a>" in rmfrd  # Acc ± std; TAR with its CI
    assert ">90.9</td>" in rmfrd and ">29.52</td>" in rmfrd  # paper Table II MFGAN/ArcFace Acc; Table III PSNR
    assert "IAMGAN / Softmax: no eval row on rmfrd" in rmfrd  # missing cells listed, not dropped
    lfw = text[text.index('id="bench-lfw-masked"'):text.index('id="bench-mfr2"')]
    assert ">70.0 ± 1.0</a>" in lfw and "no paper values here" in lfw and ">90.9</td>" not in lfw
    assert "mfr2: no eval rows in the store" in text  # a requested benchmark without rows is said so
    assert "By pair type" in rmfrd and "pair:masked-unmasked" in rmfrd and "mask:surgical" in rmfrd
    assert "MFGAN / Softmax: CMC plot of e-mfgan-sm not written by its evaluation" in text
    assert "/gone/e-lfw-roc.png" not in text or "lfw-masked plots" not in text  # found under the store's plots/


def test_table1_lists_every_generator_with_its_quality_row(study):
    from mfrbench.results import read_results

    text = study["page"].read_text(encoding="utf-8")
    t1 = text[text.index("id=table1"):text.index("id=samples")]
    assert "illegible" in t1
    q = read_results(study["store"], kind="quality").set_index("generator")
    for gen in ("mtf", "mfgan"):
        assert f">{q.loc[gen, 'ssim']:.3f}</a>" in t1 and f"quality row {q.loc[gen, 'eval_id']}" in t1
    assert ">60.0</td>" in t1 and "read-out" in t1  # the GAN run's Det read-out
    assert ">75.0</td>" in t1 and "drawn with wearing mode" in t1  # mtf: 3 of every 4 rows drawn 'correct'
    for label in ("IAMGAN: no quality row", "CycleGAN: no quality row", "MFGAN w/o L_inv: no quality row"):
        assert label in t1


def test_every_number_names_its_row(study):
    """Each cell's tooltip names run, config hash, generator hash, protocol and data; the row is in the table."""
    text = study["page"].read_text(encoding="utf-8")
    p = _parse(study["page"])
    titles = [a["title"] for t, a in p.tags if t == "td" and "title" in a and "row" in a["title"]]
    mine = [t for t in titles if "row e-mfgan |" in t]
    assert mine and all("run /runs/fr-e-mfgan" in t and "config cfge-mfgan" in t and "hash hash-mfgan" in t
                        and "protocol rmfrd-prmf" in t and "data /data/masked-mfgan" in t for t in mine)
    prov = text[text.index("id=provenance"):]
    for eid in ("e-mtf", "e-mfgan", "e-mfgan-sm", "e-lfw"):
        assert f'id="prov-{eid}"' in prov
    assert "identity bootstrap, 1000" in prov


def test_sample_grid_shows_the_same_faces_for_every_generator(study):
    from PIL import Image

    from mfrbench.report_html import _manifests

    frames, problems = _manifests(study["sets"])
    assert not problems and set(frames) == {"MTF", "MFGAN"}
    keys = sample_keys(frames, seed=0)
    assert len(keys) == N_FACES and keys == sample_keys(frames, seed=0) and keys != sample_keys(frames, seed=1)
    assert all(k in frames["MTF"].index and k in frames["MFGAN"].index for k in keys)
    text = study["page"].read_text(encoding="utf-8")
    assert ", ".join(keys) in text.replace("&#x27;", "'")
    with Image.open(study["out"] / "images" / GRID) as im:
        w, h = im.size
    assert (w, h) == (5 * (TILE + PAD) + PAD, N_FACES * (TILE + PAD) + PAD + 14)  # input + 2 x (output, map)


def test_table1_says_when_fid_was_measured_at_unequal_n():
    res = pd.DataFrame([{"eval_id": "q1", "kind": "quality", "time": "t", "generator": "mtf",
                         "generator_family": "mtf", "fid": 30.0, "n_images": 100, "n_real": 100},
                        {"eval_id": "q2", "kind": "quality", "time": "t", "generator": "mfgan",
                         "generator_family": "mfgan", "fid": 20.0, "n_images": 50, "n_real": 100}],
                       columns=COLUMNS).astype(object)  # object columns: no float NaN in the text columns
    t1, missing = build_table1(res, wearing={"mtf": (1.0, "by construction")})
    assert "FID/KID measured at unequal N (generated, real) = [(50, 100), (100, 100)]: compare only rows at " \
           "equal N" in missing
    row = t1.set_index("variant").loc["mtf"]
    assert row.correct_wearing == 1.0 and row.wearing_source == "by construction" and row.quality_id == "q1"
    assert t1.set_index("variant").loc["mfgan"].best_in == "fid" and math.isnan(row.ssim)


def test_report_cli_html(study, tmp_path):
    out = _cli("report", "--results", study["store"], "--out", tmp_path / "r", "--html", "--with-paper",
               "--generated", f"MTF={study['sets']['MTF']}")
    assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "images" / GRID).is_file()
    assert "report.html" in out and (tmp_path / "r" / "table2.md").is_file()
    bad = CliRunner().invoke(cli, ["report", "--results", str(study["store"]), "--html", "--generated", "MTF"])
    assert bad.exit_code != 0 and "Expected --generated LABEL=DIR, but got 'MTF'" in bad.output
    no_html = CliRunner().invoke(cli, ["report", "--results", str(study["store"]), "--generated", "A=b"])
    assert no_html.exit_code != 0 and "add --html" in no_html.output


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    return exe


def _browse(exe: str, url: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_chromium_renders_the_page_with_every_image(study, tmp_path):
    """Headless Chromium: a non-blank screenshot, no console message (the page has no script), no broken image."""
    from PIL import Image

    exe, page = _chromium(), study["page"]
    shot = tmp_path / "shot.png"
    run = _browse(exe, page.as_uri(), f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.is_file(), run.stderr[-2000:]
    assert not [ln for ln in run.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    with Image.open(shot) as im:
        px = np.asarray(im.convert("L"))
    assert px.std() > 10 and (px < 100).mean() > 0.002  # text and tables, not a blank page
    # The same page with a probe that counts images that did not load (in a copy: the report stays script-free).
    probe = ("<script>addEventListener('load',()=>{const b=[...document.images].filter(i=>!i.complete||"
             "i.naturalWidth===0).length;document.title='images '+document.images.length+' broken '+b;});</script>")
    check = page.with_name("check.html")
    check.write_text(page.read_text(encoding="utf-8").replace("</body>", probe + "</body>"), encoding="utf-8")
    try:
        dom = _browse(exe, check.as_uri(), "--dump-dom", "--virtual-time-budget=5000").stdout
    finally:
        check.unlink()
    title = re.search(r"<title>([^<]*)</title>", dom).group(1)
    n = len([a for t, a in _parse(page).tags if t == "img"])
    assert title == f"images {n} broken 0", title


def test_empty_store_says_what_is_missing_and_old_images_go(tmp_path):
    """No rows and an unreadable manifest: a page that says so; an earlier report's plots are removed."""
    (tmp_path / "o" / "images").mkdir(parents=True)
    (tmp_path / "o" / "images" / "roc-rmfrd-old.png").write_bytes(b"x")
    (tmp_path / "o" / "images" / "mine.png").write_bytes(b"x")  # not the report's: left alone
    page = write_html_report(tmp_path / "store", tmp_path / "o", generated={"X": tmp_path / "nope"})
    text = page.read_text(encoding="utf-8")
    assert "rmfrd: no eval rows in the store" in text and "X: no manifest at" in text
    assert "Table I: MTF: no quality row" in text
    assert sorted(p.name for p in (tmp_path / "o" / "images").iterdir()) == ["mine.png"]


def test_cells_with_saved_curves_share_one_roc_and_one_cmc_per_table_column(tmp_path):
    """Evaluations that saved their curves are drawn together (a curve per generator under one loss, and
    Table III's variants on theirs); a column with one cell lacking its curves falls back to each cell's
    own images, and an image of a cell the report no longer shows is removed."""
    from PIL import Image

    from mfrbench.evaluate import curves_path, save_curves

    store = tmp_path / "results"
    fpr = np.array([0.0, 1e-4, 1e-3, 1e-2, 1.0])
    for i, (eid, gen, loss) in enumerate([("a-mtf", "mtf", "arcface"), ("a-mfgan", "mfgan", "arcface"),
                                          ("a-noinv", "mfgan-no-inv", "arcface"), ("s-mtf", "mtf", "softmax"),
                                          ("s-mfgan", "mfgan", "softmax")]):
        _eval(store, eid, gen, "mfgan" if gen.startswith("mfgan") else "mtf", loss, 0.8 + i / 100)
        if eid != "s-mfgan":  # this softmax cell was evaluated before curves were saved
            save_curves(curves_path(store / "plots", eid), {"pair list": (fpr, np.minimum(1, fpr * 0 + 0.2 * i
                        + np.linspace(0, 0.5, 5)))}, "pair list", np.linspace(0.3, 0.6, 5))
    page = write_html_report(store, tmp_path / "out", benchmarks=["rmfrd"])
    text = page.read_text(encoding="utf-8")
    imgs = {p.name for p in (tmp_path / "out" / "images").iterdir()}
    assert {"roc-rmfrd-table-ii-arcface.png", "cmc-rmfrd-table-ii-arcface.png"} <= imgs, imgs
    assert any(n.startswith("roc-rmfrd-table-iii") for n in imgs), imgs
    assert "roc-rmfrd-a-mtf.png" not in imgs  # overlaid, so no image of its own
    assert {"roc-rmfrd-s-mtf.png", "roc-rmfrd-s-mfgan.png"} <= imgs  # softmax column: each cell's own plots
    roc = text[text.index("ROC · Table II, ArcFace"):]
    assert 'href="#' in roc[:roc.index("</figcaption>")] and "MFGAN" in roc[:roc.index("</figcaption>")]
    with Image.open(tmp_path / "out" / "images" / "roc-rmfrd-table-ii-arcface.png") as im:
        assert im.size[0] >= 400 and len(im.getcolors(1 << 16) or []) > 3  # a drawn figure, not a blank
