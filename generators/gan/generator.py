"""A trained GAN run as a :class:`~mfrbench.generate.MaskGenerator` (what ``mfrbench generate`` runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mfrbench.errors import MfrbenchError
from mfrbench.generate import GeneratedBatch, GeneratorIdentity, MaskGenerator
from mfrbench.generators.gan.checkpoint import load_gan, run_config_hash
from mfrbench.generators.gan.composite import CompositeGenerator, composite_full_res
from mfrbench.generators.gan.contract import TrainableGAN
from mfrbench.generators.gan.data import to_uint8
from mfrbench.runs import choose_device


class GANMaskGenerator(MaskGenerator):
    """A trained GAN run as a :class:`~mfrbench.generate.MaskGenerator` (batched; GPU when present).

    ``generate`` resizes the aligned crops to the training size, runs the EMA face -> mask
    generator, and resizes back. The mask map comes from the segmentation U-Net ``Seg``
    (``seg_checkpoint``, or the one an IAMGAN run was trained with); without one it is estimated
    from the pixel change (``|out - in|`` above ``diff_threshold``, smoothed) and labelled
    ``mask_map_source=diff`` in the manifest row.

    A compositing run (``output=composite``, issue 14) has exact maps: the map is its own alpha
    ``A >= 0.5`` (``mask_map_source=alpha``, identity ``maps=exact``). ``resolution="full"`` (default)
    composites at the crop's size (:func:`~mfrbench.generators.gan.composite.composite_full_res`:
    ``A`` and ``C`` upsampled, the input's own pixels wherever ``A`` is 0); ``"train"`` upsamples the
    training-size composite instead, as a plain run does (the comparison of issue 14, deliverable 2).

    Identity (:meth:`identity`): family = ``family`` (``None``: the run's method, as for cyclegan and
    iamgan, which have no presets), variant = the run's method (the preset), config hash = hash of the
    run's resolved ``config.json``.
    """

    family: str | None = None

    def __init__(self, model: TrainableGAN, *, run_dir: str, seg=None, device: torch.device | None = None,
                 batch_size: int = 32, diff_threshold: float = 0.12, seg_run: str | None = None,
                 resolution: str = "full") -> None:
        if resolution not in RESOLUTIONS:
            raise MfrbenchError(f"Expected resolution in {RESOLUTIONS}, but got {resolution!r}")
        self.model, self.run_dir, self.seg, self.seg_run = model, run_dir, seg, seg_run
        self.resolution = resolution
        self.name = model.train_cfg.method
        self.size = model.train_cfg.size
        self.batch_size, self.diff_threshold = batch_size, diff_threshold
        self.device = model.device
        self.net = model.translator().eval()
        self.composite = isinstance(self.net, CompositeGenerator)

    def _maps(self) -> str:
        if self.composite:
            return "exact"
        return "seg" if self.seg is not None else "diff"

    def _map_source(self) -> str:
        return "alpha" if self.composite else self._maps()

    def identity(self) -> GeneratorIdentity:
        method = self.model.train_cfg.method
        return GeneratorIdentity(family=self.family or method, variant=method,
                                 config_hash=run_config_hash(self.run_dir, self.model),
                                 run=str(Path(self.run_dir).resolve()), maps=self._maps())

    def config(self) -> dict:
        return {"name": self.name, **self.identity().to_dict(), "seg_run": self.seg_run,
                "diff_threshold": self.diff_threshold if self.seg is None else None,
                "resolution": self.resolution if self.composite else "train"}

    @classmethod
    def from_run(cls, checkpoint: str | None, *, expect: str | None = None, seg_checkpoint: str | None = None,
                 device: str | None = None, batch_size: int = 32, resolution: str = "full",
                 **_ignored) -> "GANMaskGenerator":
        if not checkpoint:
            raise MfrbenchError(f"the {expect or 'GAN'} generator needs --checkpoint RUN_DIR "
                                f"(a run folder written by `mfrbench train-gen --method {expect or 'cyclegan'}`)")
        dev = choose_device(device)
        model = load_gan(checkpoint, dev)
        if expect and model.train_cfg.method != expect:
            raise MfrbenchError(f"{checkpoint} is a {model.train_cfg.method} run, not {expect}")
        seg_ck = seg_checkpoint or getattr(model.cfg, "seg_checkpoint", None)
        seg = None
        if seg_ck:
            from mfrbench.generators.seg import load_seg

            seg = load_seg(seg_ck, dev)
        return cls(model, run_dir=str(checkpoint), seg=seg, batch_size=batch_size,
                   seg_run=str(Path(seg_ck).resolve()) if seg_ck else None, resolution=resolution)

    @torch.no_grad()
    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 3, H, W) in [-1, 1] -> (output of the same shape, exact mask map (B, H, W) bool or None)."""
        return translate_crops(self.net, x, self.size, resolution=self.resolution)

    def generate(self, images: np.ndarray, landmarks: np.ndarray | None = None, *, rng: np.random.Generator):
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"Expected uint8 images of shape (B, H, W, 3), but got {images.dtype} {images.shape}")
        outs, maps = [], []
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(images[i:i + self.batch_size]).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
            y, exact = self._run(x)
            if exact is not None:
                m = exact.to(torch.uint8).cpu().numpy()
            elif self.seg is not None:
                m = self.seg.predict(y)                                     # (B, H, W) uint8
            else:
                d = (y - x).abs().mean(1, keepdim=True)                     # (B, 1, H, W)
                d = F.avg_pool2d(d, 5, 1, 2)
                m = (d[:, 0] > self.diff_threshold * 2).to(torch.uint8).cpu().numpy()
            outs.append(to_uint8(y))
            maps.append(m)
        info = [{"mask_type": f"{self.name}", "wearing": "", "gan_run": self.run_dir,
                 "mask_map_source": self._map_source()} for _ in range(len(images))]
        return GeneratedBatch(np.concatenate(outs), np.concatenate(maps), info)


RESOLUTIONS = ("full", "train")


@torch.no_grad()
def translate_crops(net: torch.nn.Module, x: torch.Tensor, size: int, *, args: tuple = (), resolution: str = "full",
                    alpha_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run a (plain or compositing) generator trained at ``size`` on crops ``x`` of any size.

    Args:
        net: the EMA ``G_M``; extra ``args`` (a style code) are passed on.
        x: ``(B, 3, H, W)`` in ``[-1, 1]``.
        resolution: ``full``: a compositing generator's ``A`` and ``C`` are upsampled to ``(H, W)`` and
            composited with ``x`` there; ``train``: its composite at ``size`` is upsampled (as a plain one's is).

    Returns:
        ``(out, mask)``: ``(B, 3, H, W)`` in ``[-1, 1]``; ``(B, H, W)`` bool ``A >= alpha_threshold`` at
        ``(H, W)`` for a compositing generator (its exact mask map), else ``None``.
    """
    h, w = x.shape[-2:]
    resized = (h, w) != (size, size)
    xi = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True) if resized else x
    if not isinstance(net, CompositeGenerator):
        y = net(xi, *args).float().clamp(-1, 1)
        if resized:
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False).clamp(-1, 1)
        return y, None
    y, content, alpha = net.parts(xi, *args)
    if resolution == "full":
        y, alpha = composite_full_res(x, content.float(), alpha.float())
    elif resized:
        y = F.interpolate(y.float(), size=(h, w), mode="bilinear", align_corners=False)
        alpha = F.interpolate(alpha.float(), size=(h, w), mode="bilinear", align_corners=False)
    return y.float().clamp(-1, 1), alpha[:, 0] >= alpha_threshold
