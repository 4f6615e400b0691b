"""Face-recognition backbones: 112x112 RGB in, a fixed-size embedding out.

Input convention (all backbones): float tensors ``(B, 3, 112, 112)``, RGB, normalised as
``(x - 127.5) / 127.5`` (insightface's ``arcface_torch``); output ``(B, embedding_dim)`` raw
(not L2-normalised) embeddings.

* ``iresnet18/34/50/100``: Improved ResNet, Duta et al., "Improved Residual Networks for Image
  and Video Recognition", ICPR 2020, https://arxiv.org/abs/2004.04989, in the face variant of
  Deng et al., "ArcFace", CVPR 2019, https://arxiv.org/abs/1801.07698 (stride-1 stem, BN-Conv-BN-
  PReLU-Conv-BN blocks, BN-Flatten-FC-BN "E" output). Layer layout, BN eps, PReLU and weight init
  follow insightface ``recognition/arcface_torch/backbones/iresnet.py``; key names and shapes are
  arcface_torch's ``r18/r34/r50/r100`` (``iresnet100``: layers (3, 13, 30, 3), the backbone of most
  released models), so its ``backbone.pth`` files load as they are (:mod:`.pretrained`).
* ``mobilefacenet``: Chen et al., "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face
  Verification on Mobile Devices", CCBR 2018, https://arxiv.org/abs/1804.07573, as insightface's
  ``mbf`` (width scale 2, blocks (1, 4, 6, 2), global depthwise conv (GDC) embedding, 512-d).
* ``timm:<name>``: any timm model (``pretrained=False``, offline) without its classifier, followed
  by a Linear + BatchNorm1d embedding head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mfrbench.errors import MfrbenchError
from mfrbench.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone")
register_backbone = BACKBONES.register
INPUT_SIZE = 112


def stage_size(size: int, stages: int = 4) -> int:
    """Side of the feature map after ``stages`` stride-2 3x3 convolutions (padding 1): 112 -> 7, 64 -> 4."""
    for _ in range(stages):
        size = (size - 1) // 2 + 1
    return size


def resize_matrix(n: int, size: int) -> torch.Tensor:
    """``(size, n)``: one axis of antialiased bilinear resizing as a matrix (torch's own weights, read
    off by resizing the identity), so ``R @ x @ R.T`` is ``interpolate(..., antialias=True)``."""
    eye = torch.eye(n, dtype=torch.float64).reshape(1, 1, n, n)
    return nn.functional.interpolate(eye, size=(size, n), mode="bilinear", align_corners=False,
                                     antialias=True)[0, 0].float()


class InputResize(nn.Module):
    """Downscale 112x112 crops to a backbone's own ``input_size`` (antialiased bilinear).

    Inside the network, so training, validation, evaluation, the GAN identity loss and ONNX export
    all feed the same 112x112 crops and see the same resize: a low-resolution CPU recipe is a
    property of the model, not of each caller. Two matrix products with a fixed (non-persistent)
    matrix, since ONNX has no antialiased resize; no parameters, so state dicts keep their keys.
    """

    def __init__(self, size: int, crop: int = INPUT_SIZE) -> None:
        super().__init__()
        self.size, self.crop = size, crop
        self.register_buffer("matrix", resize_matrix(crop, size) if size != crop else torch.ones(0),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size == self.crop or x.shape[-1] == self.size:
            return x
        if tuple(x.shape[-2:]) != (self.crop, self.crop):
            raise ValueError(f"Expected {self.crop}x{self.crop} crops, but got {tuple(x.shape[-2:])}")
        r = self.matrix.to(x.dtype)
        return r @ x @ r.T


# --------------------------------------------------------------------------------- IResNet
def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return out + shortcut


class IResNet(nn.Module):
    """IResNet for 112x112 faces; four stride-2 stages take 112 -> 7 before the FC embedding."""

    def __init__(self, layers: tuple[int, int, int, int], embedding_dim: int = 512, dropout: float = 0.0,
                 input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        self.embedding_dim, self.input_size = embedding_dim, input_size
        self.resize = InputResize(input_size)
        self.fc_scale = stage_size(input_size) ** 2
        self.conv1 = _conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        stages = []
        for width, n in zip((64, 128, 256, 512), layers):
            down = nn.Sequential(nn.Conv2d(cin, width, 1, stride=2, bias=False), nn.BatchNorm2d(width, eps=1e-5))
            blocks = [IBasicBlock(cin, width, 2, down)] + [IBasicBlock(width, width) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * self.fc_scale, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=1e-5)
        # insightface: the embedding BN has a fixed unit scale (only its shift is learnt).
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resize(x)
        x = self.prelu(self.bn1(self.conv1(x)))                      # (B, 64, 112, 112)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))    # (B, 512, 7, 7)
        x = torch.flatten(self.bn2(x), 1)                            # (B, 512 * 49)
        return self.features(self.fc(self.dropout(x)))               # (B, embedding_dim)


# --------------------------------------------------------------------------- MobileFaceNet
class ConvBlock(nn.Sequential):
    """Conv -> BN -> PReLU (``linear=True`` drops the PReLU, as MobileFaceNet's linear bottleneck)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1,
                 linear: bool = False) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if not linear:
            layers.append(nn.PReLU(cout))
        super().__init__(*layers)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand to ``groups`` channels, depthwise 3x3, linear 1x1 project."""

    def __init__(self, cin: int, cout: int, groups: int, stride: int = 1, residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(ConvBlock(cin, groups), ConvBlock(groups, groups, 3, stride, 1, groups=groups),
                                    ConvBlock(groups, cout, linear=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x) if self.residual else self.layers(x)


class MobileFaceNet(nn.Module):
    """insightface's MobileFaceNet (``mbf``): 112 -> 7 in four stride-2 steps, GDC embedding."""

    def __init__(self, embedding_dim: int = 512, blocks: tuple[int, int, int, int] = (1, 4, 6, 2),
                 scale: int = 2, input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        self.embedding_dim, self.input_size = embedding_dim, input_size
        self.resize = InputResize(input_size)
        c64, c128 = 64 * scale, 128 * scale

        def residual(c: int, n: int, groups: int) -> nn.Sequential:
            return nn.Sequential(*[DepthWise(c, c, groups, residual=True) for _ in range(n)])

        first = (ConvBlock(c64, c64, 3, 1, 1, groups=64) if blocks[0] == 1 else residual(c64, blocks[0], 128))
        self.layers = nn.Sequential(
            ConvBlock(3, c64, 3, 2, 1),                                        # (B, c64, 56, 56)
            first,
            DepthWise(c64, c64, 128, stride=2), residual(c64, blocks[1], 128),  # 28x28
            DepthWise(c64, c128, 256, stride=2), residual(c128, blocks[2], 256),  # 14x14
            DepthWise(c128, c128, 512, stride=2), residual(c128, blocks[3], 256),  # 7x7
        )
        self.conv_sep = ConvBlock(c128, 512)
        # GDC: a 7x7 depthwise conv (the final map's size) replaces global pooling: each position keeps its weight.
        gdc = stage_size(input_size)
        self.features = nn.Sequential(ConvBlock(512, 512, gdc, 1, 0, groups=512, linear=True), nn.Flatten(),
                                      nn.Linear(512, embedding_dim, bias=False), nn.BatchNorm1d(embedding_dim))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resize(x)
        return self.features(self.conv_sep(self.layers(x)))  # (B, embedding_dim)


# ------------------------------------------------------------------------------------ timm
class TimmEmbedder(nn.Module):
    """A timm trunk (no classifier, global pooling) followed by Linear + BatchNorm1d."""

    def __init__(self, model_name: str, embedding_dim: int = 512, input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        self.input_size = input_size
        self.resize = InputResize(input_size)
        import timm

        try:
            self.trunk = timm.create_model(model_name, pretrained=False, num_classes=0)
        except RuntimeError as err:  # timm raises RuntimeError for unknown names
            raise MfrbenchError(f"timm has no model {model_name!r} ({err}); see timm.list_models()") from err
        self.embedding_dim = embedding_dim
        self.fc = nn.Linear(self.trunk.num_features, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.fc(self.trunk(self.resize(x))))


# ------------------------------------------------------------------------------ registry
@register_backbone
def iresnet18(**kw: Any) -> IResNet:
    return IResNet((2, 2, 2, 2), **kw)


@register_backbone
def iresnet34(**kw: Any) -> IResNet:
    return IResNet((3, 4, 6, 3), **kw)


@register_backbone
def iresnet50(**kw: Any) -> IResNet:
    return IResNet((3, 4, 14, 3), **kw)


@register_backbone
def iresnet100(**kw: Any) -> IResNet:
    return IResNet((3, 13, 30, 3), **kw)


@register_backbone
def mobilefacenet(**kw: Any) -> MobileFaceNet:
    return MobileFaceNet(**kw)


@register_backbone
def timm(model_name: str = "resnet18", **kw: Any) -> TimmEmbedder:
    return TimmEmbedder(model_name, **kw)


def create_backbone(name: str, *, embedding_dim: int = 512, **kw: Any) -> nn.Module:
    """Build a backbone by registry name, or any timm model as ``timm:<model_name>``."""
    if name.startswith(("timm:", "timm/")):
        return BACKBONES.create("timm", model_name=name[5:], embedding_dim=embedding_dim, **kw)
    return BACKBONES.create(name, embedding_dim=embedding_dim, **kw)
