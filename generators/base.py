"""The generator contract and registry shared by every mask generator.

A generator turns faces into masked faces. Every backend implements :meth:`MaskGenerator.generate`
on a batch; the dataset-level driver (reading a dataset or aligned manifest, workers, manifest
rows, mask maps, resume) is shared, so a backend file holds only its method.

Conventions (all backends):

* images are ``uint8`` RGB arrays ``(B, H, W, 3)``; GAN backends convert to ``[-1, 1]`` tensors
  internally;
* landmarks are iBUG-68 ``(B, 68, 2)`` in the same pixel frame as the images (or ``None`` for
  backends that do not need them);
* the output is the masked images (same shape), the binary mask maps ``(B, H, W)`` ``uint8``
  (1 = mask pixel) and one ``dict`` of manifest columns per image (mask type, wearing mode, ...).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from mfrbench.registry import Registry


@dataclass
class GeneratedBatch:
    images: np.ndarray                 # (B, H, W, 3) uint8 RGB, masked faces
    mask_maps: np.ndarray              # (B, H, W) uint8, 1 = mask pixel
    info: list[dict] = field(default_factory=list)  # per image: extra manifest columns


class MaskGenerator(abc.ABC):
    """Turns faces into masked faces (see the module docstring for the array conventions)."""

    name: str = "generator"

    @abc.abstractmethod
    def generate(self, images: np.ndarray, landmarks: np.ndarray | None, *,
                 rng: np.random.Generator) -> GeneratedBatch:
        """Mask a batch of faces. ``rng`` is the only source of randomness (reproducibility)."""


GENERATORS: Registry[MaskGenerator] = Registry("generator")
register_generator = GENERATORS.register
create_generator = GENERATORS.create
list_generators = GENERATORS.names
