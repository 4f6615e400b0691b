"""The training loop every GAN family shares: LR schedule, logging, sample grids, checkpoints, exact resume."""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from mfrbench.generators.gan.checkpoint import gan_run_dir, save_checkpoint
from mfrbench.generators.gan.config import run_config
from mfrbench.generators.gan.contract import TrainableGAN
from mfrbench.generators.gan.data import DomainData, GANBatch, fixed_sample_batch, step_batch, to_uint8
from mfrbench.runs import RunDir, atomic_write_text


def linear_decay_lr(step: int, total: int, lr: float, decay_start: float) -> float:
    """CycleGAN's schedule: ``lr`` until ``decay_start * total`` steps, then linearly to 0 at ``total``.

    >>> [round(linear_decay_lr(s, 10, 1.0, 0.5), 2) for s in (0, 5, 6, 9)]
    [1.0, 1.0, 0.8, 0.2]
    """
    start = int(decay_start * total)
    if step < start or total <= start:
        return lr
    return lr * max(0.0, 1.0 - (step - start) / (total - start))


def save_sample_grid(model: TrainableGAN, batch: GANBatch, path: Path) -> Path:
    """One PNG: the family's :meth:`~TrainableGAN.sample_rows` of ``batch``, one row each."""
    from mfrbench.imageio import save_image
    from mfrbench.viz import image_grid

    rows = model.sample_rows(batch)
    n = rows[0].shape[0]
    tiles = [img for row in rows for img in to_uint8(row)]
    save_image(path, image_grid(tiles, cols=n, size=max(64, model.train_cfg.size)))
    return path


class _LossLog:
    """Append-only ``losses.csv``; on resume rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        self.rows: list[dict] = []
        if path.is_file() and resume_step:
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        self.keys: list[str] = list(self.rows[0].keys()) if self.rows else []

    def add(self, step: int, losses: dict[str, float], lr: float) -> None:
        row = {"step": step, "lr": f"{lr:.6g}", **{k: f"{v:.5f}" for k, v in losses.items()}}
        # a family may add loss terms mid-run (MFGAN's stages): the header grows, earlier rows leave them blank
        self.keys += [k for k in row if k not in self.keys]
        self.rows.append(row)

    def flush(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.keys or ["step"], extrasaction="ignore")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


def fit(model: TrainableGAN, faces: DomainData, masks: DomainData, run_dir: str | os.PathLike | RunDir, *,
        config: Any = None, progress: bool = True, callbacks: Iterable[Callable[..., None]] = ()) -> dict:
    """Train ``model`` from ``model.step`` to ``train.steps``; samples, checkpoints and losses go to ``run_dir``.

    Args:
        model: a built (or resumed: ``load_state_dict``) family instance.
        faces, masks: the two domains.
        run_dir: the run folder (a path or its :class:`~mfrbench.runs.RunDir`).
        config: the run record written to ``config.json`` and into each checkpoint
            (:func:`~mfrbench.generators.gan.config.run_config`); default: the model's own configs.
        callbacks: called as ``cb(step=, losses=, model=)`` after every step.

    Returns:
        A summary: steps done, seconds, the mean of each loss term over the last 10% of steps,
        and the paths of the checkpoint and the last sample grid.
    """
    from tqdm import tqdm

    t = model.train_cfg
    run = run_dir if isinstance(run_dir, RunDir) else gan_run_dir(run_dir)
    config = config if config is not None else run_config(t, model.cfg)
    run_dir = run.path
    run_dir.mkdir(parents=True, exist_ok=True)
    run.write_config(config)
    info = {"faces": len(faces), "masks": len(masks)}
    losses_log = _LossLog(run_dir / "losses.csv", model.step)
    fixed = fixed_sample_batch(faces, masks, t.n_sample, model.device, t.seed)
    model.prepare(faces, masks, run_dir)
    start, t0 = model.step, time.perf_counter()
    recent: dict[str, list[float]] = {}
    last_grid = None
    bar = tqdm(total=t.steps, initial=start, desc=f"train {t.method}", unit="step", disable=not progress,
               dynamic_ncols=True, mininterval=1.0)
    try:
        for step in range(start, t.steps):
            lr = linear_decay_lr(step, t.steps, t.lr, t.decay_start)
            model.set_lr(lr)
            batch, rng = step_batch(faces, masks, step, t, model.device)
            losses = model.train_step(batch, rng)
            model.step = step + 1
            for k, v in losses.items():
                recent.setdefault(k, []).append(v)
            if model.step % t.log_every == 0 or model.step == t.steps:
                losses_log.add(model.step, losses, lr)
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
            bar.update(1)
            for cb in callbacks:
                cb(step=model.step, losses=losses, model=model)
            if model.step % t.sample_every == 0 or model.step == t.steps:
                last_grid = save_sample_grid(model, fixed, run_dir / "samples" / f"step_{model.step:07d}.png")
            if model.step % t.ckpt_every == 0 or model.step == t.steps:
                losses_log.flush()
                save_checkpoint(model, run, config, info)
    finally:
        bar.close()
    tail = max(1, (t.steps - start) // 10)
    summary = {"steps": model.step, "steps_this_run": model.step - start,
               "seconds": round(time.perf_counter() - t0, 2),
               "final_losses": {k: round(float(np.mean(v[-tail:])), 4) for k, v in recent.items()},
               "checkpoint": str(run.checkpoint_path()), "samples": str(last_grid) if last_grid else None,
               **info, "config_hash": run.config_hash}
    run.write_json("summary.json", summary)
    return summary
