"""The run folder every trainer writes (recognizers, GANs, Seg, Det): config, checkpoints, resume, device.

Layout of ``RUN_DIR``::

    config.json             {"kind", "config_hash", "run_control", "config": <the resolved config>}
    checkpoints/last.pt     the latest checkpoint (``torch.save`` of plain tensors/containers)
    checkpoints/last.json   the same checkpoint's ``info`` and scalar position, readable
    ...                     whatever else the trainer writes (logs, samples, summary.json)

:class:`RunDir` owns the rules that were written three times before:

* **New run or resume.** :meth:`RunDir.begin` refuses to start over a folder that already holds a
  checkpoint unless ``resume``; on ``resume`` it rebuilds the saved config and applies the resume
  policy, declared by each trainer: options the user gave again that are *run control* (threads,
  device, log/eval intervals, workers, per-invocation limits, ...) or *extendable* (the step or
  epoch total, to extend a run) take their new value; a changed *training* option is a one-line
  :class:`~mfrbench.errors.MfrbenchError` naming the option and both values. Nothing the user
  passed is silently dropped.
* **Atomic checkpoints.** :meth:`RunDir.save_checkpoint` writes through
  :func:`mfrbench.imageio.atomic_writer` (temp file + ``os.replace``): a kill mid-save leaves the
  previous checkpoint. :func:`load_checkpoint` reads with ``torch.load(weights_only=True)``, so a
  checkpoint cannot run code.
* **The config hash.** ``config_hash`` covers every field that changes what is learned (the run's
  length included) and leaves out the run-control fields.

Also here: :func:`choose_device` (the one ``auto``/``cpu``/``cuda``/``cuda:N`` rule),
:func:`set_threads`, and the atomic text/JSON/torch writers built on the one primitive.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from mfrbench.config import config_hash, flat_fields, rebuild_like, to_dict
from mfrbench.errors import DamagedFileError, MfrbenchError
from mfrbench.imageio import atomic_write_bytes, atomic_writer

log = logging.getLogger(__name__)

C = TypeVar("C")

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
LAST = "last"

# ------------------------------------------------------------------------------------ device


def choose_device(spec: str | torch.device | None = "auto", *, local_rank: int = 0) -> torch.device:
    """The torch device for ``--device SPEC``: ``auto`` (or ``None``), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.

    ``auto`` is CUDA when present (device ``local_rank``, as torchrun assigns) else the CPU;
    ``cuda`` is ``cuda:<local_rank>``. Asking for a device this machine lacks is an error, not a
    silent CPU run.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    name = (spec or "auto").strip().lower()
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise MfrbenchError("--device mps: Apple MPS is not available on this machine (use --device cpu)")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise MfrbenchError(f"--device {spec}: CUDA is not available on this machine (use --device cpu or auto)")
        index = local_rank if name == "cuda" else name.partition(":")[2]
        if not str(index).isdigit() or int(index) >= torch.cuda.device_count():
            raise MfrbenchError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                                f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
        return torch.device(f"cuda:{int(index)}")
    raise MfrbenchError(f"--device {spec}: expected auto, cpu, cuda or cuda:N")


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when given (on a shared CPU, 1 is often fastest)."""
    if threads:
        torch.set_num_threads(int(threads))


# ------------------------------------------------------------------------------ atomic writes


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (paths and other objects as strings)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically, streaming to the temp file (no second copy of a large state in memory)."""
    with atomic_writer(path) as f:
        torch.save(obj, f)


# -------------------------------------------------------------------------------- checkpoints


def find_checkpoint(run_or_file: str | os.PathLike) -> Path:
    """The checkpoint a path means: a ``.pt`` file itself, or a run folder's ``checkpoints/last.pt``."""
    p = Path(run_or_file)
    if p.is_dir():
        p = p / CHECKPOINTS / f"{LAST}.pt"
    if not p.is_file():
        raise MfrbenchError(f"no checkpoint at {p}")
    return p


