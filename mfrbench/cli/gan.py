"""GAN commands: train-gen (Seg/Det: train-aux, segment, detect-parts live in :mod:`mfrbench.cli.aux`)."""

from __future__ import annotations

from pathlib import Path

import click

from mfrbench.cli import cli


@cli.command("train-gen")
@click.option("--method", default=None, help="GAN family: cyclegan, iamgan, mfgan, mfgan-no-inv|-no-cor|-no-sty "
              "[default: cyclegan; on --resume: the run's].")
@click.option("--faces", default=None, metavar="MANIFEST_OR_DIR",
              help="Domain Face: an aligned manifest (mfrbench align output), an image folder or a dataset name. "
                   "Required unless --resume.")
@click.option("--masks", default=None, metavar="MANIFEST_OR_DIR",
              help="Domain Mask: real masked photos (folder, aligned once into RUN_DIR/data/masks) or a manifest. "
                   "Required unless --resume.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run folder (config.json, checkpoints/last.pt, samples, losses.csv).")
@click.option("--profile", type=click.Choice(["smoke", "cpu", "paper"]), default=None,
              help="smoke: seconds (CI); cpu: honest 64 px run on 2 cores (tens of minutes); paper: batch 1, 450K.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML file with sections train: and model:; --set and the options here override it.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Model config key (repeatable), e.g. --set ngf=32 --set seg_checkpoint=runs/seg; "
                   "train.KEY=VALUE for a loop key, e.g. --set train.decay_start=0.6.")
@click.option("--size", type=click.Choice(["64", "128", "256"]), default=None, help="Training resolution.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Total steps (also extends a resumed run).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--max-faces", type=click.IntRange(min=1), default=None, help="Use at most N face images.")
@click.option("--max-masks", type=click.IntRange(min=1), default=None, help="Use at most N masked photos.")
@click.option("--det", "det_run", default=None, metavar="RUN",
              help="mfgan: frozen facial-part detector run (`train-aux --module det`), for lambda_cor.")
@click.option("--seg", "seg_run", default=None, metavar="RUN",
              help="mfgan, iamgan: frozen mask segmentation run (`train-aux --module seg`).")
@click.option("--stage-steps", default=None, metavar="A,B,C",
              help="mfgan: steps of stages 1, 2, 3 (sets --steps to the sum). Default: --steps split 2:4:3, "
                   "the paper's 100K/200K/150K.")
@click.option("--seed", type=int, default=None)
@click.option("--log-every", type=click.IntRange(min=1), default=None, help="Log the losses every N steps.")
@click.option("--sample-every", type=click.IntRange(min=1), default=None, help="Sample grid every N steps.")
@click.option("--ckpt-every", type=click.IntRange(min=1), default=None, help="Checkpoint every N steps.")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N [default: auto].")
@click.option("--amp/--no-amp", default=None, help="bf16 autocast on CUDA.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (1 is much faster than 2 on a machine busy with other jobs).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint: --steps may grow and the run-control "
                   "options change; a different training option is an error.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train_gen_cmd(method, faces, masks, out, profile, config_file, sets, size, steps, batch_size, lr, max_faces,
                  max_masks, det_run, seg_run, stage_steps, seed, log_every, sample_every, ckpt_every, device, amp,
                  threads, resume, no_progress) -> None:
    """Train a mask-generating GAN (Face -> Mask) on aligned faces and real masked photos.

    Writes RUN_DIR/config.json, checkpoints/last.pt, samples/step_*.png (rows: faces, generated
    masked faces, real masked photos, their unmasked translation) and losses.csv.

    \b
    Examples:
      mfrbench train-gen --method cyclegan --profile smoke --faces ../shared/data/celeba/img_celeba \\
          --masks ../shared/data/masked-faces --out runs/cg-smoke
      mfrbench train-gen --method cyclegan --profile cpu --faces out/celeba-aligned \\
          --masks ../shared/data/masked-faces --out runs/cg-cpu --threads 1
      mfrbench train-gen --method iamgan --profile paper --faces out/ffhq-aligned --masks out/rmfrd-masked \\
          --set seg_checkpoint=runs/seg --set recognizer=runs/fr --out runs/iam
      mfrbench train-gen --out runs/cg-cpu --resume --steps 4000
      mfrbench train-gen --method mfgan --profile smoke --det runs/det --seg runs/seg \\
          --faces ../shared/data/celeba/img_celeba --masks ../shared/data/masked-faces --out runs/mfgan-smoke
      mfrbench train-gen --method mfgan-no-inv --stage-steps 500,1000,750 --det runs/det --seg runs/seg ...
    """
    from mfrbench.generators.gan.train import train_gan

    train = {"size": int(size) if size else None, "steps": steps, "batch_size": batch_size, "lr": lr,
             "max_faces": max_faces, "max_masks": max_masks, "seed": seed, "amp": amp, "log_every": log_every,
             "sample_every": sample_every, "ckpt_every": ckpt_every}
    model_sets, train_sets = _split_sets(sets)
    model = _aux_options(det_run, seg_run, stage_steps, train)
    summary = train_gan(method, faces, masks, out, profile=profile, config_file=config_file, train_sets=train_sets,
                        model_sets=model_sets, train_overrides=train, model_overrides=model, resume=resume,
                        device=device, threads=threads, progress=not no_progress)
    losses = ", ".join(f"{k}={v:.3f}" for k, v in summary["final_losses"].items())
    click.echo(f"{summary['steps']} steps ({summary['steps_this_run']} this run, {summary['seconds']:.1f}s on "
               f"{summary['device']}, {summary['threads']} threads); {summary['faces']} faces, "
               f"{summary['masks']} masked photos")
    click.echo(f"losses: {losses}")
    click.echo(f"checkpoint: {summary['checkpoint']}\nsamples: {summary['samples']}")


def _split_sets(items: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """``--set`` items for the model config (``KEY`` or ``model.KEY``) and for the loop (``train.KEY``)."""
    model, train = [], []
    for item in items:
        section, dot, rest = item.partition(".")
        if dot and section in ("train", "model"):
            (train if section == "train" else model).append(rest)
        else:
            model.append(item)
    return model, train


def _aux_options(det_run: str | None, seg_run: str | None, stage_steps: str | None, train: dict) -> dict:
    """--det / --seg (absolute run paths) and --stage-steps (also sets the total steps) as model options."""
    out: dict = {}
    if det_run:
        out["det_checkpoint"] = str(Path(det_run).resolve())
    if seg_run:
        out["seg_checkpoint"] = str(Path(seg_run).resolve())
    if stage_steps:
        try:
            st = [int(x) for x in stage_steps.split(",")]
        except ValueError:
            st = []
        if len(st) != 3 or min(st) < 0:
            raise click.BadParameter(f"expected three step counts A,B,C, got {stage_steps!r}",
                                     param_hint="--stage-steps")
        out["stage_steps"] = st
        train["steps"] = sum(st)
    return out
