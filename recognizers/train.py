"""The recognizer trainer behind ``mfrbench train-fr``.

``train(cfg)`` reads the data (:mod:`.data`), builds backbone + head (:mod:`.backbones`,
:mod:`.heads`), then runs the loop below: per-step learning rate (linear warm-up, then cosine or
step decay), mixed precision on CUDA, ``channels_last``, gradient clipping, rank-0 logging
(:mod:`.logs`) and atomic checkpoints (:mod:`.checkpoint`) with exact resume, and open-set
validation on held-out identities after every epoch (:mod:`.validate`). Under ``torchrun`` the
model is wrapped in DistributedDataParallel and every process trains on its share of each
global batch (:mod:`.distributed`).

The run folder (``config.json``, ``checkpoints/last.pt`` + ``last.json``, the resume policy) is a
:class:`mfrbench.runs.RunDir` of kind ``recognizer``: on resume, :data:`.config.RUN_CONTROL` and
:data:`.config.EXTENDABLE` fields may change; any other changed field is refused.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from mfrbench.errors import MfrbenchError
from mfrbench.generate import GeneratorIdentity
from mfrbench.recognizers.backbones import create_backbone
from mfrbench.recognizers.config import EXTENDABLE, RUN_CONTROL, TrainConfig, config_hash
from mfrbench.recognizers.data import (
    EpochBatchSampler,
    FaceImages,
    PKBatchSampler,
    TrainData,
    build_train_data,
    make_loader,
)
from mfrbench.recognizers.distributed import DistEnv, all_reduce_mean, barrier, cleanup, init_distributed
from mfrbench.recognizers.heads import create_head
from mfrbench.recognizers.logs import RunLogger
from mfrbench.recognizers.pretrained import backbone_frozen, param_groups, start_backbone
from mfrbench.recognizers.validate import normalize_images, untrained_baseline, validate
from mfrbench.runs import RunDir

log = logging.getLogger(__name__)


class Recognizer(nn.Module):
    """Backbone + head as one module, so DDP synchronises both with one wrapper."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.head(self.backbone(images), labels)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimiser step ``step``: linear warm-up, then cosine or step decay."""
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "step":
        epoch = step / steps_per_epoch
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    total = max(cfg.epochs * steps_per_epoch - warm, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, total) / total))


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.backbone_lr_mult != 1.0 or cfg.freeze_backbone_epochs > 0:  # issue 16: backbone / head groups
        params = param_groups(model, backbone_lr_mult=cfg.backbone_lr_mult)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.resolved_weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.resolved_weight_decay)


@dataclass
class Run:
    """Everything the loop touches, built once by :func:`setup`."""

    cfg: TrainConfig
    run_dir: RunDir
    env: DistEnv
    data: TrainData
    model: Recognizer
    ddp: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sampler: EpochBatchSampler | PKBatchSampler
    loader: Any
    logger: RunLogger
    info: dict[str, Any]
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    last_val: dict[str, float] = field(default_factory=dict)
    last_saved_step: int | None = None

    @property
    def amp(self) -> bool:
        return self.cfg.amp and self.env.device.type == "cuda"


def run_info(cfg: TrainConfig, data: TrainData, augment: Any = None) -> dict[str, Any]:
    """What a trained model is (the ``info`` that ``load_backbone``/``load_embedder`` return).

    The generator is the data's joined with an on-the-fly masker's (``--mask-aug``: its ``identity()``),
    so a model trained on masks made while training is traced to that generator in the results.
    """
    ident = data.identity
    if augment is not None and hasattr(augment, "identity"):
        ident = GeneratorIdentity.join([ident, augment.identity()])
    return {"backbone": cfg.backbone, "loss": cfg.head, "head": cfg.head, "head_args": dict(cfg.head_args),
            "embedding_dim": cfg.embedding_dim, "train_data": [str(Path(s).resolve()) for s in cfg.data],
            **ident.row(), "run_dir": str(Path(cfg.out).resolve()), "config_hash": config_hash(cfg),
            "num_classes": data.num_classes, "train_images": len(data.train), "val_images": len(data.val),
            "notes": list(data.notes)}


