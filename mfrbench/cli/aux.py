"""Seg/Det commands: train-aux (train the helper networks), segment, detect-parts (use them)."""

from __future__ import annotations

import click

from mfrbench.cli import cli


@cli.command("train-aux")
@click.option("--module", "module", type=click.Choice(["seg", "det"]), required=True,
              help="seg: mask segmentation U-Net; det: facial-part visibility + wearing classifier.")
@click.option("--data", "masked", multiple=True, metavar="MTF_DIR",
              help="Output folder of `mfrbench generate --method mtf` (repeatable); its mask maps / part labels are "
                   "the targets. Required unless --resume.")
@click.option("--faces", "unmasked", multiple=True, metavar="ALIGNED_DIR",
              help="Unmasked aligned manifest(s) (repeatable): class `none`, empty mask maps.")
@click.option("--real-masked", "real_masked", multiple=True, metavar="PHOTOS",
              help="Real masked photos (repeatable; a folder, aligned manifest, RecordIO set or dataset name, as "
                   "train-gen --masks): 'mask worn' for Det (how, and nose/mouth/chin, unknown: no loss), an "
                   "image-level term for Seg; a share (real_holdout) is held out by key and read out apart.")
@click.option("--real-faces", "real_faces", multiple=True, metavar="PHOTOS",
              help="Real unmasked photos (repeatable; as --real-masked): class `none`, empty maps; held out by key.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run folder (config.json, checkpoints/last.pt, metrics.json).")
@click.option("--profile", type=click.Choice(["smoke", "cpu", "paper"]), default=None)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML file of AuxConfig keys; --set and the options here override it.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any AuxConfig field (repeatable), e.g. --set lr=5e-4 --set base=32.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Total steps (also extends a resumed run).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--size", type=click.IntRange(min=32), default=None, help="Input resolution (default 112).")
@click.option("--max-images", type=click.IntRange(min=1), default=None, help="Use at most N rows of each input.")
@click.option("--eval-every", type=click.IntRange(min=1), default=None,
              help="Held-out evaluation + checkpoint every N steps.")
@click.option("--seed", type=int, default=None)
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N [default: auto].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint (--steps may grow; other options must match).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train_aux_cmd(module, masked, unmasked, real_masked, real_faces, out, profile, config_file, sets, steps,
                  batch_size, size, max_images, eval_every, seed, device, threads, resume, no_progress) -> None:
    """Train the helper networks Seg (U-Net) or Det (part visibility) on mtf output; report held-out scores.

    The held-out split keeps every identity (or source image) on one side; real photos (--real-masked,
    --real-faces) are held out by a hash of their key, the rule train-gen's holdout_masks uses, and
    their read-out (judge_on_real, as in a GAN run's quality.json) is reported apart from mtf's.

    \b
    Examples:
      mfrbench generate --method mtf --manifest out/celeba-aligned --out out/celeba-mtf --mask-type mix --wearing random
      mfrbench train-aux --module seg --data out/celeba-mtf --faces out/celeba-aligned --out runs/seg --profile cpu
      mfrbench train-aux --module det --data out/celeba-mtf --faces out/celeba-aligned --out runs/det --profile cpu
      mfrbench train-aux --module det --data out/celeba-mtf --faces out/celeba-aligned \
          --real-masked ../shared/data/masked-faces --out runs/det-real --profile cpu
      mfrbench train-aux --module seg --out runs/seg --resume --steps 3000
    """
    from mfrbench.generators.seg import train_aux

    m = train_aux(module, list(masked), out, unmasked=list(unmasked), real_masked=list(real_masked),
                  real_faces=list(real_faces), profile=profile, config_file=config_file,
                  sets=sets, overrides={"steps": steps, "batch_size": batch_size, "size": size,
                                        "max_images": max_images, "eval_every": eval_every, "seed": seed},
                  resume=resume, device=device, threads=threads, progress=not no_progress)
    click.echo(f"{module}: {m['train_images']} train / {m['heldout_images']} held-out images, {m['seconds']}s")
    held = {k: v for k, v in m["heldout"].items() if k not in ("step", "confusion")}
    click.echo("held-out: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in held.items()))
    if "confusion" in m["heldout"]:
        click.echo("wearing confusion (rows true, cols predicted; correct/incorrect/none): "
                   f"{m['heldout']['confusion']}")
    if m.get("real"):
        click.echo("held-out real photos: " + _show_real(m["real"]))
    click.echo(f"checkpoint: {m['checkpoint']}")


def _show_real(real: dict) -> str:
    """judge_on_real's keys on one line (the per-class wearing shares as correct/incorrect/none)."""
    return ", ".join(f"{k}={'/'.join(f'{x:.2f}' for x in v.values())}" if isinstance(v, dict) else
                     f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in real.items())


@cli.command("segment")
@click.option("--checkpoint", required=True, type=click.Path(exists=True),
              help="Seg run folder (train-aux --module seg).")
@click.option("--input", "inputs", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of images.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the mask maps.")
@click.option("--align/--no-align", default=True, show_default=True,
              help="Detect + align each face (YuNet) and warp the map back; --no-align for aligned crops.")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N [default: auto].")
def segment_cmd(checkpoint, inputs, out, align, device) -> None:
    """Predict the mask region: one PNG per input image (same size, 1 = mask pixel, 0 = not).

    Each map is named after the input's file name, .png added unless it ends so (a.jpg -> a.jpg.png).

    \b
    Examples:
      mfrbench segment --checkpoint runs/seg --input ../shared/data/masked-faces --out out/seg-maps
      mfrbench segment --checkpoint runs/seg --input out/celeba-cyclegan/images --out out/cg-maps --no-align
    """
    from mfrbench.generators.seg import segment_folder

    r = segment_folder(checkpoint, inputs, out, align=align, device=device)
    click.echo(f"{r['written']} of {r['images']} images segmented ({r['aligned']} with a detected face) -> {r['out']}")
    if r["grid"]:
        click.echo(f"preview (mask tinted red): {r['grid']}")
    for f, reason in r["skipped"]:
        click.echo(f"skipped {f}: {reason}")


@cli.command("detect-parts")
@click.option("--checkpoint", required=True, type=click.Path(exists=True),
              help="Det run folder (train-aux --module det).")
@click.option("--input", "inputs", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of images.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="CSV to write.")
@click.option("--align/--no-align", default=True, show_default=True, help="Detect + align each face first (YuNet).")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N [default: auto].")
def detect_parts_cmd(checkpoint, inputs, out, align, device) -> None:
    """Which facial parts are visible, and how the mask is worn: one CSV row per image.

    Columns: file, status, reason, aligned, p_face, p_eyes, p_nose, p_mouth, p_chin (visibility
    probabilities), p_correct, p_incorrect, p_none, wearing (correct | incorrect | none).

    \b
    Example:
      mfrbench detect-parts --checkpoint runs/det --input ../shared/data/rmfrd/AFDB_masked_face_dataset --out parts.csv
    """
    from mfrbench.generators.parts import detect_parts_folder

    r = detect_parts_folder(checkpoint, inputs, out, align=align, device=device)
    click.echo(f"{r['ok']} of {r['images']} images -> {r['out']}; wearing: {r['wearing_counts']}")
