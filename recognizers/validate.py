"""Validation on held-out identities: open-set rank-1 identification on embeddings.

The held-out identities never reach the classifier. For each of them the first unmasked image
(by path; the first image when all are masked) is the gallery entry and every other image is a
probe; a probe is correct when its nearest gallery embedding (cosine) has its identity. Chance
level is ``1 / number of gallery identities``.

Before the first step a fresh run also validates its *untrained* network (:func:`untrained_baseline`,
logged as epoch 0), its BatchNorm statistics re-estimated on training images, so the log shows what
training added over the same architecture and initial weights, not over arbitrary initial statistics.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from mfrbench.recognizers.data import FaceImages, Sample, make_loader


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` RGB -> float ``(x - 127.5) / 127.5`` (the backbones' input convention)."""
    return (images.float() - 127.5) / 127.5


@torch.no_grad()
def embed_loader(backbone: nn.Module, loader, device: torch.device, channels_last: bool = False) -> np.ndarray:
    was_training = backbone.training
    backbone.eval()
    out = []
    for images, _labels, _dropped in loader:
        x = normalize_images(images.to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(backbone(x).float().cpu().numpy())
    backbone.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def gallery_probe_split(samples: list[Sample], labels: np.ndarray) -> np.ndarray:
    """Boolean mask of gallery images: one per identity, unmasked first, then by path."""
    gallery = np.zeros(len(samples), bool)
    first: dict[int, int] = {}
    for i in sorted(range(len(samples)), key=lambda i: (samples[i].masked, samples[i].path, samples[i].offset)):
        first.setdefault(int(labels[i]), i)
    gallery[list(first.values())] = True
    return gallery


def rank1_identification(embeddings: np.ndarray, labels: np.ndarray, gallery: np.ndarray) -> float:
    """Fraction of probes whose nearest gallery embedding (cosine) has the probe's label.

    >>> e = np.array([[1, 0], [0, 1], [0.9, 0.1], [0.2, 0.8]], float)
    >>> rank1_identification(e, np.array([0, 1, 0, 0]), np.array([True, True, False, False]))
    0.5
    """
    z = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)
    sims = z[~gallery] @ z[gallery].T                          # (probes, gallery)
    pred = labels[gallery][sims.argmax(1)]
    return float((pred == labels[~gallery]).mean())


def validate(backbone: nn.Module, samples: list[Sample], labels: np.ndarray, device: torch.device, *,
             workers: int = 0, batch_size: int = 64, channels_last: bool = False) -> dict[str, float]:
    """Open-set rank-1 identification on the held-out identities (see the module docstring)."""
    loader = make_loader(FaceImages(samples, labels, train=False), workers=workers, batch_size=batch_size,
                         pin_memory=torch.device(device).type == "cuda")
    emb = embed_loader(backbone, loader, device, channels_last)
    if len(emb) != len(samples):  # unreadable validation images: evaluate on what was read
        return {"val_rank1": float("nan"), "val_chance": float("nan"), "val_probes": 0.0, "val_identities": 0.0}
    gallery = gallery_probe_split(samples, labels)
    return {"val_rank1": rank1_identification(emb, labels, gallery), "val_chance": 1.0 / gallery.sum(),
            "val_probes": float((~gallery).sum()), "val_identities": float(gallery.sum())}


@torch.no_grad()
def reestimate_batchnorm(backbone: nn.Module, batches, device: torch.device) -> nn.Module:
    """``backbone`` with every BatchNorm's running statistics recomputed (cumulative average) over
    ``batches`` of uint8 ``(B, 3, H, W)`` images; returned in eval mode."""
    for m in backbone.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    backbone.train()
    for images in batches:
        backbone(normalize_images(images.to(device)))
    return backbone.eval()


def untrained_baseline(backbone: nn.Module, train: list[Sample], labels: np.ndarray, val: list[Sample],
                       val_labels: np.ndarray, device: torch.device, *, n_images: int = 512, seed: int = 0,
                       channels_last: bool = False) -> dict[str, float]:
    """:func:`validate` of a copy of the (untrained) ``backbone``, its BatchNorm statistics re-estimated on
    ``n_images`` training images (chosen by ``seed``, not augmented)."""
    pick = np.sort(np.random.default_rng([seed, 13]).permutation(len(train))[:n_images])
    loader = make_loader(FaceImages([train[i] for i in pick], labels[pick], train=False), workers=0, batch_size=64)
    model = reestimate_batchnorm(copy.deepcopy(backbone), (b[0] for b in loader), device)
    return validate(model, val, val_labels, device, channels_last=channels_last)
