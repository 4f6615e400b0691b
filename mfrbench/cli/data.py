"""Data commands: datasets, align, synth, dataset-report, list."""

from __future__ import annotations

from pathlib import Path

import click

from mfrbench.cli import cli
from mfrbench.cli.options import dataset_opt, engine_opt, limit_opt, root_opt, shard_opt, workers_opt


@cli.command("datasets")
@click.option("--root", "data_root", type=click.Path(file_okay=False), default=None,
              help="Data root to look in (default: $MFRBENCH_DATA or ../shared/data).")
def datasets_cmd(data_root: str | None) -> None:
    """List dataset adapters and which datasets are found under the data root, with counts.

    \b
    Example:
      mfrbench datasets
      MFRBENCH_DATA=/data mfrbench datasets
    """
    from mfrbench.reports_data import find_datasets

    for line in find_datasets(data_root):
        click.echo(line)


@cli.command("align")
@dataset_opt
@root_opt
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder (crops + manifest).")
@limit_opt
@workers_opt
@click.option("--detector", default="yunet", show_default=True,
              help="Face detector backend: yunet, or insightface (SCRFD from --model-pack).")
@click.option("--model-pack", type=click.Path(exists=True), default=None, metavar="DIR",
              help="--detector insightface: your insightface model pack (e.g. ~/.insightface/models/buffalo_l); "
                   "needs pip install 'mfrbench[insightface]'.")
@click.option("--landmarker", default="auto", show_default=True,
              help="68-point model: pfld, mediapipe, none, or auto (pfld if present, else mediapipe).")
@click.option("--landmarks", type=click.Choice(["auto", "detect", "annotations"]), default="auto", show_default=True,
              help="auto: use the dataset's annotated landmarks when it has them, else detect.")
@click.option("--score-threshold", type=float, default=0.6, show_default=True, help="Detector score threshold.")
@click.option("--size", type=int, default=112, show_default=True, help="Crop size (ArcFace template is scaled).")
@click.option("--format", "fmt", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True)
@click.option("--keep-duplicates", is_flag=True, help="Keep byte-identical duplicate files (default: skip them).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue an interrupted run in --out (same arguments required).")
@click.option("--grid/--no-grid", default=True, show_default=True, help="Save a sample grid of crops.")
@shard_opt
@engine_opt
def align_cmd(dataset: str, root: str | None, out: str, limit: int | None, workers: int, detector: str,
              landmarker: str, landmarks: str, score_threshold: float, size: int, fmt: str, keep_duplicates: bool,
              resume: bool, grid: bool, shard: str | None, engine: str, model_pack: str | None) -> None:
    """Detect faces, find 5 (and 68) landmarks, and write ArcFace-aligned crops + a manifest.

    Every input image ends as one manifest row: ok, or skipped with a reason.

    \b
    Examples:
      mfrbench align --dataset celeba --out out/celeba-aligned --limit 200
      mfrbench align --dataset lfw --root /data/lfw --out out/lfw-aligned --workers 2
      mfrbench align --dataset folder --root my_faces/ --out out/mine --landmarker mediapipe
    """
    from mfrbench.align import AlignConfig, align_dataset
    from mfrbench.datasets import create_dataset
    from mfrbench.viz import manifest_grid

    ds = create_dataset(dataset, root)
    cfg = AlignConfig(detector=detector, landmarker=landmarker, landmarks=landmarks, score_threshold=score_threshold,
                      size=size, ext="." + fmt, model_pack=str(Path(model_pack).resolve()) if model_pack else "")
    meta = align_dataset(ds, out, limit=limit, workers=workers, cfg=cfg, resume=resume, dedupe=not keep_duplicates,
                         shard=shard, engine=engine)
    click.echo(_summary(meta, out))
    if grid and meta["ok"]:
        click.echo(f"sample grid: {manifest_grid(out, Path(out) / 'grid.png', show='lmk5_crop')}")


def _summary(meta: dict, out: str) -> str:
    reasons = ", ".join(f"{k}={v}" for k, v in meta["skip_reasons"].items()) or "none"
    tag = " [SYNTHETIC]" if meta.get("synthetic") else ""
    return (f"{meta['inputs']} inputs: {meta['ok']} ok, {meta['skipped']} skipped ({reasons}){tag}\n"
            f"manifest: {Path(out) / 'manifest.csv'}")


@cli.command("synth")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to write the synthetic set to.")
@click.option("--identities", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--per-identity", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--size", type=click.IntRange(min=64), default=160, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def synth_cmd(out: str, identities: int, per_identity: int, size: int, seed: int) -> None:
    """Write a SYNTHETIC face set (drawn faces, known landmarks) as <out>/<identity>/<n>.png.

    Use it to try every stage with no data: `--dataset synthetic --root <out>` reads it back
    with its known landmarks.

    \b
    Example:
      mfrbench synth --out out/synth --identities 10 --per-identity 4
      mfrbench align --dataset synthetic --root out/synth --out out/synth-aligned
    """
    from mfrbench.synthetic import materialize

    folder, table = materialize(Path(out), identities=identities, per_identity=per_identity, size=size, seed=seed)
    click.echo(f"wrote {len(table)} SYNTHETIC images of {identities} identities to {folder}")


@cli.command("dataset-report")
@click.argument("manifest", type=click.Path(exists=True))
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the report as Markdown.")
def dataset_report_cmd(manifest: str, out: str | None) -> None:
    """Summarise a manifest: counts, skip reasons, identities, images per identity.

    \b
    Example:
      mfrbench dataset-report out/celeba-aligned
    """
    from mfrbench.reports_data import manifest_report

    text = manifest_report(manifest)
    click.echo(text)
    if out:
        Path(out).write_text(text + "\n")


@cli.command("list")
@click.argument("kind", default="all")
def list_cmd(kind: str) -> None:
    """List registered plugins (datasets, detectors, landmark models, ...).

    \b
    Example:
      mfrbench list datasets
    """
    from mfrbench.cli.plugins import all_registries

    regs = all_registries()
    if kind != "all" and kind not in regs:
        raise click.ClickException(f"Unknown plugin kind {kind!r}. Available: all, {', '.join(regs)}")
    for name, reg in regs.items():
        if kind in ("all", name):
            click.echo(f"{name}: {', '.join(reg.names())}")
