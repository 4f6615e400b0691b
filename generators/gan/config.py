"""The loop's config (:class:`TrainConfig`), the profiles, and resolving both configs of a run.

A run has two frozen configs: :class:`TrainConfig` (the loop and the data, shared by every family)
and the family's own model config (``CycleGANConfig``, ``IAMGANConfig``, ``MFGANConfig``, ...).
Both are resolved by the one resolver, :func:`mfrbench.config.resolve` (defaults -> profile ->
YAML file -> ``--set`` -> command-line options). Profiles: ``smoke`` (seconds, for CI), ``cpu``
(an honest small run on 2 cores: 64 px, tens of minutes), ``paper`` (MFGAN paper schedule:
batch 1, 450K steps, 256 px; a GPU job).

A run folder records them as sections (:func:`run_config`): ``{"method", "profile", "faces",
"masks", "train": TrainConfig, "model": <family config>}``. Its resume policy
(:class:`mfrbench.runs.RunDir`): :data:`GAN_RUN_CONTROL` may change on resume and stays out of the
config hash, :data:`GAN_EXTENDABLE` (the run's length) may change and stays in it; any other
option given again must equal the saved one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mfrbench.config import Resolved, from_dict, load_file, pick_profile, resolve
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
    holdout_masks: float = 0.0      # share of the masked photos never trained on (KID/FID of the read-out)
    readout: bool = True            # write RUN/quality.json + quality_grid.png at the end (needs a Seg)
    readout_seg: str | None = None  # the common Seg of the read-out (None: the run's own seg_checkpoint)
    readout_det: str | None = None  # Det for the read-out's wearing share (None: the run's det_checkpoint)
    readout_kid: int = 200          # crops per side of the read-out's KID/FID (0: none; Inception's load and
    #                                 first passes cost ~15 CPU-s, more than a smoke run's training)


PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # Seconds on 2 cores, on real data: proves the whole path (data, steps, samples, checkpoint).
    "smoke": {"train": dict(size=64, steps=4, batch_size=2, sample_every=4, ckpt_every=2, log_every=1,
                            max_faces=16, max_masks=16, n_sample=4, readout_kid=0),
              "model": dict(ngf=8, ndf=8, n_blocks=2, pool_size=4)},
    # An honest small run on a 2-core CPU: 64 px, narrow nets (ngf 24), 1.5K steps of batch 2, no identity
    # term (it costs two more generator passes per step); compositing generators (issue 14: A * C + (1 - A) * x,
    # composited at the crop's resolution when generating), resize-conv up-sampling (no checkerboard); about
    # 0.4 s/step (MFGAN) on one core of the shared machine.
    "cpu": {"train": dict(size=64, steps=1500, batch_size=2, sample_every=150, ckpt_every=150, log_every=10,
                          decay_start=0.6, holdout_masks=0.25),
            "model": dict(ngf=24, ndf=32, n_blocks=6, lambda_identity=0.0, output="composite",
                          upsample="resize")},
    # The MFGAN paper's schedule (Sec. IV-A): batch 1, 450K steps; CycleGAN's 256 px, 9 blocks.
    "paper": {"train": dict(size=256, steps=450_000, batch_size=1, sample_every=5000, ckpt_every=10_000,
                            log_every=100, decay_start=0.5),
              "model": dict(ngf=64, ndf=64, n_blocks=9)},
}


#: Options that steer a run without changing what it learns: they may change on ``--resume`` and are left
#: out of the config hash (threads and the device are arguments, not config: always the current call's).
GAN_RUN_CONTROL = ("train.log_every", "train.sample_every", "train.ckpt_every", "train.n_sample", "train.amp",
                   "train.readout", "train.readout_seg", "train.readout_det", "train.readout_kid")
#: The run's length: may grow on ``--resume`` (MFGAN refuses a change that moves a stage it has passed).
GAN_EXTENDABLE = ("train.steps", "model.stage_steps")

ConfigFile = str | os.PathLike | Mapping[str, Any] | None


def resolve_configs(method: str, profile: str | None = None, *, config_file: ConfigFile = None,
                    train_sets: Iterable[str] | Mapping[str, Any] = (),
                    model_sets: Iterable[str] | Mapping[str, Any] = (), train: Mapping[str, Any] | None = None,
                    model: Mapping[str, Any] | None = None) -> tuple[Resolved[TrainConfig], Resolved[Any]]:
    """Both configs of a run, each defaults -> ``profile`` -> ``config_file`` section -> ``--set`` -> options.

    Args:
        method: the registered family (``--method``); picks the model-config class.
        profile: a name in :data:`PROFILES` (its ``model`` keys that the family lacks are skipped), with the
            family's own ``profile_model`` entries for it over them.
        config_file: YAML with sections ``train:`` and ``model:`` (or that mapping).
        train_sets, model_sets: ``KEY=VALUE`` strings (or mappings) for each section.
        train, model: explicit options; ``None`` values are "not given".

    Returns:
        ``(train, model)`` :class:`~mfrbench.config.Resolved` configs; their ``given`` keys are what a
        resumed run compares with the saved run.
    """
    spec = get_method(method)
    prof = pick_profile(PROFILES, profile)
    data = config_file if isinstance(config_file, Mapping) else load_file(config_file)
    unknown = sorted(set(data) - {"train", "model"})
    if unknown:
        raise MfrbenchError(f"config file {config_file}: unknown sections {unknown}; expected train: and model:")
    t = resolve(TrainConfig, profile=prof.get("train"), file=data.get("train") or {}, sets=train_sets,
                options=train, fixed={"method": spec.name}, where="train config")
    prof_model = {**(prof.get("model") or {}), **spec.cls.profile_model.get(profile or "", {})}
    prof_model = {k: v for k, v in prof_model.items() if k not in getattr(spec, "preset", {})}
    m = resolve(spec.config_cls, profile=prof_model, file=data.get("model") or {}, sets=model_sets,
                options=model, lenient_profile=True, where=f"{method} config")
    if t.config.size % 4:
        raise MfrbenchError(f"Expected --size divisible by 4 (64, 128, 256), but got {t.config.size}")
    return t, m


def resolve_config(method: str, profile: str | None = None, *, train: Mapping[str, Any] | None = None,
                   model: Mapping[str, Any] | None = None) -> tuple[TrainConfig, Any]:
    """:func:`resolve_configs` from a profile and explicit options, for library callers: ``(train_cfg, model_cfg)``."""
    t, m = resolve_configs(method, profile, train=train, model=model)
    return t.config, m.config


def run_config(train: TrainConfig, model_cfg: Any, *, profile: str | None = None, faces: str | None = None,
               masks: str | None = None) -> dict[str, Any]:
    """The record of a run: both configs as typed sections, and where its two domains come from."""
    return {"method": train.method, "profile": profile, "faces": faces, "masks": masks,
            "train": train, "model": model_cfg}


def gan_config_hash(train: TrainConfig, model_cfg: Any, *, profile: str | None = None) -> str:
    """12 hex digits identifying what a GAN run with these configs trains (run-control keys left out).

    A model option a family added later (its config class's ``added_options``) is left out while it has
    its default, which is the behaviour from before it existed: the same training keeps its hash, so a
    study folder's stages stay cached and the published run keys stay valid."""
    from mfrbench.config import config_hash

    defaults = {f.name: f.default for f in dataclasses.fields(model_cfg)}
    unchanged = [f"model.{k}" for k in getattr(model_cfg, "added_options", ()) if getattr(model_cfg, k) == defaults[k]]
    return config_hash(run_config(train, model_cfg, profile=profile), exclude=(*GAN_RUN_CONTROL, *unchanged))


def configs_from_dict(config: Mapping[str, Any]) -> tuple[TrainConfig, Any]:
    """The two frozen configs back from a saved run record (JSON), typed like a fresh resolve."""
    spec = get_method(config["method"])
    return (from_dict(TrainConfig, config["train"], where="saved train config"),
            from_dict(spec.config_cls, config["model"], where=f"saved {spec.name} config"))


def data_spec(spec: str | os.PathLike | None) -> str | None:
    """A domain as the run records it: an existing path made absolute (a dataset name stays a name)."""
    if spec is None:
        return None
    p = Path(spec)
    return str(p.resolve()) if p.exists() else str(spec)
