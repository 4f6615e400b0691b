"""``mfrbench quickstart``."""

from __future__ import annotations

import click

from mfrbench.cli import cli


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
    from mfrbench.quickstart import run_quickstart

    run_quickstart(out, limit=limit, workers=workers, train_minutes=train_minutes, seed=seed, echo=click.echo)
