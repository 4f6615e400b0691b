"""A GAN run folder: a :class:`mfrbench.runs.RunDir` of kind ``gan``, its checkpoints, reloading a trained GAN.

Layout (``RunDir``'s, plus what the loop writes)::

    config.json             the resolved run record (:func:`~mfrbench.generators.gan.config.run_config`) + hash
    checkpoints/last.pt     {"state": networks, optimizers, pools, step; "step"; config; info}
    checkpoints/last.json   the same checkpoint's step, info and config, readable
    losses.csv, samples/, summary.json, data/<domain>/ (aligned crops), stages/ (MFGAN read-outs)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from mfrbench.config import config_hash
from mfrbench.errors import MfrbenchError
from mfrbench.generators.gan.config import GAN_EXTENDABLE, GAN_RUN_CONTROL, configs_from_dict, gan_config_hash
from mfrbench.generators.gan.contract import TrainableGAN, build_gan
from mfrbench.runs import CONFIG, RunDir
from mfrbench.runs import load_checkpoint as load_run_checkpoint

KIND = "gan"
#: the single-file checkpoint of runs trained before the run folders of issue 11 (read, never written)
LEGACY_CHECKPOINT = "checkpoint.pt"


def gan_run_dir(path: str | os.PathLike) -> RunDir:
    """The run folder of a GAN training run, with the GAN resume policy."""
    return RunDir(path, kind=KIND, run_control=GAN_RUN_CONTROL, extendable=GAN_EXTENDABLE)


def save_checkpoint(model: TrainableGAN, run: RunDir, config: Any, info: dict | None = None) -> Path:
    """``checkpoints/last.pt``: the model's whole state (networks, optimizers, pools, step), atomically."""
    return run.save_checkpoint({"state": model.state_dict(), "step": model.step}, info=info, config=config)


def load_checkpoint(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A run's checkpoint (``weights_only``): ``{"state", "step", "config", "info", ...}``.

    ``run_dir`` is a run folder or a checkpoint file. A run folder of the old layout
    (``RUN/checkpoint.pt`` = ``{"config", "state"}``) is read too, so runs trained before the run
    folders still generate (they cannot be resumed: ``train-gen --resume`` needs ``config.json``).
    """
    p = Path(run_dir)
    if not p.is_dir():
        return load_run_checkpoint(p, map_location)
    run = gan_run_dir(p)
    if run.last_checkpoint() is not None:
        return run.load_checkpoint(map_location=map_location)
    if (p / LEGACY_CHECKPOINT).is_file():
        return load_run_checkpoint(p / LEGACY_CHECKPOINT, map_location)
    raise MfrbenchError(f"no GAN checkpoint in {p} (train one with `mfrbench train-gen --out {p}`)")


def load_gan(run_dir: str | os.PathLike, device: torch.device | str = "cpu") -> TrainableGAN:
    """Rebuild a trained GAN from its run folder (networks, optimizers, pools, step)."""
    ck = load_checkpoint(run_dir, map_location=device)
    train, model_cfg = configs_from_dict(ck["config"])
    model = build_gan(train, model_cfg, device)
    model.load_state_dict(ck["state"])
    return model


def run_config_hash(run_dir: str | os.PathLike, model: TrainableGAN | None = None) -> str:
    """12 hex digits identifying a GAN run: the ``config_hash`` its ``config.json`` records, else the hash of
    that resolved ``config.json`` (else of ``model``'s configs when the folder has none)."""
    p = Path(run_dir)
    f = (p if p.is_dir() else p.parent) / CONFIG
    if f.is_file():
        saved = json.loads(f.read_text())
        return str(saved.get("config_hash") or config_hash(saved))
    if model is None:
        raise MfrbenchError(f"no {CONFIG} in {f.parent}: not a GAN run folder")
    return gan_config_hash(model.train_cfg, model.cfg)
