"""``mfrbench train-gen`` as a library call: resolve the configs, load both domains, fit, checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from mfrbench.errors import MfrbenchError
from mfrbench.generators.gan.checkpoint import CHECKPOINT, CONFIG, load_checkpoint
from mfrbench.generators.gan.config import config_dict, configs_from_dict, resolve_config
from mfrbench.generators.gan.contract import build_gan
from mfrbench.generators.gan.data import load_domain
from mfrbench.generators.gan.fit import fit
from mfrbench.runs import atomic_write_text, choose_device


def train_gan(method: str, faces: str, masks: str, out: str | os.PathLike, *, profile: str | None = None,
              train_overrides: dict | None = None, model_overrides: dict | None = None, resume: bool = False,
              device: str | None = None, threads: int | None = None, progress: bool = True) -> dict:
    """Library entry point of ``mfrbench train-gen``: resolve config, load both domains, fit, checkpoint."""
    run_dir = Path(out)
    if (run_dir / CHECKPOINT).is_file() and not resume:
        raise MfrbenchError(f"{run_dir} already holds a checkpoint: pass --resume to continue it or pick a new --out")
    dev = choose_device(device)
    if threads:
        torch.set_num_threads(threads)
    if resume and (run_dir / CHECKPOINT).is_file():
        ck = load_checkpoint(run_dir, map_location=dev)
        train, model_cfg = configs_from_dict(ck["config"])
        if train_overrides and train_overrides.get("steps"):
            train = dataclasses.replace(train, steps=int(train_overrides["steps"]))
        state = ck["state"]
        config = {**ck["config"], "train": dataclasses.asdict(train)}
    else:
        train, model_cfg = resolve_config(method, profile, train=train_overrides, model=model_overrides)
        state = None
        config = config_dict(train, model_cfg, {"profile": profile, "faces": str(faces), "masks": str(masks)})
    model = build_gan(train, model_cfg, dev)  # before the data: a bad model config fails in a second
    face_data = load_domain("faces", config.get("faces", faces), run_dir / "data" / "faces", size=train.size,
                            limit=train.max_faces, masked=False, min_face_px=0, progress=progress)
    mask_data = load_domain("masks", config.get("masks", masks), run_dir / "data" / "masks", size=train.size,
                            limit=train.max_masks, masked=True, min_face_px=train.min_face_px, progress=progress)
    if state is not None:
        model.load_state_dict(state)
    config["data"] = {"faces": len(face_data), "masks": len(mask_data)}
    atomic_write_text(run_dir / CONFIG, json.dumps(config, indent=2, default=str) + "\n")
    summary = fit(model, face_data, mask_data, run_dir, config=config, progress=progress)
    summary["device"] = str(dev)
    return summary
