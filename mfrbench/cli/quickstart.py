"""``mfrbench quickstart``: the quick end-to-end pipeline.

It lives in the CLI layer because it chains the core with the plugins (the mtf generator, the
recognizer trainer), which the core never imports. It runs every stage of the suite, small, on
the shared data kit when present (else on the built-in synthetic faces, clearly labelled), and
writes everything under one folder:

1. ``align``: CelebA (in the wild) -> ArcFace 112x112 crops + manifest + grid;
2. ``generate --method mtf``: Masked-CelebA from the aligned crops (mixed mask styles, random
   wearing modes) + mask maps + grid;
3. ``train-fr``: ArcFace + MobileFaceNet (the CPU-friendly backbone) on aligned + masked CelebA, for a
   fixed time budget;
4. ``eval``: LFW (clean), LFW-masked and RMFRD with that model -> results store + ROC/CMC plots;
5. ``quality``: SSIM/PSNR (non-mask area) of the masked set, FID/KID against real masked photos;
6. ``report``: Table II / Table III from the results store (cells not run stay empty and are
   listed; this quick run fills one Table II cell: mtf x ArcFace).

Each stage is resumable (rerunning the command skips finished work). The numbers are those of
a minutes-long CPU run on a 960-image subset, not the paper's 450K-step GPU schedule.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

import click

from mfrbench.cli import cli
from mfrbench.errors import DataNotFoundError, MfrbenchError

log = logging.getLogger(__name__)


def _stage(echo: Callable[[str], None], name: str) -> float:
    echo(f"\n== {name}")
    return time.perf_counter()


def run_quickstart(out: str | Path, *, limit: int | None = None, workers: int = 2, train_minutes: float = 3.0,
                   seed: int = 0, echo: Callable[[str], None] = print) -> Path:
    """Run the pipeline into ``out``; return the path of ``REPORT.md``."""
    from mfrbench.align import align_dataset
    from mfrbench.cli.evaluate import protocol_kwargs
    from mfrbench.datasets import create_dataset
    from mfrbench.evaluate import EvalConfig, evaluate
    from mfrbench.generate import generate_dataset, save_sample_grid
    from mfrbench.generators.base import generator_factory
    from mfrbench.quality import run_quality
    from mfrbench.recognizers.config import TrainConfig
    from mfrbench.recognizers.train import train
    from mfrbench.reports import write_reports
    from mfrbench.reports_data import manifest_report
    from mfrbench.results import tar_col
    from mfrbench.viz import manifest_grid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results"
    times: dict[str, float] = {}
    report = ["# mfrbench quickstart", ""]

    t = _stage(echo, "1. align")
    try:
        ds, synthetic = create_dataset("celeba"), False
    except DataNotFoundError as err:
        echo(f"CelebA not found ({err}): using the built-in SYNTHETIC faces")
        ds, synthetic = create_dataset("synthetic", identities=40, per_identity=8, seed=seed), True
    aligned = out / f"{ds.name}-aligned"
    meta = align_dataset(ds, aligned, limit=limit, workers=workers)
    manifest_grid(aligned, aligned / "grid.png", show="lmk5_crop")
    echo(f"{meta['ok']} ok / {meta['inputs']} inputs -> {aligned}")
    report += [manifest_report(aligned), f"\nsample grid: {aligned / 'grid.png'}", ""]
    times["align"] = time.perf_counter() - t

    t = _stage(echo, "2. generate (mtf)")
    masked = out / f"{ds.name}-mtf"
    # Without the data kit there are no MaskTheFace templates: mtf draws its built-in plain mask.
    style = "plain" if synthetic else "mix"
    gmeta = generate_dataset(generator_factory("mtf", mask_type=style, wearing="correct"), masked, manifest=aligned,
                             workers=workers, seed=seed)
    save_sample_grid(masked)
    echo(f"{gmeta['ok']} ok / {gmeta['inputs']} inputs -> {masked}")
    report += [manifest_report(masked), f"\nsample grid: {masked / 'grid.png'}", ""]
    times["generate"] = time.perf_counter() - t

    t = _stage(echo, f"3. train-fr (ArcFace + MobileFaceNet, {train_minutes:g} min budget)")
    run_dir = out / "runs" / "arcface-mobilefacenet-mtf"
    cfg = TrainConfig(data=(str(aligned), str(masked)), out=str(run_dir), backbone="mobilefacenet", head="arcface",
                      epochs=30, batch_size=64, lr=0.1, seed=seed, workers=min(workers, 2),
                      time_budget_s=train_minutes * 60)
    resume = (run_dir / "checkpoints" / "last.pt").exists()
    summary = train(cfg, resume=resume)
    val = {k: v for k, v in summary.items() if k.startswith("val_")}
    echo(f"stopped: {summary.get('stopped')} after {summary.get('global_step')} steps; validation: {val}")
    report += ["# Recognizer", "", f"- run: {run_dir}", f"- steps: {summary.get('global_step')}, "
               f"images/s: {summary.get('images_per_s')}, validation: {json.dumps(val)}", ""]
    times["train-fr"] = time.perf_counter() - t

    t = _stage(echo, "4. eval")
    report += ["# Evaluation", "", "| benchmark | accuracy | TAR@FAR=1e-3 | Rank-1 | Rank-5 | coverage |",
               "|---|---|---|---|---|---|"]
    for bench in ("lfw", "lfw-masked", "rmfrd"):
        try:
            row = evaluate(str(run_dir), EvalConfig(benchmark=bench, seed=seed, protocol_kwargs=protocol_kwargs(bench)),
                           results_dir=results, cache_dir=out / "cache", workers=workers)
        except (DataNotFoundError, MfrbenchError) as err:
            echo(f"[{bench}] skipped: {err}")
            continue
        cells = [_fmt(row.get(k)) for k in ("acc", tar_col(1e-3), "rank1", "rank5", "coverage")]
        report.append(f"| {bench} | " + " | ".join(cells) + " |")
        echo(f"[{bench}] " + ", ".join(f"{k}={_fmt(row.get(k))}" for k in ("acc", tar_col(1e-3), "rank5")))
    report.append("")
    times["eval"] = time.perf_counter() - t

    t = _stage(echo, "5. quality")
    try:
        real = create_dataset("masked-photos").root if not synthetic else None
        q = run_quality(masked, real=real, results_dir=results, limit=200, real_limit=200, seed=seed)
        report += ["# Image quality of the mtf set", "", "```", json.dumps(
            {k: v for k, v in q.items() if isinstance(v, (int, float, str))}, indent=1), "```", ""]
    except (DataNotFoundError, MfrbenchError) as err:
        echo(f"quality skipped: {err}")
    times["quality"] = time.perf_counter() - t

    t = _stage(echo, "6. report")
    rep = write_reports(results, out / "tables", benchmark="rmfrd" if not synthetic else "lfw")
    echo(f"tables: {out / 'tables'}")
    n_missing = sum(len(v) for v in rep.get("missing", {}).values())
    report += ["# Tables", "", f"Table II / III (CSV, Markdown, LaTeX) in {out / 'tables'}; "
               f"cells this quick run does not fill stay empty: {n_missing}.", ""]
    times["report"] = time.perf_counter() - t

    report += ["# Stage times (s)", "", *(f"- {k}: {v:.1f}" for k, v in times.items())]
    path = out / "REPORT.md"
    path.write_text("\n".join(report) + "\n")
    echo(f"\nreport: {path}")
    return path


def _fmt(v) -> str:
    if v is None or v == "":
        return "-"
    try:
        return f"{float(v):.4f}"
    except (TypeError, ValueError):
        return str(v)


@cli.command("quickstart")
@click.option("--out", type=click.Path(file_okay=False), default="quickstart-out", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N CelebA images.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--train-minutes", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Time budget of the recognizer training stage.")
@click.option("--seed", type=int, default=0, show_default=True)
def quickstart_cmd(out: str, limit: int | None, workers: int, train_minutes: float, seed: int) -> None:
    """Run the quick end-to-end pipeline into --out: align -> generate (mtf) -> train-fr ->
    eval (LFW, LFW-masked, RMFRD) -> quality -> report. Rerunning resumes finished stages.

    \b
    Example:
      mfrbench quickstart --out quickstart-out
      mfrbench quickstart --out qs-small --limit 300 --train-minutes 1
    """
    run_quickstart(out, limit=limit, workers=workers, train_minutes=train_minutes, seed=seed, echo=click.echo)
