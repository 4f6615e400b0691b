"""A GAN run folder on disk: the checkpoint (state + resolved config), reloading a trained GAN, its config hash."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from mfrbench.errors import MfrbenchError
from mfrbench.generate import hash_config
from mfrbench.generators.gan.config import config_dict, configs_from_dict
from mfrbench.generators.gan.contract import TrainableGAN, build_gan
from mfrbench.runs import atomic_torch_save, atomic_write_text

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"


def save_checkpoint(model: TrainableGAN, run_dir: Path, config: dict) -> Path:
    """Write ``checkpoint.pt`` (state + resolved config) and ``config.json`` atomically."""
    path = run_dir / CHECKPOINT
    atomic_torch_save({"config": config, "state": model.state_dict()}, path)
    atomic_write_text(run_dir / CONFIG, json.dumps(config, indent=2, default=str) + "\n")
    return path


def load_checkpoint(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A run's checkpoint (``{"config", "state"}``), read with ``weights_only=True`` (it cannot run code)."""
    p = Path(run_dir)
    path = p / CHECKPOINT if p.is_dir() else p
    if not path.is_file():
        raise MfrbenchError(f"no GAN checkpoint at {path} (train one with `mfrbench train-gen`)")
    return torch.load(path, map_location=map_location, weights_only=True)


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
        return str(saved.get("config_hash") or hash_config(saved))
    if model is None:
        raise MfrbenchError(f"no {CONFIG} in {f.parent}: not a GAN run folder")
    return hash_config(config_dict(model.train_cfg, model.cfg))
