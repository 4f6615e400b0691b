"""Shared network building blocks for the GAN generators (one copy of each, reused by every family).

Origin: junyanz/pytorch-CycleGAN-and-pix2pix ``models/networks.py`` (``ResnetGenerator``,
``ResnetBlock``, ``NLayerDiscriminator``, ``init_weights``), rewritten to be composable:

* :class:`ResnetGenerator` is ``stem -> downs -> blocks -> ups -> head``; each stage is its own
  ``nn.Sequential``/``nn.ModuleList`` and :meth:`ResnetGenerator.encode` / :meth:`decode` are
  separate, so a style-conditioned generator (MFGAN's ``G_M`` with AdaIN in the up-sampling
  blocks) subclasses it and overrides :meth:`ResnetGenerator.make_up` + :meth:`decode` instead
  of copying the network;
* :class:`UpBlock` and :class:`DownBlock` take a ``norm`` factory (:func:`norm_layer`), so an
  AdaIN up block is one new class (:class:`AdaIN` is here so every family shares it);
* :class:`PatchDiscriminator` is the 70x70 PatchGAN (``n_layers=3``); ``extra_convs`` adds
  stride-1 conv layers before the head (MFGAN "adds a convolution layer in discriminator").

Resolution: the generator is fully convolutional; :func:`default_blocks` gives the
CycleGAN defaults (6 residual blocks below 256 px, 9 at 256 px). Inputs are ``(B, 3, S, S)`` in
``[-1, 1]`` with ``S`` divisible by ``2 ** n_down``; outputs have the same shape (``tanh``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]


def norm_layer(kind: str = "instance") -> NormFactory:
    """Return a factory ``channels -> nn.Module`` for ``instance`` | ``batch`` | ``none``.

    Instance norm without affine parameters and without running stats, as CycleGAN uses.
    """
    if kind == "instance":
        return lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False)
    if kind == "batch":
        return lambda c: nn.BatchNorm2d(c, affine=True, track_running_stats=True)
    if kind == "none":
        return lambda c: nn.Identity()
    raise ValueError(f"Expected norm kind in ('instance', 'batch', 'none'), but got {kind!r}")


def padding_layer(kind: str, amount: int) -> nn.Module:
    """Explicit padding module: ``reflect`` | ``replicate`` | ``zero``."""
    if kind == "reflect":
        return nn.ReflectionPad2d(amount)
    if kind == "replicate":
        return nn.ReplicationPad2d(amount)
    if kind == "zero":
        return nn.ZeroPad2d(amount)
    raise ValueError(f"Expected padding kind in ('reflect', 'replicate', 'zero'), but got {kind!r}")


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """CycleGAN's ``normal`` init: conv/linear weights ~ N(0, gain), norm weights ~ N(1, gain)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


class ResnetBlock(nn.Module):
    """``x + conv-norm-relu-conv-norm(x)`` with explicit padding (CycleGAN ``ResnetBlock``)."""

    def __init__(self, dim: int, norm: NormFactory, padding: str = "reflect", dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [padding_layer(padding, 1), nn.Conv2d(dim, dim, 3), norm(dim), nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers += [padding_layer(padding, 1), nn.Conv2d(dim, dim, 3), norm(dim)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DownBlock(nn.Sequential):
    """Stride-2 3x3 conv, norm, ReLU: halves the resolution."""

    def __init__(self, cin: int, cout: int, norm: NormFactory) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, stride=2, padding=1), norm(cout), nn.ReLU(True))


UPSAMPLE_KINDS = ("deconv", "resize")


def up_conv(cin: int, cout: int, kind: str = "deconv") -> nn.Module:
    """The resolution-doubling conv of an up-sampling block.

    ``deconv``: CycleGAN's stride-2 transposed 3x3 conv. ``resize``: nearest-neighbour 2x up-sampling then
    a 3x3 conv (Odena, Dumoulin, Olah, "Deconvolution and Checkerboard Artifacts", Distill 2016): the
    transposed conv's uneven kernel overlap draws a checkerboard that a short run does not unlearn.
    """
    if kind == "deconv":
        return nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
    if kind == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1))
    raise ValueError(f"Expected upsample in {UPSAMPLE_KINDS}, but got {kind!r}")


