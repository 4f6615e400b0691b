"""Atomic checkpoints: plain state dicts, loaded back with ``torch.load(weights_only=True)``.

``RUN_DIR/checkpoints/last.pt`` holds the backbone, head, optimizer and grad-scaler state, the
position (epoch, step in epoch, global step), the torch RNG state and the resolved config (as
JSON text); ``last.json`` next to it repeats the config and position in readable form. Both
are written to a temporary file and renamed, so a kill mid-save leaves the previous checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from mfrbench.errors import MfrbenchError
from mfrbench.imageio import atomic_write_bytes

CKPT_DIR = "checkpoints"
LAST = "last.pt"


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CKPT_DIR / LAST


def save_checkpoint(run_dir: str | os.PathLike, state: dict[str, Any], *, config: dict, info: dict) -> Path:
    """Write ``state`` (+ config and run info) atomically as ``checkpoints/last.pt`` and ``last.json``."""
    path = checkpoint_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**state, "config": json.dumps(config), "info": json.dumps(info)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    position = {k: state[k] for k in ("epoch", "step_in_epoch", "global_step") if k in state}
    atomic_write_bytes(path.with_suffix(".json"),
                       json.dumps({"config": config, "info": info, **position}, indent=2).encode())
    return path


def resolve_checkpoint(run_dir_or_ckpt: str | os.PathLike) -> Path:
    p = Path(run_dir_or_ckpt)
    if p.is_dir():
        p = checkpoint_path(p)
    if not p.is_file():
        raise MfrbenchError(f"no checkpoint at {p} (train with `mfrbench train-fr --out RUN_DIR` first)")
    return p


def load_checkpoint(run_dir_or_ckpt: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (a run dir or a ``.pt`` file); ``config``/``info`` come back as dicts."""
    p = resolve_checkpoint(run_dir_or_ckpt)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True, mmap=True)
    except Exception as err:  # truncated / not a checkpoint: say which file
        raise MfrbenchError(f"cannot read checkpoint {p}: {err}") from err
    state["config"] = json.loads(state.get("config", "{}"))
    state["info"] = json.loads(state.get("info", "{}"))
    state["path"] = str(p)
    return state
