"""Where data and models live.

Resolution order for the data root (first hit wins):

1. an explicit ``--root`` / ``--data-root`` argument,
2. the ``MFRBENCH_DATA`` environment variable,
3. ``../shared/data`` relative to the current directory (the project's data kit layout),
4. ``shared/data`` next to the source checkout (``<checkout>/../shared/data``).

Models are looked up under ``<data root>/models`` unless ``MFRBENCH_MODELS`` points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from mfrbench.errors import DataNotFoundError

ENV_DATA = "MFRBENCH_DATA"
ENV_MODELS = "MFRBENCH_MODELS"


def _candidates() -> list[Path]:
    out = []
    if os.environ.get(ENV_DATA):
        out.append(Path(os.environ[ENV_DATA]))
    out.append(Path.cwd().parent / "shared" / "data")
    out.append(Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    return out


def data_root(explicit: str | os.PathLike | None = None, *, required: bool = False) -> Path | None:
    """Return the data root, or ``None`` (or raise, if ``required``) when none exists."""
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.exists():
            raise DataNotFoundError(f"data root {p} does not exist; pass an existing --root or set {ENV_DATA}")
        return p
    for cand in _candidates():
        if cand.is_dir():
            return cand.resolve()
    if required:
        raise DataNotFoundError(
            f"no data root found; set {ENV_DATA}=/path/to/data or pass --root "
            "(expected layout: see README 'Data layouts')"
        )
    return None


def models_dir() -> Path | None:
    """Directory holding the offline models (``yunet/``, ``pfld68/``, ``mediapipe/``, ...)."""
    if os.environ.get(ENV_MODELS):
        return Path(os.environ[ENV_MODELS])
    root = data_root()
    return root / "models" if root is not None else None


def model_file(rel: str) -> Path:
    """Path of a model file under :func:`models_dir`, or a clear error if it is absent."""
    base = models_dir()
    if base is None or not (base / rel).is_file():
        where = base / rel if base is not None else rel
        raise DataNotFoundError(
            f"model file {where} not found; set {ENV_MODELS} to the folder holding {rel} "
            f"or {ENV_DATA} to a data root with models/ (run `mfrbench doctor`)"
        )
    return base / rel


def dataset_dir(name: str, explicit: str | os.PathLike | None = None) -> Path:
    """Root folder of a dataset: ``explicit`` if given, else ``<data root>/<name>``."""
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.exists():
            raise DataNotFoundError(f"dataset root {p} does not exist; check --root")
        return p
    root = data_root(required=True)
    assert root is not None
    p = root / name
    if not p.exists():
        raise DataNotFoundError(f"dataset {name!r} not found under {root}; pass --root PATH to its folder")
    return p
