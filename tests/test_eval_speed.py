"""Evaluation speed fixes keep the numbers: BatchNorm folding and channels_last give the plain backbone's
embeddings (issue 16; the speed itself is measured by benchmarks/bench_eval.py, not timed here)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mfrbench.recognizers.backbones import create_backbone
from mfrbench.recognizers.embed import fold_batchnorm, inference_module


def _with_statistics(name: str) -> nn.Module:
    """A backbone whose BatchNorms hold non-trivial running statistics and affine parameters."""
    torch.manual_seed(0)
    model = create_backbone(name, embedding_dim=64)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("name", ["mobilefacenet", "iresnet18"])
def test_folded_channels_last_module_gives_the_same_embeddings(name):
    model = _with_statistics(name)
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        ref = model(x)
        fast = inference_module(copy.deepcopy(model), torch.device("cpu"))
        got = fast(x.contiguous(memory_format=torch.channels_last))
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert n_bn < sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_folding_needs_eval_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(create_backbone("mobilefacenet", embedding_dim=8).train())
