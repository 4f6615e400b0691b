"""Starting a backbone from pretrained weights (``train-fr --init PATH``).

``PATH`` is one of:

* a ``train-fr`` run folder or checkpoint (:func:`mfrbench.runs.load_checkpoint`): its
  ``backbone`` weights; the run's backbone must be the one being trained;
* a plain ``state_dict`` file, e.g. insightface ``arcface_torch``'s released ``backbone.pth``
  (``torch.save(backbone.module.state_dict())``), read with ``torch.load(weights_only=True)``.
  ``r18``/``r34``/``r50``/``r100`` checkpoints share our ``iresnet*`` key names and shapes; an
  ``mbf`` checkpoint has our MobileFaceNet's shapes in the same order, but arcface_torch nests
  every ConvBlock / LinearBlock / Residual / GDC in a ``.layers`` child
  (``layers.0.layers.0.weight`` is our ``layers.0.0.weight``): :func:`rename_keys` maps its names
  onto ours. A ``module.`` prefix (a DataParallel/DDP save) is dropped.

Loading is strict: a missing, unexpected or differently shaped tensor is a one-line
:class:`~mfrbench.errors.MfrbenchError` naming the first offending keys and shapes. Only the
backbone is loaded; the classification head always starts fresh (a new training set has new
classes). ``mbf`` checkpoints from before July 2021 (width scale 1) fit no backbone here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mfrbench.errors import MfrbenchError
from mfrbench.runs import torch_load_problem

#: how many offending keys an error message lists
_SHOW = 3


@dataclass(frozen=True)
class InitWeights:
    """Backbone weights read from ``path``: ``kind`` is ``run`` (a train-fr checkpoint) or ``state_dict``."""

    state: dict[str, torch.Tensor]
    path: str
    kind: str
    backbone: str | None = None        # the run's backbone (``run`` only)
    embedding_dim: int | None = None   # the run's embedding size (``run`` only)


def file_digest(path: str | os.PathLike, n: int = 1 << 20) -> str:
    """12 hex digits of SHA-256 over a file's first ``n`` bytes and its size (identifies the init file)."""
    p = Path(path)
    if p.is_dir():
        from mfrbench.runs import find_checkpoint

        p = Path(find_checkpoint(p))
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(n))
    h.update(str(p.stat().st_size).encode())
    return h.hexdigest()[:12]


