"""``mfrbench doctor``."""

from __future__ import annotations

import click

from mfrbench.cli import cli


@cli.command("doctor")
def doctor_cmd() -> None:
    """Report what this machine offers: Python/torch/CUDA/onnxruntime, face models, FID
    weights and datasets (with counts). Each missing piece comes with a fix hint.

    \b
    Example:
      mfrbench doctor
    """
    from mfrbench.doctor import doctor_lines

    for line in doctor_lines():
        click.echo(line)
