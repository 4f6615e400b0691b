"""GAN core: blocks (shapes, gradients), losses, schedule, image pool, EMA, config, exact resume."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from mfrbench.errors import MfrbenchError
from mfrbench.generators._blocks import AdaIN, PatchDiscriminator, ResnetGenerator, default_blocks
from mfrbench.generators.gan.checkpoint import load_checkpoint, load_gan
from mfrbench.generators.gan.config import resolve_config
from mfrbench.generators.gan.contract import build_gan
from mfrbench.generators.gan.data import DomainData, GANBatch
from mfrbench.generators.gan.fit import fit, linear_decay_lr
from mfrbench.generators.gan.losses import l1, lsgan_loss
from mfrbench.generators.gan.pool_ema import EMA, ImagePool


@pytest.mark.parametrize("size", [64, 128, 256])
def test_resnet_generator_shape_range_and_gradient(size):
    g = ResnetGenerator(ngf=8, n_blocks=default_blocks(size))
    x = torch.rand(2, 3, size, size) * 2 - 1
    y = g(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    y.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in g.parameters())
    assert len(g.blocks) == (9 if size == 256 else 6)


@pytest.mark.parametrize("size,expected", [(64, 6), (128, 14), (256, 30)])
def test_patch_discriminator_is_70px_patchgan(size, expected):
    d = PatchDiscriminator(ndf=8, n_layers=3)
    assert d(torch.zeros(1, 3, size, size)).shape == (1, 1, expected, expected)
    assert PatchDiscriminator(ndf=8, extra_convs=1)(torch.zeros(1, 3, size, size)).shape == (1, 1, expected, expected)


def test_adain_scales_normalised_features():
    a = AdaIN(style_dim=4, channels=3)
    torch.nn.init.zeros_(a.fc.weight)
    a.fc.bias.data = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.5, 0.5])  # gamma = 1 -> x2, beta = 0.5
    x = torch.randn(2, 3, 8, 8)
    out = a(x, torch.zeros(2, 4))
    ref = 2 * (x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), unbiased=False, keepdim=True) + 1e-5) + 0.5
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_lsgan_and_l1_by_hand():
    p = torch.tensor([0.0, 1.0, 2.0])
    assert lsgan_loss(p, True).item() == pytest.approx((1 + 0 + 1) / 3)
    assert lsgan_loss(p, False).item() == pytest.approx((0 + 1 + 4) / 3)
    assert l1(torch.tensor([1.0, -1.0]), torch.zeros(2)).item() == 1.0


def test_linear_decay_schedule():
    assert [linear_decay_lr(s, 100, 2e-4, 0.5) for s in (0, 49, 50)] == [2e-4, 2e-4, 2e-4]
    assert linear_decay_lr(75, 100, 2e-4, 0.5) == pytest.approx(1e-4)
    assert linear_decay_lr(99, 100, 2e-4, 0.5) == pytest.approx(2e-4 / 50)


def test_image_pool_fills_then_swaps_and_roundtrips():
    pool = ImagePool(size=3)
    rng = np.random.default_rng(0)
    first = torch.arange(3.0).view(3, 1, 1, 1)
    assert torch.equal(pool.query(first, rng), first)          # filling: returns its input
    out = pool.query(torch.full((20, 1, 1, 1), 9.0), rng)
    old = (out != 9).sum().item()
    assert 0 < old <= 3                                          # some history comes back, at most what was stored
    state = pool.state_dict()
    pool2 = ImagePool(0)
    pool2.load_state_dict(state, torch.device("cpu"))
    assert pool2.size == 3 and torch.equal(torch.cat(pool2.images), torch.cat(pool.images))
    assert torch.equal(ImagePool(0).query(first, rng), first)


def test_ema_follows_weights_with_warmup():
    net = torch.nn.Linear(1, 1, bias=False)
    net.weight.data.fill_(0.0)
    ema = EMA(net, decay=0.999)
    net.weight.data.fill_(1.0)
    ema.update(net, step=0)                                      # d = min(0.999, 1/10) = 0.1
    assert ema.net.weight.item() == pytest.approx(0.9)
    assert not any(p.requires_grad for p in ema.net.parameters())


def test_resolve_config_profiles_and_errors():
    t, m = resolve_config("cyclegan", "paper")
    assert (t.batch_size, t.steps, t.size, m.n_blocks) == (1, 450_000, 256, 9)
    t, m = resolve_config("cyclegan", "cpu", train={"steps": 7}, model={"ngf": 16})
    assert t.steps == 7 and m.ngf == 16 and m.lambda_identity == 0.0
    with pytest.raises(MfrbenchError, match=re.escape("unknown cyclegan config (option) keys ['ngff']; valid keys:")):
        resolve_config("cyclegan", None, model={"ngff": 3})
    with pytest.raises(MfrbenchError, match="Unknown profile 'fast'"):
        resolve_config("cyclegan", "fast")


def _domains(n: int = 6, size: int = 32) -> tuple[DomainData, DomainData]:
    g = torch.Generator().manual_seed(0)
    f = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    m = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    keys = [str(i) for i in range(n)]
    return DomainData("faces", f, keys, "t"), DomainData("masks", m, keys, "t")


def _tiny(steps: int):
    return resolve_config("cyclegan", "smoke", train={"size": 32, "steps": steps, "sample_every": 100,
                                                      "ckpt_every": 2}, model={"ngf": 4, "ndf": 4, "n_blocks": 1})


def test_resume_is_exact(tmp_path):
    """4 steps in one go == 2 steps, reload from the checkpoint, 2 more (weights, optimizer, pool)."""
    faces, masks = _domains()
    t4, m = _tiny(4)
    a = build_gan(t4, m)
    fit(a, faces, masks, tmp_path / "a", progress=False)
    t2, _ = _tiny(2)
    b = build_gan(t2, m)
    fit(b, faces, masks, tmp_path / "b", progress=False)
    c = load_gan(tmp_path / "b")
    assert c.step == 2
    c.train_cfg = t4
    fit(c, faces, masks, tmp_path / "b", progress=False)
    for name, net in a.networks().items():
        for (k, v), v2 in zip(net.state_dict().items(), c.networks()[name].state_dict().values()):
            assert torch.equal(v, v2), f"{name}.{k} differs after resume"
    assert (tmp_path / "b" / "losses.csv").read_text().count("\n") == 5  # header + steps 1..4, no duplicates
    ck = load_checkpoint(tmp_path / "b")
    assert ck["config"]["method"] == "cyclegan" and ck["state"]["step"] == 4


def test_cyclegan_step_returns_named_losses_and_changes_weights():
    t, m = _tiny(1)
    gan = build_gan(t, m)
    before = [p.clone() for p in gan.G_M.parameters()]
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    losses = gan.train_step(GANBatch(x, x.flip(-1)), np.random.default_rng(0))
    assert set(losses) == {"G_M_gan", "G_F_gan", "cyc_F", "cyc_M", "idt_M", "idt_F", "D_M", "D_F"}
    assert all(np.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, gan.G_M.parameters()))