def read_init(path: str | os.PathLike) -> InitWeights:
    """Read the backbone weights of a train-fr run/checkpoint or a plain state-dict file (``weights_only``)."""
    p = Path(path)
    if not p.exists():
        raise MfrbenchError(f"--init {p}: no such file or run folder")
    if p.is_dir():
        return _from_run(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, truncated, or a pickle that needs code (issue 12: no torch advice)
        raise MfrbenchError(f"--init {p}: cannot read it as a PyTorch state dict ({torch_load_problem(err)})") \
            from err
    if isinstance(obj, Mapping) and "backbone" in obj and "config" in obj:  # a train-fr checkpoint file
        return _from_run(p)
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        what = type(obj).__name__ if not isinstance(obj, Mapping) else f"a dict with keys {list(obj)[:_SHOW]}"
        raise MfrbenchError(f"--init {p}: expected a state dict (parameter name -> tensor) or a train-fr "
                            f"checkpoint, but got {what}")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # saved from a DataParallel / DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return InitWeights(state, str(p), "state_dict")


def _from_run(p: Path) -> InitWeights:
    from mfrbench.runs import load_checkpoint

    ck = load_checkpoint(p)
    if ck.get("kind", "recognizer") != "recognizer" or "backbone" not in ck:
        raise MfrbenchError(f"--init {p}: {ck['path']} is a {ck.get('kind')} checkpoint, not a train-fr one")
    cfg = ck.get("config", {})
    dim = cfg.get("embedding_dim")
    return InitWeights(dict(ck["backbone"]), ck["path"], "run", cfg.get("backbone"),
                       int(dim) if dim is not None else None)


def _canonical(key: str) -> str:
    """A key without its ``layers`` segments after the first: arcface_torch's ``mbf`` names and ours agree there."""
    first, *rest = key.split(".")
    return ".".join([first, *(s for s in rest if s != "layers")])


def rename_keys(state: Mapping[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], int]:
    """``state`` with arcface_torch ``mbf`` names mapped onto ``model``'s; returns (state, number renamed).

    A key already named as in ``model`` is kept. Another key is renamed when, with its ``layers``
    segments after the first removed, it names exactly one of ``model``'s keys; anything else
    is left as it is (and reported by :func:`load_backbone_state`).
    """
    ours = list(model.state_dict())
    if set(state) == set(ours):
        return dict(state), 0
    by_canon: dict[str, list[str]] = {}
    for k in ours:
        by_canon.setdefault(_canonical(k), []).append(k)
    out, renamed = {}, 0
    for k, v in state.items():
        target = by_canon.get(_canonical(k), [])
        if k not in ours and len(target) == 1:
            out[target[0]] = v
            renamed += 1
        else:
            out[k] = v
    return out, renamed


def _mismatch(state: Mapping[str, torch.Tensor], model: nn.Module) -> tuple[str, list[str]]:
    """('', []) when ``state`` fits ``model`` strictly, else (what differs, the keys whose shape differs)."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(ours[k].shape)}" for k in ours
              if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape (file vs model)", shapes)):
        if keys:
            more = f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
            parts.append(f"{len(keys)} {what}: {', '.join(keys[:_SHOW])}{more}")
    return "; ".join(parts), [k for k in ours if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]


def load_backbone_state(model: nn.Module, init: InitWeights, *, backbone: str, embedding_dim: int) -> dict:
    """Copy ``init``'s weights into ``model`` strictly; returns what was loaded (for the run's info).

    Raises:
        MfrbenchError: the run's backbone differs, or any key or shape does not match (one line).
    """
    if init.kind == "run" and init.backbone and init.backbone != backbone:
        raise MfrbenchError(f"--init {init.path} is a {init.backbone} run, but this run trains {backbone}: "
                            f"pass --backbone {init.backbone}")
    state, renamed = rename_keys(init.state, model)
    problem, reshaped = _mismatch(state, model)
    if problem:
        hint = " (the embedding size differs: pass --embedding-dim to match)" if any(
            k.startswith(("fc.", "features.")) for k in reshaped) else ""
        raise MfrbenchError(f"--init {init.path} does not fit {backbone} (embedding_dim {embedding_dim}): "
                            f"{problem}{hint}")
    model.load_state_dict(state, strict=True)
    digest = file_digest(init.path) if Path(init.path).exists() else ""
    return {"path": str(Path(init.path).resolve()), "kind": init.kind, "digest": digest,
            "tensors": len(state), "renamed": renamed}


def init_backbone(model: nn.Module, path: str | os.PathLike, *, backbone: str, embedding_dim: int) -> dict:
    """Read ``path`` (:func:`read_init`) and load it into ``model`` (:func:`load_backbone_state`)."""
    return load_backbone_state(model, read_init(path), backbone=backbone, embedding_dim=embedding_dim)


def param_groups(model: nn.Module, *, backbone_lr_mult: float) -> list[dict]:
    """Optimizer groups of a ``Recognizer``: the backbone's parameters at ``lr * backbone_lr_mult``,
    the head's at ``lr`` (``lr_mult`` in each group; the trainer multiplies its scheduled lr by it)."""
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    head = [p for p in model.head.parameters() if p.requires_grad]
    return [{"params": backbone, "lr_mult": float(backbone_lr_mult), "name": "backbone"},
            {"params": head, "lr_mult": 1.0, "name": "head"}]


def start_backbone(model: nn.Module, init: str | None, *, backbone: str, embedding_dim: int, fresh: bool
                   ) -> dict | None:
    """The trainer's ``--init`` step: load ``init`` into ``model`` when the run starts fresh (a resumed
    run has its own weights and never rereads the file); returns the run's ``info["init"]`` (or None)."""
    if not init:
        return None
    if fresh:
        return init_backbone(model, init, backbone=backbone, embedding_dim=embedding_dim)
    p = Path(init)
    return {"path": str(p.resolve()), "digest": file_digest(p) if p.exists() else ""}


def backbone_frozen(freeze_epochs: float, step: int, steps_per_epoch: int) -> bool:
    """Whether optimiser step ``step`` falls in the first ``freeze_epochs`` epochs (``--freeze-backbone-epochs``)."""
    return freeze_epochs > 0 and step < int(round(freeze_epochs * steps_per_epoch))
