"""``mfrbench generate``: mask a dataset (or an aligned manifest) with one generator method."""

from __future__ import annotations

import inspect
from pathlib import Path

import click

from mfrbench.cli import cli
from mfrbench.cli.options import engine_opt, limit_opt, root_opt, seed_opt, shard_opt, workers_opt
from mfrbench.datasets import list_datasets

# Method-specific options: forwarded only to methods whose factory names the parameter.
_METHOD_OPTIONS = ("mask_type", "color", "color_weight", "texture", "wearing", "checkpoint", "reference",
                   "reference_mode", "seg_checkpoint")


def _method_kwargs(method: str, given: dict) -> dict:
    """Keep the options the user set; refuse those ``method`` does not take (one clear line)."""
    from mfrbench.errors import MfrbenchError
    from mfrbench.generators.base import GENERATORS

    params = inspect.signature(GENERATORS.get(method)).parameters
    kwargs = {}
    for name, value in given.items():
        if value is None:
            continue
        if name not in params:
            takes = [f"--{p.replace('_', '-')}" for p in _METHOD_OPTIONS if p in params]
            raise MfrbenchError(f"--{name.replace('_', '-')} does not apply to --method {method} "
                                f"(it takes: {', '.join(takes) or 'no method options'})")
        kwargs[name] = value
    return kwargs


@cli.command("generate")
@click.option("--method", default="mtf", show_default=True, metavar="NAME",
              help="Generator (see `mfrbench list generators`): mtf, or a trained GAN with --checkpoint.")
@click.option("--dataset", default=None, metavar="NAME",
              help=f"Dataset adapter of raw photos: {', '.join(list_datasets())}. Not needed with --manifest.")
@root_opt
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Output folder: images/, maps/ (mask maps, 1 = mask), manifest, grid.png.")
@click.option("--manifest", "manifest", type=click.Path(exists=True), default=None,
              help="Aligned manifest folder from `mfrbench align`: mask its 112x112 crops (fast, no detection).")
@click.option("--mask-type", default=None,
              help="mtf: surgical, surgical_blue, surgical_green, N95, KN95, cloth, gas, plain (drawn, no kit), "
                   "random (one family per image) or mix (families, colours and textures per image). "
                   "[default: surgical]")
@click.option("--color", default=None, metavar="HEX", help="mtf: blend this colour (e.g. '#1f3a93') into the mask.")
@click.option("--color-weight", type=click.FloatRange(0, 1), default=None,
              help="mtf: colour strength, 0-1. [default: 0.75]")
@click.option("--texture", default=None, metavar="NAME",
              help="mtf: texture from the kit's masks/textures/ (file stem, e.g. check_1), or random.")
@click.option("--wearing", default=None,
              help="mtf: correct, nose-out, mouth-nose-out, chin, or random (40 % correct). [default: correct]")
@click.option("--checkpoint", default=None, metavar="RUN",
              help="GAN methods: run folder written by `mfrbench train-gen`.")
@click.option("--seg-checkpoint", default=None, metavar="SEG_RUN",
              help="cyclegan/iamgan: Seg run (train-aux --module seg) that predicts the written mask maps.")
@click.option("--reference", type=click.Path(exists=True), default=None, metavar="DIR",
              help="mfgan: masked photos (folder or aligned manifest) whose mask style the outputs copy "
                   "(paper Fig. 8).")
@click.option("--reference-mode", type=click.Choice(["random", "fixed", "per-identity"]), default=None,
              help="mfgan: a reference per image (random), one for all (fixed: the first in sorted order), or one "
                   "per identity. [default: random]")
@seed_opt
@workers_opt
@limit_opt
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per generator call [default: 32 for --manifest, 8 for photos].")
@click.option("--format", "fmt", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True,
              help="Masked image format (mask maps are always PNG).")
@click.option("--landmarker", default="auto", show_default=True, help="68-point model for raw photos.")
@click.option("--keep-duplicates", is_flag=True, help="Keep byte-identical duplicate inputs (default: skip them).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue an interrupted run in --out (same arguments required).")
@click.option("--grid/--no-grid", default=True, show_default=True,
              help="Save grid.png: input | masked | mask map for a few samples.")
