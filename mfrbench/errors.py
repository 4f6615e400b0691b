"""Exceptions that separate user mistakes from bugs.

``MfrbenchError`` (and subclasses) carry a one-line message that says what to do; the CLI
turns them into ``click.ClickException`` so users never see a traceback for their own
mistake. ``SkipImage`` is raised inside per-image pipelines and becomes a ``skipped`` manifest
row with its reason; it never escapes a pipeline.
"""

from __future__ import annotations


class MfrbenchError(Exception):
    """A user-facing error with an actionable one-line message."""


class DataNotFoundError(MfrbenchError):
    """A dataset, model file or data root is missing."""


class InvalidOptionError(MfrbenchError, ValueError):
    """An option value or name a component does not take (``--head-arg nosuch=3``); also a ``ValueError``."""


class SkipImage(Exception):
    """This input cannot be processed; ``reason`` is recorded in the manifest.

    Reasons are short machine-friendly codes followed by detail, e.g.
    ``"no_face: detector found no face above score 0.6"``.
    """

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)

    @property
    def reason(self) -> str:
        return str(self)


class DamagedFileError(MfrbenchError):
    """A file mfrbench wrote earlier is damaged (truncated, garbage appended, foreign content).

    The message names the file (and the line, for tables). Callers that can rebuild the file
    (an embedding cache) catch it and rebuild; for a store of results it is the user's call.
    """
