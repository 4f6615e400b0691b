"""``mfrbench train-gen`` as a library call: resolve the configs, begin or resume the run, load both domains, fit.

Resume policy (:class:`mfrbench.runs.RunDir`, declared in :mod:`~mfrbench.generators.gan.config`):
a resumed run continues from ``checkpoints/last.pt`` with the saved config. What the call passes
again is never dropped: run-control options (``log_every``, ``sample_every``, ``ckpt_every``,
``n_sample``, ``amp``) and the run's length (``steps``, MFGAN's ``stage_steps``) take their new
value; any other option (``lr``, a ``--set`` key, the data, ...) that differs from the saved run
is a one-line error naming it and both values. ``threads`` and ``device`` are not config: they
always apply to the process that trains. The domains (``faces``/``masks``) come from the saved
run and need not be passed again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from mfrbench.errors import MfrbenchError
from mfrbench.generators.gan.checkpoint import gan_run_dir
from mfrbench.generators.gan.config import ConfigFile, data_spec, resolve_configs, run_config
from mfrbench.generators.gan.contract import build_gan
from mfrbench.generators.gan.data import load_domain
from mfrbench.generators.gan.fit import fit
from mfrbench.runs import RunDir, choose_device, set_threads


def train_gan(method: str | None, faces: str | os.PathLike | None, masks: str | os.PathLike | None,
              out: str | os.PathLike, *, profile: str | None = None, config_file: ConfigFile = None,
              train_sets: Iterable[str] | Mapping[str, Any] = (), model_sets: Iterable[str] | Mapping[str, Any] = (),
              train_overrides: Mapping[str, Any] | None = None, model_overrides: Mapping[str, Any] | None = None,
              resume: bool = False, device: str | None = None, threads: int | None = None,
              progress: bool = True) -> dict:
    """Train (or, with ``resume``, continue) the GAN run in ``out``.

    Args:
        method: the family (``None``: ``cyclegan``, or the saved run's on ``resume``).
        faces, masks: the two domains (manifest, image folder or dataset name); taken from the
            saved run on ``resume`` when ``None``.
        profile, config_file, train_sets, model_sets, train_overrides, model_overrides: the layers
            of :func:`~mfrbench.generators.gan.config.resolve_configs`; ``None`` options are "not given".
        resume: continue the run saved in ``out`` (see the module docstring for what may change).
        device: ``auto`` / ``cpu`` / ``cuda[:N]`` (:func:`mfrbench.runs.choose_device`).
        threads: ``torch.set_num_threads`` for this process.

    Returns:
        :func:`~mfrbench.generators.gan.fit.fit`'s summary plus ``device`` and ``threads``.
    """
    run = gan_run_dir(out)
    method = _method(run, method, resume)
    if not resume and (faces is None or masks is None):
        raise MfrbenchError("train-gen needs --faces and --masks (or --resume to continue the run in --out)")
    t, m = resolve_configs(method, profile, config_file=config_file, train_sets=train_sets, model_sets=model_sets,
                           train=train_overrides, model=model_overrides)
    request = run_config(t.config, m.config, profile=profile, faces=data_spec(faces), masks=data_spec(masks))
    if resume and profile:  # the profile is compared by its name; its values are not options given again
        t, m = resolve_configs(method, None, config_file=config_file, train_sets=train_sets,
                               model_sets=model_sets, train=train_overrides, model=model_overrides)
    given = {f"train.{k}" for k in t.given} | {f"model.{k}" for k in m.given}
    given |= {k for k in ("profile", "faces", "masks") if request[k] is not None}
    # checks only: fit writes config.json once the model is built (and resumed), so a refused run changes nothing
    config = run.begin(request, resume=resume, given=given, write=False)
    set_threads(threads)
    dev = choose_device(device)
    train_cfg, model_cfg = config["train"], config["model"]
    model = build_gan(train_cfg, model_cfg, dev)  # before the data: a bad model config fails in a second
    face_data = load_domain("faces", config["faces"], run.path / "data" / "faces", size=train_cfg.size,
                            limit=train_cfg.max_faces, masked=False, min_face_px=0, progress=progress)
    mask_data = load_domain("masks", config["masks"], run.path / "data" / "masks", size=train_cfg.size,
                            limit=train_cfg.max_masks, masked=True, min_face_px=train_cfg.min_face_px,
                            progress=progress)
    mask_data, held_out = mask_data.split(train_cfg.holdout_masks)
    if run.last_checkpoint() is not None:
        model.load_state_dict(run.load_checkpoint(map_location=dev)["state"])
    summary = fit(model, face_data, mask_data, run, config=config, progress=progress)
    summary["held_out_masks"] = len(held_out) if held_out is not None else 0
    if train_cfg.readout:
        summary["readout"] = readout(model, face_data, mask_data, held_out, run, train_cfg, dev)
    return {**summary, "device": str(dev), "threads": torch.get_num_threads()}


def readout(model, faces, masks, held_out, run: RunDir, train_cfg, dev) -> str | None:
    """Write ``RUN/quality.json`` (:func:`~mfrbench.generators.gan.readout.run_readout`) with the common Seg/Det:
    ``train.readout_seg`` / ``train.readout_det``, else the run's own; without a Seg it is skipped with a warning."""
    import logging

    from mfrbench.generators.gan.readout import run_readout

    seg_run = train_cfg.readout_seg or getattr(model.cfg, "seg_checkpoint", None)
    det_run = train_cfg.readout_det or getattr(model.cfg, "det_checkpoint", None)
    if not seg_run:
        logging.getLogger(__name__).warning("no Seg for the read-out (--set train.readout_seg=SEG_RUN): "
                                            "quality.json not written")
        return None
    from mfrbench.generators.parts import load_det
    from mfrbench.generators.seg import load_seg

    try:  # the judges are loaded from their run folders; a trained run is never lost to a missing judge
        seg, det = load_seg(seg_run, dev), (load_det(det_run, dev) if det_run else None)
    except MfrbenchError as err:
        logging.getLogger(__name__).warning("read-out skipped, quality.json not written: %s", err)
        return None
    run_readout(model, faces, masks, held_out, run.path, seg=seg, det=det, seg_run=str(seg_run), det_run=det_run,
                n_kid=train_cfg.readout_kid, seed=train_cfg.seed)
    return str(run.path / "quality.json")


def _method(run: RunDir, method: str | None, resume: bool) -> str:
    """The family to train: the saved run's on ``resume`` (a different ``--method`` is an error), else ``method``."""
    if not resume:
        return method or "cyclegan"
    if not run.config_path.is_file():
        raise MfrbenchError(f"--resume: no run in {run.path} (no config.json)")
    saved = run.read_config()["config"]["method"]
    if method and method != saved:
        raise MfrbenchError(f"--resume: {run.path} is a {saved} run; this command asks for --method {method} "
                            "(drop --method to continue it, or choose a new --out)")
    return saved