@shard_opt
@engine_opt
def generate_cmd(method: str, dataset: str | None, root: str | None, out: str, manifest: str | None,
                 mask_type: str | None, color: str | None, color_weight: float | None, texture: str | None,
                 wearing: str | None, checkpoint: str | None, seg_checkpoint: str | None, reference: str | None,
                 reference_mode: str | None,
                 seed: int, workers: int, limit: int | None,
                 batch_size: int | None, fmt: str, landmarker: str, keep_duplicates: bool, resume: bool,
                 grid: bool, shard: str | None, engine: str) -> None:
    """Mask every face of a dataset: masked images, exact mask maps, and a manifest.

    Each input ends as one manifest row (ok, or skipped with a reason) with the mask's style,
    wearing mode, anchors, yaw bin and which parts (eyes, nose, mouth, chin) it covers. The
    same --seed gives byte-identical outputs for any --workers.

    \b
    Examples:
      mfrbench generate --method mtf --dataset celeba --out out/celeba-mtf --limit 200 \\
          --mask-type mix --wearing random --seed 1
      mfrbench align --dataset celeba --out out/celeba-aligned
      mfrbench generate --manifest out/celeba-aligned --out out/celeba-mtf112 --workers 2
      mfrbench generate --dataset synthetic --out out/synth-mtf --mask-type plain
      mfrbench generate --method cyclegan --checkpoint runs/cyclegan --manifest out/celeba-aligned \\
          --out out/celeba-cyclegan
      mfrbench generate --method mfgan --checkpoint runs/mfgan --manifest out/celeba-aligned \\
          --reference ../shared/data/masked-faces --reference-mode per-identity --seed 1 --out out/celeba-mfgan
    """
    from mfrbench.datasets import create_dataset
    from mfrbench.errors import MfrbenchError
    from mfrbench.generate import GenerateConfig, generate_dataset, save_sample_grid
    from mfrbench.generators.base import GENERATORS, generator_factory

    if manifest is None and dataset is None:
        raise MfrbenchError("give --dataset NAME (raw photos) or --manifest ALIGNED_DIR")
    kwargs = _method_kwargs(method, {"mask_type": mask_type, "color": color, "color_weight": color_weight,
                                     "texture": texture, "wearing": wearing, "checkpoint": checkpoint,
                                     "seg_checkpoint": seg_checkpoint,
                                     "reference": reference, "reference_mode": reference_mode})
    if "seed" in inspect.signature(GENERATORS.get(method)).parameters:  # mfgan: per-identity reference choice
        kwargs["seed"] = seed
    ds = create_dataset(dataset, root) if manifest is None else None
    cfg = GenerateConfig(ext="." + fmt, landmarker=landmarker)
    meta = generate_dataset(generator_factory(method, **kwargs), out, dataset=ds, manifest=manifest, limit=limit,
                            workers=workers, seed=seed, batch_size=batch_size, resume=resume, cfg=cfg,
                            dedupe=not keep_duplicates, shard=shard, engine=engine)
    reasons = ", ".join(f"{k}={v}" for k, v in meta["skip_reasons"].items()) or "none"
    tag = " [SYNTHETIC]" if meta.get("synthetic") else ""
    click.echo(f"{meta['inputs']} inputs: {meta['ok']} ok, {meta['skipped']} skipped ({reasons}){tag}")
    click.echo(f"manifest: {Path(out) / 'manifest.csv'}")
    ident = meta["generator"]  # the identity record train-fr, eval, quality and report read
    click.echo(f"generator: {ident['variant']} (family {ident['family']}, config hash {ident['config_hash']}"
               f"{', run ' + ident['run'] if ident['run'] else ''}, mask maps {ident['maps'] or 'unknown'})")
    if grid and meta["ok"]:
        click.echo(f"sample grid: {save_sample_grid(out)}")
