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


# ---------------------------------------------------------------------------- embedding caches
def _crops(tmp_path, n: int, seed: int) -> list[str]:
    import numpy as np

    from mfrbench.imageio import save_image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = tmp_path / f"s{seed}-{i}.png"
        save_image(p, rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
        out.append(str(p))
    return out


class _Counting:
    embedding_dim = 4

    def __init__(self, step: int | None = 10, offset: float = 0.0):
        self.info = {"model": "fake", "config_hash": "abc", "embedding_dim": 4}
        if step is not None:
            self.info["global_step"] = step
        self.offset, self.seen = offset, 0

    def embed(self, images, *, flip=False):
        self.seen += len(images)
        return images.reshape(len(images), -1)[:, :4].astype("float32") + self.offset


def test_shared_store_embeds_each_crop_content_once(tmp_path):
    """A second protocol whose crops are byte-identical copies (LFW-masked's unmasked side) embeds only
    its new crops; the results equal a fresh embedding."""
    import shutil

    import numpy as np

    from mfrbench.evaluate import embed_images

    first = _crops(tmp_path, 5, 0)
    copies = []
    for p in first[:3]:
        q = p.replace(".png", "-copy.png")
        shutil.copy(p, q)
        copies.append(q)
    second = copies + _crops(tmp_path, 2, 1)
    shared = tmp_path / "embeddings" / "abc-step10-flip0.npz"
    m = _Counting()
    embed_images(m, first, flip=False, shared=shared, progress=False)
    assert m.seen == 5 and shared.is_file()
    got = embed_images(m, second, flip=False, shared=shared, progress=False)
    assert m.seen == 7  # only the 2 new crops
    np.testing.assert_array_equal(got, embed_images(_Counting(), second, flip=False, progress=False))
    embed_images(m, second, flip=True, shared=tmp_path / "embeddings" / "abc-step10-flip1.npz", progress=False)
    assert m.seen == 12  # another flip setting is another store


def test_a_resumed_run_does_not_read_the_old_runs_embeddings(tmp_path):
    """Same config hash, more training steps: new cache names, new embeddings."""
    from mfrbench.evaluate import model_key

    assert model_key({"config_hash": "abc", "global_step": 10}) == "abc-step10"
    assert model_key({"config_hash": "abc", "global_step": 20}) != model_key({"config_hash": "abc", "global_step": 10})
    assert model_key({"config_hash": "dlibhash"}) == "dlibhash"

    import numpy as np

    from mfrbench.evaluate import _load_store, embed_images

    crops = _crops(tmp_path, 3, 2)
    shared = tmp_path / "store.npz"
    embed_images(_Counting(step=10), crops, flip=False, shared=shared, progress=False)
    later = _Counting(step=20, offset=1.0)
    assert _load_store(shared, later.info, False) == {}  # the stored model_key is the old run's
    out = embed_images(later, crops, flip=False, shared=shared, progress=False)
    assert later.seen == 3 and np.all(out >= 1.0)
