"""The ``mfrbench`` command line: thin click commands over library functions.

Each command parses its options, calls one library function and prints a short summary.
User mistakes (missing data, unknown names, bad arguments) surface as one-line errors: the
group below turns :class:`~mfrbench.errors.MfrbenchError` and
:class:`~mfrbench.registry.UnknownNameError` into ``click.ClickException`` in one place.
Command modules register themselves on import; add a new one to ``_COMMAND_MODULES``.
"""

from __future__ import annotations

import importlib
import logging

import click

from mfrbench import __version__
from mfrbench.errors import MfrbenchError
from mfrbench.registry import UnknownNameError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (MfrbenchError, UnknownNameError) as err:
            raise click.ClickException(str(err)) from err
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; rerun the same command to resume where it stopped")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mfrbench")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def cli(verbose: bool) -> None:
    """mfrbench: which way of making masked training data gives the best masked-face recognizer?

    \b
    Pipeline:  align -> generate (mask) -> train-fr -> eval -> report
    Start with:  mfrbench doctor     (what this machine offers)
                 mfrbench datasets   (which datasets are found where)
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


_COMMAND_MODULES = (
    "mfrbench.cli.data",
    "mfrbench.cli.doctor",
    "mfrbench.cli.quickstart",
    "mfrbench.cli.generate",
    "mfrbench.cli.recognize",
    "mfrbench.cli.gan",
    "mfrbench.cli.aux",
    "mfrbench.cli.evaluate",
    "mfrbench.cli.scale",
    "mfrbench.cli.reproduce",
)

for _mod in _COMMAND_MODULES:
    importlib.import_module(_mod)


def main() -> None:  # pragma: no cover - console entry point
    cli()