def run_dir_of(out: str | Path) -> RunDir:
    """The recognizer run folder at ``out`` with its resume policy."""
    return RunDir(out, kind="recognizer", run_control=RUN_CONTROL, extendable=EXTENDABLE)


def setup(cfg: TrainConfig, run_dir: RunDir, env: DistEnv,
          augment_factory: Callable[[str], Callable] | None = None) -> Run:
    head_is_metric = cfg.head == "triplet"
    data = build_train_data(cfg.data, mask_ratio=cfg.mask_ratio, val_identities=cfg.val_identities, seed=cfg.seed,
                            metric_loss=head_is_metric)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank and in every rerun
    backbone = create_backbone(cfg.backbone, embedding_dim=cfg.embedding_dim, input_size=cfg.input_size)
    head = create_head(cfg.head, embedding_dim=cfg.embedding_dim, num_classes=data.num_classes, **cfg.head_args)
    init_info = start_backbone(backbone, cfg.init, backbone=cfg.backbone, embedding_dim=cfg.embedding_dim,
                               fresh=run_dir.last_checkpoint() is None)  # issue 16: --init, fresh head
    model = Recognizer(backbone, head).to(env.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ddp = DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None) \
        if env.distributed else model
    optimizer = make_optimizer(cfg, model)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and env.device.type == "cuda")
    if getattr(head, "needs_pk_batches", False):
        sampler = PKBatchSampler(data.train_labels, cfg.batch_size, cfg.images_per_identity, seed=cfg.seed,
                                 rank=env.rank, world=env.world)
    else:
        sampler = EpochBatchSampler(len(data.train), cfg.batch_size, seed=cfg.seed, rank=env.rank, world=env.world)
    mask_augment = _mask_augment(cfg, augment_factory)
    dataset = FaceImages(data.train, data.train_labels, train=True, seed=cfg.seed, flip=cfg.flip,
                         jitter=cfg.color_jitter, gray=cfg.gray, augment=mask_augment)
    loader = make_loader(dataset, sampler, workers=cfg.workers, pin_memory=env.device.type == "cuda")
    run = Run(cfg, run_dir, env, data, model, ddp, optimizer, scaler, sampler, loader, logger=None,
              info=run_info(cfg, data, mask_augment))
    if init_info is not None:
        run.info["init"] = init_info
    resume_step = _restore(run) if run_dir.last_checkpoint() is not None else None
    run.logger = RunLogger(cfg.out, enabled=env.is_main, resume_step=resume_step)
    return run


def _restore(run: Run) -> int:
    state = run.run_dir.load_checkpoint(map_location=run.env.device)
    run.model.backbone.load_state_dict(state["backbone"])
    run.model.head.load_state_dict(state["head"])
    run.optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"].cpu())
    run.epoch, run.step_in_epoch, run.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
    run.last_val = state["info"].get("val", {})
    if "val_untrained" in state["info"]:
        run.info["val_untrained"] = state["info"]["val_untrained"]
    run.last_saved_step = run.global_step
    return run.global_step


def save(run: Run) -> None:
    """Rank 0 writes the checkpoint at the current position; every rank waits for it."""
    if run.env.is_main:
        state = {"backbone": run.model.backbone.state_dict(), "head": run.model.head.state_dict(),
                 "optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict(),
                 "epoch": run.epoch, "step_in_epoch": run.step_in_epoch, "global_step": run.global_step,
                 "rng": torch.get_rng_state()}
        info = {**run.info, "epoch": run.epoch, "global_step": run.global_step, "val": run.last_val}
        run.run_dir.save_checkpoint(state, info=info, config=run.cfg)
    run.last_saved_step = run.global_step
    barrier(run.env)


