"""The contract a GAN family implements (:class:`TrainableGAN`) and the registry of families.

In the spirit of CycleGAN's ``BaseModel``, made explicit (style.md examples 4 and 7). A GAN family
is one subclass of :class:`TrainableGAN` in one file (``cyclegan.py``, ``iamgan.py``, ``mfgan.py``)
and implements exactly three things:

``build()``
    create the networks and optimizers (``self.opt[name] = self.adam(params)``) and any
    :class:`~mfrbench.generators.gan.pool_ema.ImagePool` in ``self.pools``. Called once from ``__init__``.
``train_step(batch: GANBatch, rng: np.random.Generator) -> dict[str, float]``
    one optimisation step on a batch of real faces (domain *Face*) and real masked faces
    (domain *Mask*); returns the **named loss terms** for logging (the progress bar, the
    ``losses.csv`` log). ``rng`` is the step's only source of randomness (the image pool); it
    is derived from ``(seed, step)``, so a resumed run replays exactly.
``networks() -> dict[str, nn.Module]``
    every network to checkpoint, by name (e.g. ``G_M, G_F, D_M, D_F, G_M_ema``).

Everything else is shared and needs nothing more from the family: the loop
(:func:`mfrbench.generators.gan.fit.fit`), :meth:`TrainableGAN.state_dict` (networks +
optimizers + pools + step), :meth:`TrainableGAN.translate` (the EMA face->mask generator used for
samples and generation; override ``translator()`` if ``G_M`` is not named ``G_M``) and
:meth:`TrainableGAN.sample_rows` (rows of the sample grid; override to add rows, e.g. MFGAN's
reference styles). A family registers itself with :func:`register_gan_method`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from mfrbench.errors import MfrbenchError
from mfrbench.generators.gan.data import DomainData, GANBatch
from mfrbench.generators.gan.pool_ema import ImagePool
from mfrbench.registry import LazyRegistry, Registry

if TYPE_CHECKING:
    from mfrbench.generators.gan.config import TrainConfig


class TrainableGAN(abc.ABC):
    """A GAN family: see the module docstring for the contract (``build``, ``train_step``, ``networks``)."""

    #: this family's own model defaults per profile, applied over the shared profile's ``model`` keys
    #: (a setting measured on one family only; ``--set`` and a config file still win over it)
    profile_model: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init__(self, cfg: Any, train: TrainConfig, device: torch.device | str = "cpu") -> None:
        self.cfg, self.train_cfg, self.device = cfg, train, torch.device(device)
        self.opt: dict[str, torch.optim.Optimizer] = {}
        self.pools: dict[str, ImagePool] = {}
        self.step = 0
        self.build()
        for net in self.networks().values():
            net.to(self.device)

    # ---- to implement
    @abc.abstractmethod
    def build(self) -> None:
        """Create networks, ``self.opt`` optimizers and ``self.pools``."""

    @abc.abstractmethod
    def train_step(self, batch: GANBatch, rng: np.random.Generator) -> dict[str, float]:
        """One optimisation step; returns the named loss terms."""

    @abc.abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """Networks to checkpoint, by name."""

    # ---- optional hook
    def prepare(self, faces: DomainData, masks: DomainData, run_dir: Path) -> None:
        """Called by :func:`fit` before the first step (also on resume) with both domains and the run
        folder: dataset-level setup a family needs (MFGAN: style-domain clustering, stage read-outs).
        Must be deterministic; state it creates belongs in ``networks()`` buffers. Default: nothing."""

    # ---- shared helpers
    def adam(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        t = self.train_cfg
        return torch.optim.Adam(params, lr=t.lr, betas=(t.beta1, t.beta2))

    def set_lr(self, lr: float) -> None:
        for opt in self.opt.values():
            for g in opt.param_groups:
                g["lr"] = lr

    def autocast(self):
        on = self.train_cfg.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=on)

    def translator(self) -> nn.Module:
        """The face -> mask generator used for samples and generation (EMA weights when present)."""
        nets = self.networks()
        return nets.get("G_M_ema", nets["G_M"])

    @torch.no_grad()
    def translate(self, faces: torch.Tensor) -> torch.Tensor:
        return self.translator()(faces.to(self.device)).float().clamp(-1, 1)

    @torch.no_grad()
    def sample_rows(self, batch: GANBatch) -> list[torch.Tensor]:
        """Rows of the sample grid: real faces, G_M (EMA) on them, real masks, G_F on them."""
        nets = self.networks()
        rows = [batch.faces, self.translate(batch.faces), batch.masks]
        if "G_F" in nets:
            rows.append(nets["G_F"](batch.masks).float().clamp(-1, 1))
        return rows

    def state_dict(self) -> dict:
        return {"step": self.step,
                "networks": {k: v.state_dict() for k, v in self.networks().items()},
                "optimizers": {k: v.state_dict() for k, v in self.opt.items()},
                "pools": {k: v.state_dict() for k, v in self.pools.items()}}

    def load_state_dict(self, state: dict) -> None:
        nets = self.networks()
        missing = set(nets) - set(state["networks"])
        if missing:
            raise MfrbenchError(f"checkpoint lacks networks {sorted(missing)}")
        for k, net in nets.items():
            net.load_state_dict(state["networks"][k])
        for k, opt in self.opt.items():
            if k in state.get("optimizers", {}):
                opt.load_state_dict(state["optimizers"][k])
        for k, pool in self.pools.items():
            if k in state.get("pools", {}):
                pool.load_state_dict(state["pools"][k], self.device)
        self.step = int(state["step"])


@dataclass(frozen=True)
class GANMethod:
    """A registered family: its ``--method`` name, its :class:`TrainableGAN` subclass and its model-config class."""

    name: str
    cls: type[TrainableGAN]
    config_cls: type
    #: model keys a preset fixes (``mfgan-plain``: ``output=plain``): they win over a profile's value,
    #: since the preset *is* that switch (``--set`` and explicit options still win over it)
    preset: Mapping[str, Any] = field(default_factory=dict)


#: GAN families trainable with ``mfrbench train-gen --method NAME``.
#: Modules whose import registers the built-in GAN methods (imported on first lookup).
BUILTIN_METHOD_MODULES = ("mfrbench.generators.cyclegan", "mfrbench.generators.iamgan", "mfrbench.generators.mfgan")
GAN_METHODS: Registry[GANMethod] = LazyRegistry("GAN method", BUILTIN_METHOD_MODULES)


def register_gan_method(name: str, config_cls: type) -> Callable[[type[TrainableGAN]], type[TrainableGAN]]:
    """Class decorator: ``@register_gan_method("cyclegan", CycleGANConfig)``."""

    def deco(cls: type[TrainableGAN]) -> type[TrainableGAN]:
        spec = GANMethod(name, cls, config_cls)
        GAN_METHODS.register(lambda: spec, name=name)
        return cls

    return deco


def get_method(name: str) -> GANMethod:
    """The registered family ``name`` (an unknown name lists the registered ones)."""
    return GAN_METHODS.get(name)()


def build_gan(train: TrainConfig, model_cfg: Any, device: torch.device | str = "cpu") -> TrainableGAN:
    """A fresh family instance for ``train.method``; torch is seeded with ``train.seed`` first (same init per seed)."""
    torch.manual_seed(train.seed)
    return get_method(train.method).cls(model_cfg, train, device)
