"""The loop's config (:class:`TrainConfig`), the profiles, and resolving both configs of a run.

A run has two frozen configs: :class:`TrainConfig` (the loop and the data, shared by every family)
and the family's own model config (``CycleGANConfig``, ``IAMGANConfig``, ``MFGANConfig``, ...).
Profiles: ``smoke`` (seconds, for CI), ``cpu`` (an honest small run on 2 cores: 64 px, tens of
minutes), ``paper`` (MFGAN paper schedule: batch 1, 450K steps, 256 px; a GPU job).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from mfrbench.errors import MfrbenchError
from mfrbench.generators.gan.contract import get_method


@dataclass(frozen=True)
class TrainConfig:
    """The loop and the data, shared by every GAN family (model hyper-parameters live in the family's config)."""

    method: str = "cyclegan"
    size: int = 128                 # training resolution (64 | 128 | 256)
    steps: int = 10_000
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    decay_start: float = 0.5        # fraction of the steps after which the LR decays linearly to 0
    ema_decay: float = 0.999
    sample_every: int = 500
    ckpt_every: int = 1000
    log_every: int = 10
    seed: int = 0
    max_faces: int | None = None    # use at most N crops of each domain (None: all)
    max_masks: int | None = None
    min_face_px: int = 40           # drop detected faces narrower than this (tiny crowd faces)
    flip: bool = True               # random horizontal flips
    amp: bool = False               # bf16 autocast on CUDA
    n_sample: int = 8               # images per sample-grid row


PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # Seconds on 2 cores, on real data: proves the whole path (data, steps, samples, checkpoint).
    "smoke": {"train": dict(size=64, steps=4, batch_size=2, sample_every=4, ckpt_every=2, log_every=1,
                            max_faces=16, max_masks=16, n_sample=4),
              "model": dict(ngf=8, ndf=8, n_blocks=2, pool_size=4)},
    # An honest small run on a 2-core CPU: 64 px, narrow nets (ngf 24), 1.5K steps of batch 2, no identity
    # term (it costs two more generator passes per step); about 1 s/step on one free core.
    "cpu": {"train": dict(size=64, steps=1500, batch_size=2, sample_every=150, ckpt_every=150, log_every=10,
                          decay_start=0.6),
            "model": dict(ngf=24, ndf=32, n_blocks=6, lambda_identity=0.0)},
    # The MFGAN paper's schedule (Sec. IV-A): batch 1, 450K steps; CycleGAN's 256 px, 9 blocks.
    "paper": {"train": dict(size=256, steps=450_000, batch_size=1, sample_every=5000, ckpt_every=10_000,
                            log_every=100, decay_start=0.5),
              "model": dict(ngf=64, ndf=64, n_blocks=9)},
}


def _check_keys(cls: type, data: dict, where: str) -> None:
    """A misspelled key is an error listing the valid ones, never a silently ignored setting."""
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise MfrbenchError(f"Unknown {where} keys {sorted(unknown)}; valid: {sorted(f.name for f in fields(cls))}")


def resolve_config(method: str, profile: str | None = None, *, train: dict | None = None,
                   model: dict | None = None) -> tuple[TrainConfig, Any]:
    """Profile defaults -> explicit overrides (``None`` values ignored) -> frozen configs.

    Returns:
        ``(train_cfg, model_cfg)``; ``model_cfg`` is the family's own dataclass.
    """
    spec = get_method(method)
    prof = PROFILES.get(profile or "", None)
    if profile and prof is None:
        raise MfrbenchError(f"Unknown profile {profile!r}. Available: {', '.join(PROFILES)}")
    t = {**(prof or {}).get("train", {}), **{k: v for k, v in (train or {}).items() if v is not None}}
    model_cls = spec.config_cls
    m = {k: v for k, v in (prof or {}).get("model", {}).items() if k in {f.name for f in fields(model_cls)}}
    m.update({k: v for k, v in (model or {}).items() if v is not None})
    _check_keys(TrainConfig, t, "train config")
    _check_keys(model_cls, m, f"{method} config")
    tc = TrainConfig(**{**t, "method": spec.name})
    if tc.size % 4:
        raise MfrbenchError(f"Expected --size divisible by 4 (64, 128, 256), but got {tc.size}")
    return tc, model_cls(**m)


def config_dict(train: TrainConfig, model_cfg: Any, extra: dict | None = None) -> dict:
    """Both configs (and ``extra`` keys: profile, data) as the JSON-ready dict a run folder records."""
    return {"method": train.method, "train": dataclasses.asdict(train), "model": dataclasses.asdict(model_cfg),
            **(extra or {})}


def configs_from_dict(config: dict) -> tuple[TrainConfig, Any]:
    """The two frozen configs back from a recorded :func:`config_dict`."""
    spec = get_method(config["method"])
    return TrainConfig(**config["train"]), spec.config_cls(**config["model"])
