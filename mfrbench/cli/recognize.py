"""Recognizer commands: train-fr, export."""

from __future__ import annotations

import re

import click

from mfrbench.cli import cli


def _head_args(values: tuple[str, ...]) -> dict[str, float] | None:
    if not values:
        return None
    out = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {v!r}", param_hint="--head-arg")
        try:
            out[key.strip()] = float(val)
        except ValueError:
            raise click.BadParameter(f"{key}: expected a number, got {val!r}", param_hint="--head-arg") from None
    return out


def _duration(text: str | None) -> float | None:
    """``90``, ``90s``, ``5m``, ``1.5h`` -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9.]+)\s*([smh]?)\s*", text)
    if not m:
        raise click.BadParameter(f"expected a duration like 300, 300s, 5m or 1h, got {text!r}",
                                 param_hint="--time-budget")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


@cli.command("train-fr")
@click.option("--data", "data", multiple=True, metavar="MANIFEST_OR_DIR",
              help="Aligned (`align`) or masked (`generate`) manifest folder, or an <identity>/<image> folder of "
                   "112x112 crops. Repeat to mix sources.")
@click.option("--backbone", default=None, help="iresnet18|iresnet34|iresnet50|iresnet100|mobilefacenet|timm:<name> "
                                                "[default: iresnet18].")
@click.option("--loss", "head", default=None,
              help="Head: softmax|triplet|arcface|cosface|combined-margin|subcenter-arcface [default: arcface].")
@click.option("--head-arg", "head_arg", multiple=True, metavar="KEY=VALUE",
              help="Head option, e.g. s=64, m=0.5 (arcface), margin=0.2 (triplet), k=3 (subcenter-arcface).")
@click.option("--embedding-dim", type=click.IntRange(min=2), default=None, help="[default: 512]")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="[default: 10]")
@click.option("--batch-size", type=click.IntRange(min=2), default=None,
              help="Global batch, split over torchrun processes [default: 64].")
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: 0.1].")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default=None, help="[default: sgd]")
@click.option("--weight-decay", type=float, default=None, help="[default: 5e-4 (sgd), 0.05 (adamw)]")
@click.option("--schedule", type=click.Choice(["cosine", "step"]), default=None, help="[default: cosine]")
@click.option("--warmup-epochs", type=float, default=None, help="Linear warm-up length [default: 1].")
@click.option("--milestones", default=None, help="Step schedule: comma-separated epochs where lr *= 0.1.")
@click.option("--mask-ratio", type=click.FloatRange(0, 1), default=None,
              help="Fraction of masked images in the training mix (subsamples one group) [default: use all].")
@click.option("--val-identities", type=float, default=None,
              help="Identities held out for validation: fraction (<1) or count [default: 0.2].")
@click.option("--images-per-identity", type=click.IntRange(min=2), default=None,
              help="K of the P x K batches for triplet [default: 4].")
@click.option("--amp/--no-amp", default=None, help="Mixed precision on CUDA [default: on].")
@click.option("--channels-last/--no-channels-last", default=None, help="[default: on]")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="DataLoader workers per process [default: 2].")
@click.option("--device", default=None, help="auto|cpu|cuda|cuda:N [default: auto].")
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Stop (with a checkpoint) after N optimiser steps in this invocation.")
@click.option("--time-budget", default=None, help="Stop (with a checkpoint and validation) after this long, e.g. 5m.")
@click.option("--log-every", type=click.IntRange(min=1), default=None, help="Log every N steps [default: 10].")
@click.option("--ckpt-every", type=click.IntRange(min=0), default=None,
              help="Also checkpoint every N steps [default: 0 = at epoch ends].")
@click.option("--init", type=click.Path(), default=None, metavar="PATH",
              help="Start the backbone from a train-fr run/checkpoint or a state dict such as arcface_torch's "
                   "backbone.pth (loaded strictly; the head starts fresh).")
@click.option("--backbone-lr-mult", type=click.FloatRange(min=0), default=None,
              help="Backbone learning rate = --lr times this, e.g. 0.1 when fine-tuning [default: 1].")
@click.option("--freeze-backbone-epochs", type=click.FloatRange(min=0), default=None,
              help="Train only the head for the first N epochs (backbone and its BatchNorm fixed) [default: 0].")
@click.option("--gray", type=click.FloatRange(0, 1), default=None,
              help="Probability of a grayscale training copy (LFW-a is gray) [default: 0].")
@click.option("--input-size", type=click.IntRange(16, 512), default=None,
              help="The backbone's resolution; 112x112 crops are resized inside it (64: ~3x faster) [default: 112].")
@click.option("--mask-aug", "mask_aug", default=None, metavar="SPEC",
              help="On-the-fly masking of the training crops (MaskAugment), e.g. mtf:p=0.5,mask_type=mix,"
                   "wearing=random; keys: p, mask_type, color, color_weight, texture, texture_weight, wearing "
                   "(random, a mode, or modes joined by |), match_light, variants, jitter (docs/generators.md).")
@click.option("--profile", type=click.Choice(["smoke", "cpu"]), default=None,
              help="A named recipe (per loss) under the options you give: cpu = from scratch on celeba-rec in "
                   "<= 20 min on 2 cores (docs/recognizers.md).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder [default: runs/recognizer].")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML config (keys as TrainConfig fields); --set and the options above override it.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any TrainConfig field, typed from its declaration (repeatable), e.g. --set gamma=0.5.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint. Run control (--epochs, --workers, --device, "
                   "--max-steps, --time-budget, --log-every, --ckpt-every) may change; other options must match.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs only).")
def train_fr_cmd(config_path: str | None, sets: tuple[str, ...], resume: bool, no_progress: bool, profile: str | None,
                 head_arg: tuple[str, ...], milestones: str | None, time_budget: str | None, data: tuple[str, ...],
                 **opts) -> None:
    """Train a face recognizer (backbone + softmax/triplet/margin head) on aligned or masked crops.

    Writes RUN_DIR/config.json, checkpoints/last.pt (+ last.json), train_log.csv, val_log.csv,
    tb/ (TensorBoard) and summary.json. Validation: rank-1 identification on held-out identities.
    Multi-GPU / multi-node: launch the same command with torchrun.

    \b
    Examples:
      mfrbench train-fr --loss arcface --backbone iresnet18 --data out/celeba-aligned --epochs 20 --out runs/r18
      mfrbench train-fr --data out/celeba-aligned --data out/celeba-mtf --mask-ratio 0.5 --out runs/mix
      mfrbench train-fr --loss triplet --head-arg margin=0.3 --data my_crops/ --out runs/trip
      mfrbench train-fr --data out/celeba-mtf --backbone iresnet50 --init backbone.pth --backbone-lr-mult 0.1 \
        --freeze-backbone-epochs 1 --lr 0.01 --out runs/ft
      mfrbench train-fr --profile cpu --loss cosface --data ../shared/data/celeba-rec --out runs/cpu-cosface
      mfrbench train-fr --data ../shared/data/celeba-rec --mask-aug mtf:p=0.5,mask_type=mix --out runs/maskaug
      mfrbench train-fr --out runs/r18 --resume
      torchrun --nproc_per_node 2 $(which mfrbench) train-fr --data out/celeba-aligned --out runs/ddp
    """
    from mfrbench.generators.augment import parse_mask_aug
    from mfrbench.recognizers.config import resolve_config
    from mfrbench.recognizers.train import train

    options = {**opts, "data": data or None, "head_args": _head_args(head_arg), "milestones": milestones,
               "time_budget_s": _duration(time_budget), "progress": False if no_progress else None}
    resolved = resolve_config(config_path, sets=sets, options=options, profile=profile)
    summary = train(resolved.config, resume=resume, given=resolved.given, augment_factory=parse_mask_aug)
    if summary.get("world_size", 1) > 1 and not _is_main():
        return
    val = (f"held-out rank-1 identification {summary['val_rank1']:.3f} (chance {summary['val_chance']:.3f}, "
           f"{int(summary['val_probes'])} probes)") if "val_rank1" in summary else "no validation identities"
    click.echo(f"{summary['stopped']}: epoch {summary['epoch']}, step {summary['global_step']}, "
               f"{summary['images_per_s']:.1f} img/s; {val}")
    click.echo(f"checkpoint: {summary['checkpoint']}")


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


@cli.command("export")
@click.option("--run", "run_dir", type=click.Path(exists=True), required=True, help="Run folder or checkpoint file.")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="[default: RUN_DIR/export/model.onnx]")
@click.option("--opset", type=click.IntRange(min=11), default=17, show_default=True)
@click.option("--tolerance", type=float, default=1e-4, show_default=True,
              help="Fail when ONNX and PyTorch embeddings differ by more than this.")
def export_cmd(run_dir: str, fmt: str, out: str | None, opset: int, tolerance: float) -> None:
    """Export a trained backbone to ONNX (dynamic batch) and check its embeddings against PyTorch.

    Input `input`: float32 (N, 3, 112, 112) RGB in (x - 127.5) / 127.5; output `embedding` (N, D).

    \b
    Examples:
      mfrbench export --run runs/r18 --format onnx
      mfrbench export --run runs/r18/checkpoints/last.pt --out r18.onnx
    """
    from mfrbench.recognizers.export import export_onnx

    res = export_onnx(run_dir, out, opset=opset, tolerance=tolerance)
    click.echo(f"wrote {res['path']} (opset {res['opset']}, dynamic batch, {res['embedding_dim']}-d)")
    click.echo(f"max |ONNX - PyTorch| = {res['max_abs_diff']:.2e} over {res['images']} images at batch sizes "
               f"{res['batch_sizes']} (tolerance {tolerance:g})")