def run_validation(run: Run) -> None:
    if run.env.is_main and len(run.data.val):
        run.last_val = validate(run.model.backbone, run.data.val, run.data.val_labels, run.env.device,
                                workers=min(run.cfg.workers, 1), channels_last=run.cfg.channels_last)
        run.logger.val({"epoch": run.epoch, "global_step": run.global_step, **run.last_val})
        log.info("epoch %d: held-out rank-1 identification %.3f (chance %.3f, %d probes)", run.epoch,
                 run.last_val["val_rank1"], run.last_val["val_chance"], run.last_val["val_probes"])
    barrier(run.env)


def run_baseline_validation(run: Run) -> None:
    """A fresh run's epoch-0 row: the untrained network (BatchNorm re-estimated), the learned-vs-untrained
    baseline every later epoch is read against."""
    if run.env.is_main and len(run.data.val) and run.global_step == 0 and run.cfg.val_untrained:
        val = untrained_baseline(run.model.backbone, run.data.train, run.data.train_labels, run.data.val,
                                 run.data.val_labels, run.env.device, seed=run.cfg.seed,
                                 channels_last=run.cfg.channels_last)
        run.logger.val({"epoch": 0, "global_step": 0, **val})
        run.info["val_untrained"] = val
        log.info("untrained (BatchNorm re-estimated): held-out rank-1 identification %.3f (chance %.3f)",
                 val["val_rank1"], val["val_chance"])
    barrier(run.env)


def _nan_error(run: Run, value: float) -> MfrbenchError:
    where = f"epoch {run.epoch + 1} step {run.step_in_epoch + 1} (global step {run.global_step + 1})"
    if run.last_saved_step is None:
        kept = "no checkpoint had been written yet"
    else:
        kept = f"the last good checkpoint is kept: {run.run_dir.checkpoint_path()} (global step {run.last_saved_step})"
    return MfrbenchError(f"loss became {value} at {where}; training stopped, {kept}; lower --lr or check the data")


def train_step(run: Run, images: torch.Tensor, labels: torch.Tensor, steps_per_epoch: int) -> dict[str, float]:
    """One optimiser step on one local batch; returns the rank-averaged loss and head stats."""
    cfg, dev = run.cfg, run.env.device
    lr = cfg.lr * lr_factor(cfg, run.global_step, steps_per_epoch)
    frozen = backbone_frozen(cfg.freeze_backbone_epochs, run.global_step, steps_per_epoch)  # issue 16
    for group in run.optimizer.param_groups:
        group["lr"] = 0.0 if frozen and group.get("name") == "backbone" else lr * group.get("lr_mult", 1.0)
    if cfg.freeze_backbone_epochs:  # a frozen backbone keeps its BatchNorm statistics too
        run.model.backbone.train(not frozen)
    x = normalize_images(images.to(dev, non_blocking=True))
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=run.amp):
        loss, stats = run.ddp(x, labels.to(dev, non_blocking=True))
    names = list(stats)
    synced = all_reduce_mean(torch.stack([loss.detach().float(), *[stats[k].float() for k in names]]), run.env)
    if not torch.isfinite(synced[0]):
        raise _nan_error(run, float(synced[0]))
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if cfg.clip_grad:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.head.parameters() if frozen else run.model.parameters(), cfg.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return {"loss": float(synced[0]), "lr": lr, **{k: float(v) for k, v in zip(names, synced[1:])}}


def _should_stop(run: Run, steps_done: int, t0: float) -> bool:
    cfg = run.cfg
    stop = (cfg.max_steps is not None and steps_done >= cfg.max_steps) or \
        (cfg.time_budget_s is not None and time.perf_counter() - t0 >= cfg.time_budget_s)
    return bool(all_reduce_mean(torch.tensor([float(stop)]), run.env)[0] > 0)


