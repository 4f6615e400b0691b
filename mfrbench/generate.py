"""The dataset generation driver every mask generator uses, and the generator identity it records.

A generator's identity (:class:`GeneratorIdentity`) is written once, by :func:`generate_dataset`,
into the masked manifest's ``manifest.json`` under ``"generator"``. Every reader (``train-fr``,
``eval``, ``quality``, ``report``) takes it from there with :func:`read_generator_identity`; nobody
guesses the generator from a name, a method string or a substring.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from mfrbench.errors import MfrbenchError

#: Families a masked set can come from; ``none`` marks unmasked (real) data.
FAMILIES = ("mtf", "cyclegan", "iamgan", "mfgan", "none")
#: How a masked set's mask maps were made: the generator's own mask, or estimated from its output.
MAPS = ("exact", "seg", "diff", "")


@dataclass(frozen=True)
class GeneratorIdentity:
    """Which generator made a masked set, structured so readers match fields, never substrings.

    Attributes:
        family: ``mtf``, ``cyclegan``, ``iamgan``, ``mfgan``, or ``none`` for unmasked data.
        variant: the preset (``mtf``, ``cyclegan``, ``iamgan``, ``mfgan``, ``mfgan-no-inv``, ...);
            result rows call it ``generator``.
        config_hash: 12 hex digits: the GAN run's resolved-config hash (``mtf``: hash of its config).
        run: the GAN run folder ("" for ``mtf``).
        maps: ``exact`` (the map is the generator's own mask), ``seg`` / ``diff`` (estimated from the output).
    """

    family: str
    variant: str
    config_hash: str = ""
    run: str = ""
    maps: str = ""

    def __post_init__(self) -> None:
        if not self.family or not self.variant:
            raise ValueError(f"Expected a non-empty family and variant, but got {self.family!r} / {self.variant!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorIdentity":
        """Build from a manifest's ``"generator"`` record (unknown keys are ignored, missing ones empty)."""
        return cls(**{k: str(d.get(k) or "") for k in ("family", "variant", "config_hash", "run", "maps")})

    def row(self) -> dict:
        """The result-row columns this identity fills (``generator`` is the variant)."""
        return {"generator": self.variant, "generator_family": self.family, "generator_hash": self.config_hash}


#: The identity of unmasked (real) training or evaluation data.
UNMASKED = GeneratorIdentity(family="none", variant="none")


def hash_config(config: dict) -> str:
    """12 hex digits of a JSON-able config (keys sorted): the same config always gives the same hash."""
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_generator_identity(manifest_dir: str | os.PathLike) -> GeneratorIdentity:
    """The identity of the generator that made a masked manifest (``manifest.json`` ``"generator"``).

    Raises:
        MfrbenchError: the folder is not a masked manifest, or it was written before identities were
            recorded (regenerate it).
    """
    from mfrbench.manifest import read_manifest_meta

    meta = read_manifest_meta(manifest_dir)
    if meta.get("kind") != "masked":
        raise MfrbenchError(f"{manifest_dir} is a {meta.get('kind')!r} manifest, not a masked one "
                            "(the output folder of `mfrbench generate`)")
    rec = meta.get("generator")
    if not isinstance(rec, dict) or not rec.get("family") or not rec.get("variant"):
        raise MfrbenchError(f"{manifest_dir} has no generator identity record (written by an older mfrbench): "
                            "regenerate it with `mfrbench generate`")
    return GeneratorIdentity.from_dict(rec)
