"""Backbones: shapes, gradients, the field's parameter counts and init, timm by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mfrbench.errors import MfrbenchError
from mfrbench.recognizers.backbones import BACKBONES, IResNet, create_backbone


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", ["iresnet18", "mobilefacenet", "timm:test_resnet"])
def test_backbone_shape_and_gradient(name):
    torch.manual_seed(0)
    model = create_backbone(name).train()
    x = torch.randn(2, 3, 112, 112, requires_grad=True)
    emb = model(x)
    assert emb.shape == (2, 512) and torch.isfinite(emb).all()
    emb.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_embedding_dim_option_and_eval_mode_batch_of_one():
    model = create_backbone("mobilefacenet", embedding_dim=128).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 112, 112)).shape == (1, 128)


@pytest.mark.parametrize("name, millions", [("iresnet18", (23.5, 24.5)), ("iresnet34", (33.5, 34.5)),
                                            ("iresnet50", (43.0, 44.0)), ("mobilefacenet", (1.5, 2.5))])
def test_parameter_counts_match_insightface(name, millions):
    """insightface reports r50 = 43.6M parameters, mbf ~2M at 512-d (no forward pass: cheap)."""
    n = _params(create_backbone(name)) / 1e6
    assert millions[0] <= n <= millions[1], n


def test_iresnet_init_and_bn_follow_insightface():
    model = create_backbone("iresnet18")
    assert isinstance(model, IResNet)
    assert not model.features.weight.requires_grad and torch.all(model.features.weight == 1)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.eps == 1e-5 for m in bns)
    w = model.layer2[0].conv1.weight
    assert abs(float(w.detach().std()) - 0.1) < 0.01   # N(0, 0.1) conv init
    assert all(m.num_parameters > 1 for m in model.modules() if isinstance(m, nn.PReLU))  # channel-wise PReLU


def test_registry_lists_backbones_and_rejects_unknown_timm_model():
    assert {"iresnet18", "iresnet34", "iresnet50", "mobilefacenet", "timm"} <= set(BACKBONES.names())
    with pytest.raises(MfrbenchError, match="timm has no model 'no_such_net'"):
        create_backbone("timm:no_such_net")


@pytest.mark.parametrize("name", ["mobilefacenet", "iresnet18"])
def test_input_size_resizes_inside_and_keeps_the_key_layout(name):
    """A 64-px backbone takes the same 112x112 crops (resized inside) and keeps every key; only the
    resolution-bound tensors (GDC kernel, IResNet FC) change shape."""
    torch.manual_seed(0)
    small, full = create_backbone(name, input_size=64).eval(), create_backbone(name).eval()
    assert small(torch.randn(2, 3, 112, 112)).shape == (2, 512)
    a, b = small.state_dict(), full.state_dict()
    assert list(a) == list(b)
    changed = {k for k in a if a[k].shape != b[k].shape}
    assert changed == ({"features.0.0.weight"} if name == "mobilefacenet" else {"fc.weight"})
    # resizing inside == resizing before (antialiased bilinear), so every caller sees one resize
    x = torch.randn(1, 3, 112, 112)
    x64 = nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(small.resize(x), x64, atol=1e-5)
    assert torch.allclose(small(x), small(x64), rtol=1e-4, atol=1e-4 * small(x64).abs().max().item())