def load_checkpoint(run_or_file: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by :meth:`RunDir.save_checkpoint`, read with ``weights_only=True``.

    Returns:
        The saved state with ``config`` and ``info`` as dicts, ``config_hash``, ``kind`` and
        ``path`` (the file read).
    """
    p = find_checkpoint(run_or_file)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True, mmap=True)
    except Exception as err:  # truncated / not a checkpoint / a pickle that needs code: say which file
        cls = MfrbenchError if torch_load_refused(err) else DamagedFileError
        raise cls(f"cannot read checkpoint {p}: {torch_load_problem(err)}; give an intact run folder written by "
                  "mfrbench, or retrain") from err
    if not isinstance(state, dict) or not {"kind", "config", "state"} & set(state):
        what = f"keys {sorted(map(str, state))[:5]}" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise MfrbenchError(f"{p} is not an mfrbench checkpoint (it holds {what}): give a run folder written by "
                            "mfrbench, or its checkpoints/last.pt")
    for key in ("config", "info"):
        if isinstance(state.get(key), str):
            state[key] = json.loads(state[key])
        state.setdefault(key, {})
    state["path"] = str(p)
    return state


def torch_load_refused(err: Exception) -> bool:
    """Whether ``torch.load(weights_only=True)`` failed because the file needs code to unpickle."""
    return isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower()


def torch_load_problem(err: Exception) -> str:
    """What a failed ``torch.load(weights_only=True)`` means, in a few words, for a one-line error.

    Never torch's own advice for a refused file ("re-running with weights_only=False will likely succeed"):
    that runs whatever code the file holds.
    """
    if torch_load_refused(err):
        return ("it holds Python objects, not only tensors and plain values (not written by mfrbench, or crafted), "
                "and such a file is never unpickled")
    first = str(err).splitlines()[0].split(". ")[0] if str(err) else type(err).__name__
    return f"truncated or not a PyTorch checkpoint ({first})"


# ------------------------------------------------------------------------------------- RunDir


class RunDir:
    """One training run's folder: its resolved config, checkpoints and resume policy.

    Args:
        path: the folder (created on :meth:`begin`).
        kind: what trains here (``"recognizer"``, ``"gan"``, ``"seg"``, ``"det"``); a resumed or
            loaded run of another kind is an error.
        run_control: the config keys that steer a run without changing what it learns (dotted
            ``section.key`` for a config made of sections: worker counts, devices, log/eval
            intervals, per-invocation step limits). They may change on resume and are left out of
            the config hash.
        extendable: keys that may change on resume but do change what is learned, so they stay
            in the hash: the length of the run (``epochs``, ``train.steps``). An extended run gets
            the hash a fresh run of that length would have.
    """

    def __init__(self, path: str | os.PathLike, *, kind: str, run_control: Collection[str] = (),
                 extendable: Collection[str] = ()) -> None:
        self.path = Path(path)
        self.kind = kind
        self.run_control = frozenset(run_control)
        self.extendable = frozenset(extendable)
        self.config_hash: str | None = None
        self._record: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, kind={self.kind!r})"

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoint_path(self, name: str = LAST) -> Path:
        return self.checkpoint_dir / f"{name}.pt"

    def last_checkpoint(self) -> Path | None:
        """``checkpoints/last.pt`` when a checkpoint has been written, else ``None``."""
        p = self.checkpoint_path()
        return p if p.is_file() else None

    # --------------------------------------------------------------------------- config

    def read_config(self) -> dict[str, Any]:
        """The saved ``config.json`` (the whole record: ``kind``, ``config_hash``, ``config``)."""
        if not self.config_path.is_file():
            raise MfrbenchError(f"no run in {self.path} (no {CONFIG})")
        try:
            record = json.loads(self.config_path.read_text())
        except json.JSONDecodeError as err:
            raise MfrbenchError(f"{self.config_path} is damaged ({err}); choose a new --out") from err
        if record.get("kind") != self.kind or "config" not in record:
            raise MfrbenchError(f"{self.path} holds a {record.get('kind', 'unknown')} run, not a {self.kind} run")
        return record

    def write_config(self, config: Any) -> str:
        """Write ``config.json`` for ``config`` (a dataclass, or a mapping with dataclass sections)."""
        self.config_hash = config_hash(config, exclude=self.run_control)
        self._record = {"kind": self.kind, "config_hash": self.config_hash, "run_control": sorted(self.run_control),
                        "config": to_dict(config)}
        atomic_write_json(self.config_path, self._record)
        return self.config_hash

    def begin(self, config: C, *, resume: bool = False, given: Collection[str] | None = None,
              write: bool = True) -> C:
        """Start a new run with ``config``, or resume the saved one; write ``config.json``; return the config to use.

        Args:
            config: the requested config: a dataclass, or a mapping whose dataclass values are
                sections (``{"train": TrainConfig, "model": ModelConfig, "faces": "..."}``).
            resume: continue the run saved here.
            given: the (dotted) keys the user set this time (:attr:`mfrbench.config.Resolved.given`).
                ``None`` means every key: the whole ``config`` is the request (library callers).
            write: write ``config.json`` (``False`` on the non-main processes of a distributed run,
                which apply the same checks and get the same config).

        Raises:
            MfrbenchError: a checkpoint exists and not ``resume``; ``resume`` and no saved run; or a
                given training option differs from the saved run's.
        """
        if not resume:
            if self.last_checkpoint() is not None:
                raise MfrbenchError(f"{self.path} already holds a trained run; pass --resume to continue it "
                                    "or choose a new --out")
            if write:
                self.path.mkdir(parents=True, exist_ok=True)
                self.write_config(config)
            return config
        merged = self.resume_config(config, given)
        if write:
            self.write_config(merged)
        else:
            self.config_hash = config_hash(merged, exclude=self.run_control)
        return merged

    def resume_config(self, config: C, given: Collection[str] | None = None) -> C:
        """The saved config, with the run-control and extendable options the user gave again.

        Raises:
            MfrbenchError: a given training option (neither run control nor extendable) differs from the saved one.
        """
        if not self.config_path.is_file():
            raise MfrbenchError(f"--resume: no run in {self.path} (no {CONFIG})")
        saved = rebuild_like(config, self.read_config()["config"], where=f"{self.path / CONFIG}")
        old, new = flat_fields(saved), flat_fields(config)
        asked = set(new) if given is None else set(given)
        may_change = self.run_control | self.extendable
        changed = [k for k in sorted(asked) if k in old and k in new and k not in may_change
                   and to_dict(old[k]) != to_dict(new[k])]
        if changed:
            was = ", ".join(f"{k}={_show(old[k])}" for k in changed)
            now = ", ".join(f"{k}={_show(new[k])}" for k in changed)
            raise MfrbenchError(f"--resume: {self.path} was trained with {was}; this command asks for {now} "
                                "(a training option); drop it to continue the run as it was, or choose a new --out")
        honoured = {k: new[k] for k in asked & may_change if k in new and k in old
                    and to_dict(old[k]) != to_dict(new[k])}
        for k, v in sorted(honoured.items()):
            log.info("resume %s: %s %s -> %s", self.path, k, _show(old[k]), _show(v))
        return _replace_flat(saved, honoured)

    # ---------------------------------------------------------------------- checkpoints

    def save_checkpoint(self, state: Mapping[str, Any], *, info: Mapping[str, Any] | None = None,
                        config: Any = None, name: str = LAST) -> Path:
        """Write ``state`` (+ the config, its hash and ``info``) as ``checkpoints/<name>.pt`` and ``.json``.

        ``state`` holds tensors, state dicts and plain values (it must load with ``weights_only``);
        its scalar entries (step, epoch, ...) are repeated in the readable ``.json`` sidecar.
        """
        if config is not None:
            cfg, h = to_dict(config), config_hash(config, exclude=self.run_control)
        else:
            record = self._record or self.read_config()
            cfg, h = record["config"], record["config_hash"]
        info = to_dict(dict(info or {}))
        path = self.checkpoint_path(name)
        payload = {**state, "kind": self.kind, "config_hash": h, "config": json.dumps(cfg),
                   "info": json.dumps(info, default=str)}
        atomic_torch_save(payload, path)
        position = {k: v for k, v in state.items() if isinstance(v, (int, float, str, bool)) or v is None}
        atomic_write_json(path.with_suffix(".json"), {"kind": self.kind, "config_hash": h, **position,
                                                      "info": info, "config": cfg})
        return path

    def load_checkpoint(self, name: str = LAST, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """This run's checkpoint ``name`` (see :func:`load_checkpoint`); a checkpoint of another kind is an error."""
        state = load_checkpoint(self.checkpoint_path(name), map_location)
        if state.get("kind", self.kind) != self.kind:
            raise MfrbenchError(f"{state['path']} is a {state['kind']} checkpoint, not a {self.kind} one")
        return state

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``RUN_DIR/<name>`` (JSON) atomically; e.g. ``summary.json``, ``metrics.json``."""
        path = self.path / name
        atomic_write_json(path, obj)
        return path


def _show(v: Any) -> str:
    v = to_dict(v)
    return json.dumps(v) if isinstance(v, (list, dict, str)) else str(v)


def _replace_flat(cfg: C, values: Mapping[str, Any]) -> C:
    """``cfg`` with (dotted) fields replaced: ``{"steps": 9}`` on a dataclass, ``{"train.steps": 9}`` on sections."""
    if not values:
        return cfg
    if dataclasses.is_dataclass(cfg):
        return dataclasses.replace(cfg, **values)
    out = dict(cfg)
    for key, v in values.items():
        section, dot, name = key.partition(".")
        if dot and dataclasses.is_dataclass(out.get(section)):
            out[section] = dataclasses.replace(out[section], **{name: v})
        else:
            out[key] = v
    return out
