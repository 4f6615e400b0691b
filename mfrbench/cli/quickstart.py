"""``mfrbench quickstart``."""

from __future__ import annotations

import click

from mfrbench.cli import cli


@cli.command("quickstart")
@click.option("--out", type=click.Path(file_okay=False), default="quickstart-out", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True, help="Images per dataset.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
def quickstart_cmd(out: str, limit: int, workers: int) -> None:
    """Run the quick end-to-end pipeline (every stage that exists, small) into --out.

    \b
    Example:
      mfrbench quickstart --out quickstart-out
    """
    from mfrbench.quickstart import run_quickstart

    run_quickstart(out, limit=limit, workers=workers, echo=click.echo)
