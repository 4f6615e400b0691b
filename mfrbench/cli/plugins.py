"""Where each registry lives, so ``mfrbench list`` and ``doctor`` can find all of them (a CLI concern:
the table names plugin modules, which the core never imports).

Registries are defined next to the code they hold (timm style); this table only says where.
A module that fails to import (an optional dependency missing) is reported, not fatal.
"""

from __future__ import annotations

import importlib

from mfrbench.registry import Registry

REGISTRY_SOURCES: dict[str, tuple[str, str]] = {
    "datasets": ("mfrbench.datasets", "DATASETS"),
    "detectors": ("mfrbench.faces", "DETECTORS"),
    "landmarkers": ("mfrbench.faces", "LANDMARKERS"),
    "generators": ("mfrbench.generators.base", "GENERATORS"),
    "backbones": ("mfrbench.recognizers.backbones", "BACKBONES"),
    "heads": ("mfrbench.recognizers.heads", "HEADS"),
    "gan-methods": ("mfrbench.generators.gan.contract", "GAN_METHODS"),
    "aux-modules": ("mfrbench.generators.seg", "AUX_MODULES"),
    "benchmarks": ("mfrbench.protocols", "PROTOCOLS"),
    "reference-embedders": ("mfrbench.embedders", "REFERENCE_EMBEDDERS"),
}


def all_registries() -> dict[str, Registry]:
    out = {}
    for kind, (mod, attr) in REGISTRY_SOURCES.items():
        out[kind] = getattr(importlib.import_module(mod), attr)
    return out