def fit(run: Run) -> str:
    """The loop. Returns why it ended: ``finished``, ``max_steps`` or ``time_budget``."""
    cfg, env = run.cfg, run.env
    steps_per_epoch = len(run.sampler)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=run.global_step, unit="step", dynamic_ncols=True,
               disable=not (env.is_main and cfg.progress), desc=f"train {cfg.backbone}+{cfg.head}")
    t0 = t_log = time.perf_counter()
    steps_done, images_since = 0, 0
    run_baseline_validation(run)
    run.ddp.train()
    try:
        while run.epoch < cfg.epochs:
            run.sampler.set_epoch(run.epoch, run.step_in_epoch)
            for images, labels, dropped in run.loader:
                if dropped:
                    log.warning("skipped %d unreadable images in this batch", dropped)
                out = train_step(run, images, labels, steps_per_epoch)
                run.step_in_epoch += 1
                run.global_step += 1
                steps_done += 1
                images_since += len(images) * env.world
                bar.update(1)
                if run.global_step % cfg.log_every == 0 or run.step_in_epoch == steps_per_epoch:
                    now = time.perf_counter()
                    out["images_per_s"] = images_since / max(now - t_log, 1e-9)
                    t_log, images_since = now, 0
                    bar.set_postfix(loss=f"{out['loss']:.3f}", img_s=f"{out['images_per_s']:.1f}")
                    run.logger.step({"epoch": run.epoch, "step": run.step_in_epoch, "global_step": run.global_step,
                                     **out, "time_s": round(now - t0, 3)})
                if cfg.ckpt_every and run.global_step % cfg.ckpt_every == 0:
                    save(run)
                if _should_stop(run, steps_done, t0):
                    reason = "max_steps" if cfg.max_steps is not None and steps_done >= cfg.max_steps else "time_budget"
                    run_validation(run)
                    save(run)
                    return reason
            run.epoch, run.step_in_epoch = run.epoch + 1, 0
            run_validation(run)
            save(run)
        return "finished"
    finally:
        bar.close()


def _mask_augment(cfg: TrainConfig, factory: Callable[[str], Callable] | None) -> Callable | None:
    """The ``--mask-aug`` transform; the factory comes from the caller (the CLI), since recognizers/
    does not import generators/."""
    if not cfg.mask_aug:
        return None
    if factory is None:
        raise MfrbenchError(f"mask_aug={cfg.mask_aug!r} needs a mask-augment factory: run it through "
                            "`mfrbench train-fr --mask-aug` or pass train(..., augment_factory=...)")
    return factory(cfg.mask_aug)


def train(cfg: TrainConfig, *, resume: bool = False, given: Iterable[str] | None = None,
          augment_factory: Callable[[str], Callable] | None = None) -> dict[str, Any]:
    """Train a recognizer as configured; returns a summary (also written to ``RUN_DIR/summary.json``).

    Args:
        cfg: the requested config (``cfg.out`` is the run folder).
        resume: continue the run in ``cfg.out`` from its last checkpoint (from scratch if it has none yet).
        given: the fields the user set this time (``mfrbench.config.Resolved.given``); on resume the others
            keep their saved values. ``None``: every field of ``cfg`` is asked for.
    """
    run_dir = run_dir_of(cfg.out)
    # the folder is the run: a moved run folder resumes from where it is now
    given = None if given is None else {*given, "out"}
    cfg = run_dir.begin(cfg, resume=resume, given=given, write=False)   # every rank: same checks, same config
    env = init_distributed(cfg.device)
    try:
        if env.is_main:
            run_dir.path.mkdir(parents=True, exist_ok=True)
            run_dir.write_config(cfg)
        barrier(env)
        run = setup(cfg, run_dir, env, augment_factory)
        for note in run.data.notes:
            log.warning(note)
        t0 = time.perf_counter()
        start_step = run.global_step
        reason = fit(run)
        elapsed = time.perf_counter() - t0
        summary = {**run.info, "stopped": reason, "epoch": run.epoch, "global_step": run.global_step,
                   "checkpoint": str(run_dir.checkpoint_path()), **run.last_val, "train_seconds": round(elapsed, 2),
                   "images_per_s": round((run.global_step - start_step) * cfg.batch_size / max(elapsed, 1e-9), 2),
                   "world_size": env.world, "device": str(env.device),
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        if env.is_main:
            run_dir.write_json("summary.json", summary)
        run.logger.close()
        return summary
    finally:
        cleanup(env)
