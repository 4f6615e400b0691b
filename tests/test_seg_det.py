"""Seg/Det pieces without the data kit: networks, IoU vs sklearn, splits, labels, IAMGAN's loss terms."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from sklearn.metrics import jaccard_score

from mfrbench.errors import MfrbenchError
from mfrbench.generators.parts import PartsNet
from mfrbench.generators.seg import PARTS, WEARING, WEARING_CLASS, UNet, iou_scores, split_groups


@pytest.mark.parametrize("size", [64, 112])
def test_unet_and_partsnet_shapes_and_gradients(size):
    x = torch.rand(2, 3, size, size, requires_grad=True)
    y = UNet(base=8)(x)
    assert y.shape == (2, 1, size, size)
    y.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    parts, wearing = PartsNet(base=8)(x.detach())
    assert parts.shape == (2, len(PARTS)) and wearing.shape == (2, len(WEARING))


def test_iou_matches_sklearn_jaccard():
    rng = np.random.default_rng(0)
    t = rng.random((5, 16, 16)) < 0.3
    p = rng.random((5, 16, 16)) < 0.3
    s = iou_scores(p, t)
    assert s["iou_global"] == pytest.approx(jaccard_score(t.ravel(), p.ravel()))
    per = [jaccard_score(t[i].ravel(), p[i].ravel()) for i in range(5)]
    assert s["iou_mean_masked"] == pytest.approx(np.mean(per))


def test_iou_empty_maps_by_hand():
    t = np.zeros((2, 4, 4), bool)
    p = np.zeros((2, 4, 4), bool)
    p[1, 0, 0] = True
    s = iou_scores(p, t)
    assert s["iou_mean_all"] == pytest.approx(0.5) and s["empty_correct"] == pytest.approx(0.5)
    assert np.isnan(s["iou_mean_masked"])


def test_split_keeps_groups_on_one_side():
    groups = np.array(["a", "a", "b", "c", "c", "d", "e"])
    tr, va = split_groups(groups, 0.4, seed=1)
    assert len(tr) + len(va) == len(groups) and len(va) > 0
    assert not set(groups[tr]) & set(groups[va])


def test_wearing_classes_cover_every_mtf_mode():
    from mfrbench.generators.mask_templates import WEARING_MODES

    assert {WEARING_CLASS[m] for m in WEARING_MODES} == {"correct", "incorrect"}
    assert WEARING_CLASS["correct"] == "correct"


def test_iamgan_terms_pixel_and_feature(tmp_path):
    """Pixel term is 0 on an unchanged image and counts only non-mask pixels; feature term has gradients."""
    from mfrbench.generators.gan.config import resolve_config
    from mfrbench.generators.gan.contract import build_gan
    from mfrbench.generators.seg import AuxConfig, save_aux_model
    from mfrbench.recognizers.backbones import create_backbone

    net = UNet(base=4)
    torch.nn.init.zeros_(net.head.weight)
    torch.nn.init.constant_(net.head.bias, -20.0)                  # Seg says: no mask anywhere
    save_aux_model(tmp_path / "seg", net, AuxConfig(module="seg", base=4, size=32))
    t, m = resolve_config("iamgan", "smoke", train={"size": 32},
                          model={"ngf": 4, "ndf": 4, "n_blocks": 1, "seg_checkpoint": str(tmp_path / "seg")})
    gan = build_gan(t, m)
    gan.recognizer = create_backbone("mobilefacenet", embedding_dim=16).eval()
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    same = gan.identity_terms(real, real.clone())
    assert same["pix"].item() == pytest.approx(0.0) and same["feat"].item() == pytest.approx(0.0, abs=1e-5)
    fake = (real + 0.5).clamp(-1, 1).requires_grad_(True)
    terms = gan.identity_terms(real, fake)
    expected = m.lambda_pix * (fake - real).abs().mean().item()      # no mask: the whole image is compared
    assert terms["pix"].item() == pytest.approx(expected, rel=1e-4)
    terms["feat"].backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def _toy_aux_data(n: int = 12, size: int = 32):
    """Random crops with a box mask in the lower half; 6 identities (a held-out split exists)."""
    from mfrbench.generators.seg import AuxData

    g = torch.Generator().manual_seed(0)
    maps = torch.zeros(n, size, size, dtype=torch.uint8)
    maps[:, size // 2:, size // 4: 3 * size // 4] = 1
    return AuxData(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g), maps,
                   torch.ones(n, len(PARTS)), torch.zeros(n, dtype=torch.long),
                   np.array([f"id{i % 6}" for i in range(n)]), [f"k{i}" for i in range(n)])


@pytest.fixture()
def toy_aux(monkeypatch):
    """``train_aux`` on synthetic data: the loop, run folder and resume policy without the data kit."""
    import mfrbench.generators.seg as seg_mod

    monkeypatch.setattr(seg_mod, "load_aux_data", lambda masked, unmasked, size, max_images: _toy_aux_data(size=size))
    return seg_mod.train_aux


def _weights(run):
    from mfrbench.generators.seg import load_seg

    return load_seg(run).net.state_dict()


def test_seg_killed_and_resumed_run_matches_the_uninterrupted_one(toy_aux, monkeypatch, tmp_path):
    """A run killed after its step-3 checkpoint, resumed with no options: identical weights and history."""
    import mfrbench.generators.seg as seg_mod

    kw = dict(sets=["size=32", "base=4", "batch_size=4", "eval_every=3"], overrides={"steps": 6}, progress=False,
              device="cpu")
    full = toy_aux("seg", ["m"], tmp_path / "full", **kw)
    step = seg_mod._aux_step

    def killed_at_4(spec, net, opt, train, cfg, i, dev):
        if i == 4:
            raise KeyboardInterrupt
        return step(spec, net, opt, train, cfg, i, dev)

    monkeypatch.setattr(seg_mod, "_aux_step", killed_at_4)
    with pytest.raises(KeyboardInterrupt):
        toy_aux("seg", ["m"], tmp_path / "part", **kw)
    monkeypatch.setattr(seg_mod, "_aux_step", step)
    part = toy_aux("seg", [], tmp_path / "part", resume=True, progress=False, device="cpu")
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["step"] for h in part["history"]] == [3, 6]
    assert json.dumps(part["history"]) == json.dumps(full["history"])       # (NaN != NaN; its JSON is equal)
    assert part["config_hash"] == full["config_hash"]


def test_seg_resume_refuses_a_changed_training_option_and_honours_run_control(toy_aux, tmp_path):
    kw = dict(progress=False, device="cpu")
    toy_aux("seg", ["m"], tmp_path / "r", sets=["size=32", "base=4", "batch_size=4"], overrides={"steps": 2}, **kw)
    with pytest.raises(MfrbenchError, match=re.escape("was trained with aux.lr=0.001; this command asks for "
                                                      "aux.lr=0.01 (a training option)")):
        toy_aux("seg", [], tmp_path / "r", sets=["lr=0.01"], resume=True, **kw)
    with pytest.raises(MfrbenchError, match="already holds a trained run; pass --resume"):
        toy_aux("seg", ["m"], tmp_path / "r", **kw)
    m = toy_aux("seg", [], tmp_path / "r", overrides={"steps": 4, "eval_every": 1}, resume=True, **kw)
    assert [h["step"] for h in m["history"]] == [2, 3, 4]             # the new eval cadence, from step 2 on
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert saved["aux"]["steps"] == 4 and saved["aux"]["eval_every"] == 1 and saved["aux"]["size"] == 32
