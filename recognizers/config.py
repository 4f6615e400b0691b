"""The recognizer training config: one frozen dataclass, resolved by :mod:`mfrbench.config`.

Layers (:func:`load_config`): dataclass defaults -> YAML file (``--config``) -> ``--set KEY=VALUE``
-> explicit options. The resolved config is written to ``RUN_DIR/config.json`` and stored inside
every checkpoint (:class:`mfrbench.runs.RunDir`). ``config_hash`` identifies a trained model: it
covers every field that changes the weights (data, model, loss, optimisation, seed, epochs) and
leaves out :data:`RUN_CONTROL` (where to write, worker count, step/time limits, logging cadence).
On ``--resume``, run-control fields and :data:`EXTENDABLE` ones (``epochs``) may change; any
other changed field is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfrbench import config as _config
from mfrbench.errors import MfrbenchError

#: Fields that steer a run without changing what it learns (not hashed; may change on resume).
RUN_CONTROL = ("out", "workers", "max_steps", "time_budget_s", "log_every", "ckpt_every", "device", "progress",
               "profile", "val_untrained")
#: Fields that may change on resume to extend a run (hashed: they change the weights).
EXTENDABLE = ("epochs",)


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
    gray: float = 0.0                  # probability of a grayscale copy (LFW-a and many CCTV probes are gray)
    input_size: int = 112              # the backbone's own resolution: 112x112 crops are resized inside it
    mask_aug: str | None = None        # on-the-fly masking spec, e.g. "mtf:p=0.5" (built by the CLI's factory)
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
    profile: str | None = None         # the profile the values came from (a label: its values are the fields)
    val_untrained: bool = True         # a fresh run first validates its untrained network (epoch 0 of val_log)
    # --- fine-tuning (issue 16, recognizers/pretrained.py) ---
    init: str | None = None            # start the backbone from a train-fr run/checkpoint or a state dict file
    backbone_lr_mult: float = 1.0      # the backbone trains at lr * this; the fresh head at lr
    freeze_backbone_epochs: float = 0.0  # backbone frozen (no update, BatchNorm statistics fixed) this long

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
            (0.0 <= self.gray <= 1.0, f"--gray must be in [0, 1], got {self.gray}"),
            (16 <= self.input_size <= 512, f"--input-size must be in [16, 512], got {self.input_size}"),
            (self.images_per_identity >= 2, f"--images-per-identity must be >= 2, got {self.images_per_identity}"),
            (self.backbone_lr_mult >= 0, f"--backbone-lr-mult must be >= 0, got {self.backbone_lr_mult}"),
            (self.freeze_backbone_epochs >= 0,
             f"--freeze-backbone-epochs must be >= 0, got {self.freeze_backbone_epochs}"),
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
        return _config.to_dict(self)


#: Named recipes (``train-fr --profile NAME``). ``cpu``: from scratch on the kit's ``celeba-rec`` (299
#: identities, about 21 crops each) in at most 20 minutes on 2 cores; see docs/recognizers.md for how each
#: loss's recipe was found and what it reaches (benchmarks/bench_learning.py). ``smoke``: seconds, for CI.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"backbone": "mobilefacenet", "input_size": 64, "epochs": 1, "batch_size": 16, "max_steps": 4,
              "workers": 0, "val_identities": 0.3},
    "cpu": {
        "backbone": "mobilefacenet", "input_size": 64, "gray": 0.3, "batch_size": 128, "epochs": 8,
        "warmup_epochs": 1.0, "val_identities": 30, "workers": 1, "time_budget_s": 20 * 60.0,
        "recipes": {
            "cosface": {"lr": 0.1, "head_args": {"s": 32.0, "m": 0.35}},
            "arcface": {"lr": 0.1, "head_args": {"s": 32.0, "m": 0.3}},
            "softmax": {"lr": 0.1},
            "triplet": {"lr": 0.05, "head_args": {"margin": 0.3}},
        },
    },
}


def config_from_dict(d: Mapping[str, Any]) -> TrainConfig:
    """Build a config from a dict (YAML/JSON); unknown keys are an error, values typed from the fields."""
    return _config.from_dict(TrainConfig, d, where="train-fr config")


def profile_values(name: str | None, head: str) -> dict[str, Any]:
    """The profile ``name``'s values for the loss ``head``: its common part, then that loss's recipe."""
    if name is None:
        return {}
    prof = _config.pick_profile(PROFILES, name)
    recipes = prof.pop("recipes", {})
    return {**prof, **recipes.get(head, {}), "profile": name}


def resolve_config(path: str | Path | None = None, *, sets: Iterable[str] = (),
                   options: Mapping[str, Any] | None = None, profile: str | None = None
                   ) -> _config.Resolved[TrainConfig]:
    """Defaults -> ``profile`` (for the chosen loss) -> YAML/JSON file -> ``--set`` strings -> ``options``.

    ``None`` options are "not given". The loss is read from the later layers first, so each loss gets its
    own recipe. See :func:`mfrbench.config.resolve`; ``given`` of the result feeds
    :meth:`mfrbench.runs.RunDir.begin`.
    """
    sets = list(sets)
    prof = {}
    if profile is not None:
        head = _config.resolve(TrainConfig, file=path, sets=sets, options=options, where="train-fr config").config.head
        prof = profile_values(profile, head)
    return _config.resolve(TrainConfig, profile=prof, file=path, sets=sets, options=options,
                           where="train-fr config")


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """YAML/JSON file (optional) -> dataclass defaults -> ``overrides`` (``None`` values ignored)."""
    return resolve_config(path, options=overrides).config


def config_hash(cfg: TrainConfig | Mapping[str, Any]) -> str:
    """12 hex digits identifying what the config trains (run-control fields excluded)."""
    return _config.config_hash(cfg, exclude=RUN_CONTROL)
