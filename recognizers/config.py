"""The training config: one frozen dataclass, YAML file -> defaults -> command line -> ``config.json``.

The resolved config is written to ``RUN_DIR/config.json`` and stored inside every checkpoint.
``config_hash`` identifies a trained model: it covers every field that changes the weights
(data, model, loss, optimisation, seed) and leaves out run control (where to write, worker
count, step/time limits, logging cadence).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mfrbench.errors import MfrbenchError

# Fields that steer a run without changing what it learns (excluded from the hash; may change on resume).
RUN_CONTROL = ("out", "workers", "max_steps", "time_budget_s", "log_every", "ckpt_every", "device", "progress")


@dataclass(frozen=True)
class TrainConfig:
    data: tuple[str, ...] = ()
    out: str = "runs/recognizer"
    backbone: str = "iresnet18"
    embedding_dim: int = 512
    head: str = "arcface"
    head_args: dict[str, float] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 64               # global batch: split evenly over torchrun processes
    lr: float = 0.1
    optimizer: str = "sgd"             # sgd | adamw
    momentum: float = 0.9
    weight_decay: float | None = None  # None: 5e-4 for SGD, 0.05 for AdamW
    schedule: str = "cosine"           # cosine | step
    warmup_epochs: float = 1.0
    milestones: tuple[float, ...] = ()  # step schedule: epochs at which lr *= gamma
    gamma: float = 0.1
    clip_grad: float | None = 5.0
    mask_ratio: float | None = None    # fraction of masked training images (None: use all)
    val_identities: float = 0.2        # fraction (<1) or count (>=1) of identities held out
    images_per_identity: int = 4       # K of the P x K batches (triplet)
    flip: bool = True
    color_jitter: float = 0.1
    amp: bool = True                   # mixed precision on CUDA (ignored on CPU)
    channels_last: bool = True
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    max_steps: int | None = None       # stop after this many optimiser steps in this invocation
    time_budget_s: float | None = None  # stop (with a checkpoint) after this much wall time
    log_every: int = 10
    ckpt_every: int = 0                # also checkpoint every N steps (0: at epoch ends only)
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"--batch-size must be >= 2, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.optimizer in ("sgd", "adamw"), f"--optimizer must be sgd or adamw, got {self.optimizer!r}"),
            (self.schedule in ("cosine", "step"), f"--schedule must be cosine or step, got {self.schedule!r}"),
            (self.mask_ratio is None or 0.0 <= self.mask_ratio <= 1.0,
             f"--mask-ratio must be in [0, 1], got {self.mask_ratio}"),
            (self.val_identities >= 0, f"--val-identities must be >= 0, got {self.val_identities}"),
            (self.images_per_identity >= 2, f"--images-per-identity must be >= 2, got {self.images_per_identity}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise MfrbenchError(msg)

    @property
    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 5e-4 if self.optimizer == "sgd" else 0.05

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["data"], d["milestones"] = list(self.data), list(self.milestones)
        return d


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Build a config from a dict (YAML/JSON); unknown keys are an error, not new attributes."""
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise MfrbenchError(f"unknown config keys {unknown}; valid keys: {', '.join(sorted(names))}")
    d = dict(d)
    for key in ("data", "milestones"):
        if key in d and d[key] is not None:
            d[key] = tuple(d[key]) if isinstance(d[key], (list, tuple)) else (d[key],)
    return TrainConfig(**d)


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """YAML/JSON file (optional) -> dataclass defaults -> ``overrides`` (``None`` values ignored)."""
    data: dict[str, Any] = {}
    if path is not None:
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(data)


def config_hash(cfg: TrainConfig | dict[str, Any]) -> str:
    """12 hex digits identifying what the config trains (run-control fields excluded)."""
    d = cfg.to_dict() if isinstance(cfg, TrainConfig) else dict(cfg)
    key = {k: v for k, v in sorted(d.items()) if k not in RUN_CONTROL}
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def merge_for_resume(saved: TrainConfig, requested: TrainConfig, explicit: set[str]) -> TrainConfig:
    """The config of a resumed run: the saved one, with run-control fields the user set again.

    Raises if the user explicitly changed a field that would make the resumed run a different run.
    """
    changed = sorted(k for k in explicit - set(RUN_CONTROL)
                     if getattr(saved, k) != getattr(requested, k))
    if changed:
        raise MfrbenchError(f"--resume: the run in {saved.out} was trained with different {', '.join(changed)}; "
                            "drop those options or choose a new --out")
    keep = {k: getattr(requested, k) for k in RUN_CONTROL if k in explicit or k == "out"}
    return dataclasses.replace(saved, **keep)
