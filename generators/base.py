"""The registry of mask generators, and the registry-aware front door to the core's dataset driver.

The generator contract (:class:`MaskGenerator`, :class:`GeneratedBatch`) and the dataset driver
(:func:`mfrbench.generate.generate_dataset`) live in the core, :mod:`mfrbench.generate`, which never
names a backend. This module is the plugin side: :data:`GENERATORS` holds the built-in backends,
:class:`GeneratorFactory` turns a registered name and its options into the picklable zero-argument
factory the driver takes, and :func:`generate_dataset` accepts a name for callers that have one.
The contract and driver names are re-exported so a backend file imports everything from one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mfrbench.generate import (
    GenerateConfig,
    GeneratedBatch,
    GeneratorIdentity,
    GeneratorSource,
    MaskGenerator,
    batch_rng,
    fast_decode,
    image_rng,
    save_sample_grid,
)
from mfrbench.generate import generate_dataset as _generate_dataset
from mfrbench.registry import LazyRegistry, Registry

__all__ = ["GENERATORS", "GeneratorFactory", "create_generator", "generate_dataset", "generator_factory",
           "list_generators", "register_generator",
           # re-exported from mfrbench.generate (the contract backends implement, and the driver's helpers)
           "GenerateConfig", "GeneratedBatch", "GeneratorIdentity", "MaskGenerator", "batch_rng", "fast_decode",
           "image_rng", "save_sample_grid"]

#: Modules whose import registers the built-in generators (mtf first: it needs no torch).
BUILTIN_GENERATOR_MODULES = ("mfrbench.generators.mtf", "mfrbench.generators.cyclegan",
                             "mfrbench.generators.iamgan", "mfrbench.generators.mfgan")

GENERATORS: Registry[MaskGenerator] = LazyRegistry("generator", BUILTIN_GENERATOR_MODULES)
register_generator = GENERATORS.register
create_generator = GENERATORS.create
list_generators = GENERATORS.names


@dataclass(frozen=True)
class GeneratorFactory:
    """A registered generator and its options, as the picklable zero-argument factory the driver takes.

    Each worker process calls it once, so a GAN is loaded per process instead of pickled.
    """

    name: str
    kwargs: dict = field(default_factory=dict)

    def __call__(self) -> MaskGenerator:
        return create_generator(self.name, **self.kwargs)


def generator_factory(name: str, **kwargs) -> GeneratorFactory:
    """The factory of the registered generator ``name`` (unknown names fail here, with the valid ones)."""
    GENERATORS.get(name)
    return GeneratorFactory(name, dict(kwargs))


def generate_dataset(generator: "str | GeneratorSource", out_dir: "str | os.PathLike", *,
                     generator_kwargs: dict | None = None, **kwargs) -> dict:
    """:func:`mfrbench.generate.generate_dataset`, also accepting a registered name (+ ``generator_kwargs``)."""
    if isinstance(generator, str):
        generator = generator_factory(generator, **(generator_kwargs or {}))
    elif generator_kwargs:
        raise TypeError("generator_kwargs apply to a registered generator name only")
    return _generate_dataset(generator, out_dir, **kwargs)
