"""The discriminator's image history (:class:`ImagePool`), the sampling EMA (:class:`EMA`) and freezing nets."""

from __future__ import annotations

import copy
from typing import Iterable

import numpy as np
import torch
from torch import nn


def set_requires_grad(nets: Iterable[nn.Module], flag: bool) -> None:
    """Freeze (``False``) or unfreeze networks: D during the generator step, frozen helpers and EMA copies always."""
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


class ImagePool:
    """History of generated images for the discriminator (Shrivastava et al. 2017, CycleGAN ``ImagePool``).

    Until full, each image is stored and returned; afterwards, with probability 1/2 a stored image
    is returned (and replaced by the new one), else the new one. Randomness comes from ``rng``.
    """

    def __init__(self, size: int = 50) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img[None]
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif rng.random() > 0.5:
                i = int(rng.integers(len(self.images)))
                out.append(self.images[i].clone())
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.cat(out, 0)

    def query_weighted(self, images: torch.Tensor, weights: torch.Tensor,
                       rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`query` for images that carry a per-sample weight (MFGAN's lambda_cor for D's fake term).

        The weight travels with its image as an extra constant channel, so a pooled fake comes
        back with its own weight, not the current batch's.

        Returns:
            ``(images, weights)``: ``(B, C, H, W)`` float images and their ``(B,)`` weights.
        """
        plane = weights.detach().float()[:, None, None, None].expand(-1, 1, *images.shape[2:])
        pooled = self.query(torch.cat([images.detach().float(), plane], 1), rng)
        return pooled[:, :-1], pooled[:, -1, 0, 0]

    def state_dict(self) -> dict:
        return {"size": self.size, "images": torch.cat(self.images, 0).cpu() if self.images else torch.empty(0)}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.size = int(state["size"])
        self.images = [x[None].to(device) for x in state["images"]]


class EMA:
    """Exponential moving average of a network's weights, for sampling (StarGAN v2 ``moving_average``).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` so short runs are not stuck near init.
    """

    def __init__(self, net: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.net = copy.deepcopy(net).eval()
        set_requires_grad([self.net], False)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for pe, p in zip(self.net.parameters(), net.parameters()):
            pe.lerp_(p.detach(), 1 - d)
        for be, b in zip(self.net.buffers(), net.buffers()):
            be.copy_(b)