class UpBlock(nn.Sequential):
    """Up-sampling conv (:func:`up_conv`: transposed by default, as CycleGAN), norm, ReLU: doubles the resolution."""

    def __init__(self, cin: int, cout: int, norm: NormFactory, upsample: str = "deconv") -> None:
        super().__init__(up_conv(cin, cout, upsample), norm(cout), nn.ReLU(True))


class AdaIN(nn.Module):
    """Adaptive instance norm (Huang & Belongie 2017, StarGAN v2 ``AdaIN``): style -> per-channel affine."""

    def __init__(self, style_dim: int, channels: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.fc = nn.Linear(style_dim, channels * 2)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.fc(s)[:, :, None, None].chunk(2, dim=1)  # each (B, C, 1, 1)
        return (1 + gamma) * self.norm(x) + beta


def default_blocks(size: int) -> int:
    """CycleGAN's choice: 9 residual blocks at 256 px, 6 below."""
    return 9 if size >= 256 else 6


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator: c7s1-ngf, ``n_down`` x (stride-2 down), ``n_blocks`` x ResBlock, ups, c7s1-3, tanh.

    Args:
        ngf: channels after the stem (doubled at each down-sampling step).
        n_blocks: residual blocks at the bottleneck.
        n_down: down-sampling steps (2 in CycleGAN; the input side must be divisible by ``2 ** n_down``).
        norm: ``instance`` | ``batch`` | ``none``.
        padding: padding of the residual blocks and the 7x7 convs.
        upsample: ``deconv`` (CycleGAN) | ``resize`` (:func:`up_conv`).
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, n_blocks: int = 6, n_down: int = 2,
                 norm: str = "instance", padding: str = "reflect", dropout: float = 0.0,
                 upsample: str = "deconv") -> None:
        super().__init__()
        self.ngf, self.n_down, self.upsample = ngf, n_down, upsample
        nf = norm_layer(norm)
        self.stem = nn.Sequential(padding_layer(padding, 3), nn.Conv2d(in_ch, ngf, 7), nf(ngf), nn.ReLU(True))
        self.downs = nn.Sequential(*[DownBlock(ngf * 2 ** i, ngf * 2 ** (i + 1), nf) for i in range(n_down)])
        dim = ngf * 2 ** n_down
        self.blocks = nn.Sequential(*[ResnetBlock(dim, nf, padding, dropout) for _ in range(n_blocks)])
        self.ups = nn.ModuleList([self.make_up(ngf * 2 ** (i + 1), ngf * 2 ** i, nf) for i in reversed(range(n_down))])
        self.head = nn.Sequential(padding_layer(padding, 3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh())
        init_weights(self)

    def make_up(self, cin: int, cout: int, norm: NormFactory) -> nn.Module:
        """One up-sampling block; override to condition it (e.g. AdaIN on a style code)."""
        return UpBlock(cin, cout, norm, self.upsample)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> bottleneck features (B, ngf * 2**n_down, S / 2**n_down, S / 2**n_down)."""
        return self.blocks(self.downs(self.stem(x)))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        for up in self.ups:
            h = up(h)
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (``n_layers=3`` is the 70x70 PatchGAN); outputs a map of real/fake logits.

    Args:
        ndf: channels of the first conv (doubled per layer, capped at ``8 * ndf``).
        n_layers: stride-2 conv layers after the first.
        extra_convs: additional stride-1 4x4 conv-norm-LeakyReLU layers before the head.
    """

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 extra_convs: int = 0) -> None:
        super().__init__()
        nf = norm_layer(norm)
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1), nf(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1), nf(ndf * mult), nn.LeakyReLU(0.2, True)]
        for _ in range(extra_convs):
            layers += [nn.Conv2d(ndf * mult, ndf * mult, 3, 1, 1), nf(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvNormAct(nn.Sequential):
    """3x3 conv (stride 1 or 2), norm, ReLU: the unit of the small U-Net and CNN heads."""

    def __init__(self, cin: int, cout: int, norm: NormFactory, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), norm(cout), nn.ReLU(True))


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --- Style-conditioned and pre-activation blocks (added for MFGAN; generic, reusable) ---------------


class AdaINUpBlock(nn.Module):
    """:class:`UpBlock` with its norm replaced by :class:`AdaIN` on a style code ``s``.

    MFGAN (§IV-A) "applies AdaIN for up-sampling blocks in generator": the CycleGAN up-sampling
    block, transposed conv -> AdaIN(s) -> ReLU. ``forward(x, s)`` with ``s`` of shape ``(B, style_dim)``.
    """

    def __init__(self, cin: int, cout: int, style_dim: int, upsample: str = "deconv") -> None:
        super().__init__()
        self.conv = up_conv(cin, cout, upsample)
        self.adain = AdaIN(style_dim, cout)
        self.act = nn.ReLU(True)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.act(self.adain(self.conv(x), s))


class PreActResBlock(nn.Module):
    """A ResBlock of Duta et al.'s improved residual networks (iResNet, ICPR 2020), by stage position.

    * ``start``: ``conv-norm-relu-conv-norm`` + projection shortcut (stride-2 down-sampling when
      ``stride=2``, via 3x3 max-pool + 1x1 conv + norm, iResNet's improved projection); no
      activation after the addition, so the next block starts pre-activated.
    * ``middle``: pre-activation ``norm-relu-conv-norm-relu-conv`` + identity.
    * ``end``: ``middle`` followed by ``norm-relu`` after the addition (closes the stage).

    Two 3x3 convs per block (the basic, not the bottleneck, variant). ``norm`` is a
    :func:`norm_layer` factory; instance norm suits batch size 1.
    """

    def __init__(self, cin: int, cout: int, *, position: str = "middle", stride: int = 1,
                 norm: NormFactory | None = None) -> None:
        super().__init__()
        if position not in ("start", "middle", "end"):
            raise ValueError(f"Expected position in ('start', 'middle', 'end'), but got {position!r}")
        if position != "start" and (stride != 1 or cin != cout):
            raise ValueError(f"Expected a {position} block to keep its shape (stride 1, cin == cout), "
                             f"but got stride {stride}, {cin} -> {cout}")
        nf = norm or norm_layer("instance")
        self.position = position
        if position == "start":
            self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nf(cout), nn.ReLU(True),
                                      nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nf(cout))
            proj: list[nn.Module] = [nn.MaxPool2d(3, stride, 1)] if stride > 1 else []
            if cin != cout or stride > 1:
                proj += [nn.Conv2d(cin, cout, 1, bias=False), nf(cout)]
            self.shortcut = nn.Sequential(*proj)
        else:
            self.body = nn.Sequential(nf(cin), nn.ReLU(True), nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                                      nf(cout), nn.ReLU(True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False))
            self.shortcut = nn.Sequential()
        self.post = nn.Sequential(nf(cout), nn.ReLU(True)) if position == "end" else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.body(x) + self.shortcut(x))


class ResStage(nn.Sequential):
    """One iResNet stage: a ``start`` block (changes width/resolution), ``n_middle`` ``middle`` blocks,
    an ``end`` block."""

    def __init__(self, cin: int, cout: int, *, stride: int = 2, n_middle: int = 1,
                 norm: NormFactory | None = None) -> None:
        super().__init__(PreActResBlock(cin, cout, position="start", stride=stride, norm=norm),
                         *[PreActResBlock(cout, cout, position="middle", norm=norm) for _ in range(n_middle)],
                         PreActResBlock(cout, cout, position="end", norm=norm))
