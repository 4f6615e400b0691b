"""MFGAN networks, schedule, presets, resume (generators/mfgan.py).

These tests use small stand-in Det/Seg networks (random weights, the real FrozenAux wrapper) on
in-memory crops, so the contract can be checked in seconds; the end-to-end run on real shared
data with trained Det/Seg runs is in ``test_mfgan_train.py``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mfrbench.generators import mfgan as M
from mfrbench.generators.gan.checkpoint import load_checkpoint
from mfrbench.generators.gan.config import resolve_config, run_config
from mfrbench.generators.gan.contract import TrainableGAN, build_gan
from mfrbench.generators.gan.data import DomainData, step_batch
from mfrbench.generators.gan.fit import fit

PARTS = ["eyes", "nose", "mouth", "chin"]


class _TinySeg(nn.Module):
    size = 32

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + 2.0 * (torch.linspace(-1, 1, x.shape[-2])[None, None, :, None] > 0.2)


class _TinyDet(nn.Module):
    size = 32
    parts = PARTS

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 2, 1)
        self.fc = nn.Linear(4, len(PARTS))

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3))) * 10


@pytest.fixture()
def stand_in_aux(monkeypatch):
    torch.manual_seed(0)
    seg, det = _TinySeg(), _TinyDet()

    real_from_run = M.FrozenAux.from_run

    def from_run(kind, run, device):
        if not run:
            return real_from_run(kind, run, device)      # the real "missing run" error
        net = seg if kind == "Seg" else det
        return M.FrozenAux(kind, net, size=net.size, parts=getattr(net, "parts", ()), run=run)

    monkeypatch.setattr(M.FrozenAux, "from_run", staticmethod(from_run))


def _domain(name: str, n: int, size: int, seed: int) -> DomainData:
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return DomainData(name, imgs, [f"{name}{i}" for i in range(n)], "memory")


TINY = dict(ngf=4, ndf=4, n_blocks=1, style_dim=8, enc_dim=4, n_domains=2, pool_size=2, readout_n=4,
            det_checkpoint="det-run", seg_checkpoint="seg-run")


def _train(method: str, tmp: Path, steps: int = 6, **model) -> tuple[TrainableGAN, dict]:
    train, cfg = resolve_config(method, None, train=dict(size=32, steps=steps, batch_size=2, sample_every=3,
                                                         ckpt_every=1, log_every=1, n_sample=2),
                                model={**TINY, **model})
    gan = build_gan(train, cfg)
    config = run_config(train, cfg)
    faces, masks = _domain("f", 6, 32, 1), _domain("m", 6, 32, 2)
    summary = fit(gan, faces, masks, tmp, config=config, progress=False)
    return gan, summary


def _logged(run: Path) -> list[dict]:
    with open(run / "losses.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_networks_shapes_and_gradients():
    torch.manual_seed(0)
    g = M.StyleGenerator(style_dim=8, ngf=4, n_blocks=1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    s = torch.randn(2, 8, requires_grad=True)
    y = g(x, s)
    assert y.shape == x.shape and y.abs().max() <= 1
    y.mean().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0        # the style code reaches the output (AdaIN)
    assert torch.allclose(g(x), g(x, g.default_style.expand(2, -1)))
    e = M.StyleEncoder(style_dim=8, n_domains=3, dim=4)
    assert e.all_heads(x).shape == (2, 3, 8)
    out = e(x, torch.tensor([2, 0]))
    assert torch.allclose(out[0], e.all_heads(x)[0, 2]) and torch.allclose(out[1], e.all_heads(x)[1, 0])
    kinds = [type(b).__name__ + ":" + b.position for st in e.trunk for b in st]
    assert kinds == ["PreActResBlock:start", "PreActResBlock:middle", "PreActResBlock:end"] * 2
    # D_M has one more conv than D_F (paper §IV-A)
    d_m = M.PatchDiscriminator(ndf=4, extra_convs=1)
    d_f = M.PatchDiscriminator(ndf=4)
    n_conv = lambda d: sum(isinstance(m, nn.Conv2d) for m in d.modules())  # noqa: E731
    assert n_conv(d_m) == n_conv(d_f) + 1


def test_style_domains_cluster_and_assign():
    torch.manual_seed(0)
    dark = torch.full((6, 3, 16, 16), -0.8) + 0.05 * torch.randn(6, 3, 16, 16)
    light = torch.full((6, 3, 16, 16), 0.8) + 0.05 * torch.randn(6, 3, 16, 16)
    x = torch.cat([dark, light])
    feats = M.mask_style_features(x, None)
    assert feats.shape == (12, 7)
    dom = M.StyleDomains(2)
    sizes = dom.fit(feats, seed=0)
    assert sorted(sizes.tolist()) == [6, 6]
    lab = dom.assign(feats)
    assert lab[:6].tolist() == [0] * 6 and lab[6:].tolist() == [1] * 6   # ordered by brightness
    # state round-trips through a state dict (checkpoint)
    dom2 = M.StyleDomains(2)
    dom2.load_state_dict(dom.state_dict())
    assert torch.equal(dom2.assign(feats), lab)


def test_split_stages():
    assert M.split_stages(450_000, None) == (100_000, 200_000, 150_000)
    assert M.split_stages(6, None) == (1, 3, 2)
    assert M.split_stages(3, None) == (1, 1, 1)
    with pytest.raises(M.MfrbenchError, match="sum to the run's steps"):
        M.split_stages(10, (1, 2, 3))


# the ablation presets also run on real data in test_mfgan_train.py; here (no data kit needed) they are slow-only
@pytest.mark.parametrize("method", [p if p == "mfgan" else pytest.param(p, marks=pytest.mark.slow) for p in M.PRESETS])
def test_presets_log_the_terms_of_each_stage(method, stand_in_aux, tmp_path):
    """For every preset and stage, the logged loss names are exactly the active terms."""
    gan, _ = _train(method, tmp_path, steps=6)
    assert gan.stages == (1, 3, 2)
    rows = _logged(tmp_path)
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    for r in rows:
        stage = int(float(r["stage"]))
        logged = sorted(k for k, v in r.items() if v not in ("", None) and k not in ("step", "lr"))
        assert logged == sorted(M.active_terms(gan.cfg, stage)), (method, stage)
    expected = {"mfgan": {}, "mfgan-no-inv": {"use_inv": False}, "mfgan-no-cor": {"use_cor": False},
                "mfgan-no-sty": {"use_sty": False}}[method]
    for k, v in expected.items():
        assert getattr(gan.cfg, k) is v
    # stage read-outs and grids at every stage end
    for s in (1, 2, 3):
        assert (tmp_path / "stages" / f"stage{s}.json").is_file()
        assert (tmp_path / "stages" / f"stage{s}_grid.png").is_file()


def test_sty_term_trains_e_only_through_its_prediction(stand_in_aux, tmp_path):
    """In MFGAN's stage-3 step, L_sty has no gradient through the target branch E(m, y).

    ``fake_m`` is cut from the code here, so the target branch is the only other path from ``s`` to
    L_sty. Before (issue 11) that gradient was non-zero: E could lower L_sty by moving (collapsing)
    the reference codes. E still learns from L_sty through its prediction E(G_M(f, s), y)."""
    train, cfg = resolve_config("mfgan", None, train=dict(size=32, steps=3, batch_size=2),
                                model={**TINY, "stage_steps": (1, 1, 1)})
    gan = build_gan(train, cfg)
    faces, masks = _domain("f", 6, 32, 1), _domain("m", 6, 32, 2)
    gan.prepare(faces, masks, tmp_path)
    gan.step = 2                                                       # stage 3
    batch, rng = step_batch(faces, masks, gan.step, train, gan.device)
    codes = gan.style_codes(batch, rng)
    assert codes is not None and codes.target.requires_grad
    step = gan.cycle(batch, codes)
    step.fake_m = step.fake_m.detach()                                 # only the target path links s and L_sty
    sty = gan.extra_generator_losses(step, rng)["sty"]
    (grad_target,) = torch.autograd.grad(sty, codes.target, retain_graph=True, allow_unused=True)
    assert grad_target is None or torch.all(grad_target == 0)         # old code: sign(s - s_pred) * lambda_sty / n
    grads = torch.autograd.grad(sty, list(gan.E.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)    # E learns as the predictor


def test_inv_region_alpha_takes_l_inv_outside_the_generators_own_alpha(stand_in_aux, tmp_path):
    """inv_region=alpha: L_inv = mean(((G_M(f) - f) * [A <= 0.5])^2), and Seg is not asked (it would steer L_inv)."""
    train, cfg = resolve_config("mfgan", None, train=dict(size=32, steps=3, batch_size=2),
                                model={**TINY, "stage_steps": (1, 2, 0), "output": "composite", "inv_region": "alpha"})
    gan = build_gan(train, cfg)
    faces, masks = _domain("f", 6, 32, 1), _domain("m", 6, 32, 2)
    gan.prepare(faces, masks, tmp_path)
    gan.step = 1                                                       # stage 2: L_inv on
    batch, rng = step_batch(faces, masks, gan.step, train, gan.device)
    step = gan.cycle(batch, gan.style_codes(batch, rng))
    gan.seg = None                                                     # any call to Seg would fail
    step.alpha_m = torch.zeros_like(step.alpha_m)
    step.alpha_m[..., 16:, :] = 0.9                                    # "drew" the lower half
    inv = gan.extra_generator_losses(step, rng)["inv"]
    keep = (step.alpha_m <= 0.5).float()
    expected = ((step.fake_m - step.real_f) * keep).pow(2).mean() * cfg.lambda_inv
    assert float(inv.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    with pytest.raises(M.MfrbenchError, match="inv_region=alpha needs a compositing"):
        resolve_config("mfgan", None, model={**TINY, "inv_region": "alpha"})
    with pytest.raises(M.MfrbenchError, match="inv_region"):
        resolve_config("mfgan", None, model={**TINY, "output": "composite", "inv_region": "pixels"})


def test_resume_is_exact_across_a_stage_boundary(stand_in_aux, tmp_path):
    full, _ = _train("mfgan", tmp_path / "full", steps=6)
    # stages (1, 3, 2): interrupt after step 4 (the callback runs before that step's checkpoint, so the
    # last checkpoint is step 3, inside stage 2); the resumed run crosses into stage 3
    train, cfg = resolve_config("mfgan", None, train=dict(size=32, steps=6, batch_size=2, sample_every=3,
                                                          ckpt_every=1, log_every=1, n_sample=2),
                                model=TINY)
    faces, masks = _domain("f", 6, 32, 1), _domain("m", 6, 32, 2)
    run = tmp_path / "part"
    gan = build_gan(train, cfg)
    config = run_config(train, cfg)

    def stop_at_4(step, **_):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(gan, faces, masks, run, config=config, progress=False, callbacks=[stop_at_4])
    ck = load_checkpoint(run)
    assert ck["state"]["step"] == 3 and gan.stage_of(3) == 2 and gan.stage_of(4) == 3
    resumed = build_gan(train, cfg)
    resumed.load_state_dict(ck["state"])
    fit(resumed, faces, masks, run, config=config, progress=False)
    for name, net in full.networks().items():
        for (k, a), b in zip(net.state_dict().items(), resumed.networks()[name].state_dict().values()):
            assert torch.equal(a, b), (name, k)
    assert _logged(tmp_path / "full") == _logged(run)


def test_missing_det_is_a_clear_error(stand_in_aux):
    train, cfg = resolve_config("mfgan", None, train=dict(size=32, steps=3), model={**TINY, "det_checkpoint": None})
    with pytest.raises(M.MfrbenchError, match="pass --det RUN"):
        build_gan(train, cfg)
    # without lambda_cor no Det is needed
    train, cfg = resolve_config("mfgan-no-cor", None, train=dict(size=32, steps=3),
                                model={**TINY, "det_checkpoint": None})
    assert build_gan(train, cfg).det is None


def test_bad_config_values():
    with pytest.raises(M.MfrbenchError, match="cor_apply"):
        M.MFGANConfig(cor_apply="disc")
    with pytest.raises(M.MfrbenchError, match="three non-negative"):
        M.MFGANConfig(stage_steps=(1, 2))


def test_non_mask_ssim_psnr_matches_skimage_on_full_keep():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    keep = np.ones((32, 32), bool)
    ssim, psnr = M.non_mask_ssim_psnr(a, b, keep)
    assert psnr == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), rel=1e-9)
    # with every pixel kept it is scikit-image's Gaussian (Wang et al. 2004) mean SSIM
    assert ssim == pytest.approx(structural_similarity(a, b, channel_axis=-1, data_range=255, gaussian_weights=True,
                                                       sigma=1.5, use_sample_covariance=False), rel=1e-9)
    # only kept pixels count: a difference confined to dropped pixels leaves PSNR infinite
    c = a.copy()
    c[20:, :] = 0
    keep[20:, :] = False
    assert M.non_mask_ssim_psnr(a, c, keep)[1] == float("inf")


def test_template_boxes_sit_on_nose_and_mouth():
    for size in (64, 112, 128):
        boxes = M.template_boxes(size)
        (ny0, ny1, nx0, nx1), (my0, my1, mx0, mx1) = boxes["nose"], boxes["mouth"]
        assert 0 <= ny0 < ny1 <= my0 < my1 <= size and 0 <= nx0 < nx1 <= size and 0 <= mx0 < mx1 <= size
        assert abs((nx0 + nx1) / 2 - size / 2) < size * 0.05       # centred horizontally


def test_frozen_aux_resizes_and_has_no_gradients():
    seg = _TinySeg()
    aux = M.FrozenAux("Seg", seg, size=32)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    p = aux(x)
    assert p.shape == (2, 1, 64, 64) and not p.requires_grad and 0 <= p.min() and p.max() <= 1
    assert all(not q.requires_grad for q in seg.parameters())


def test_lambda_wear_reads_each_faces_regions_and_their_flip(stand_in_aux, monkeypatch, tmp_path):
    """lambda_wear: wearing_loss of G_M's alpha on the batch's own faces' regions, mirrored with a flipped face."""
    n, s = 6, 32
    cover = torch.zeros(n, s, s, dtype=torch.bool)
    cover[:, 18:28, 4:14] = True                                       # left of centre: a flip moves it
    eyes = torch.zeros(n, s, s, dtype=torch.bool)
    eyes[:, 6:10, :] = True
    cover[3] = False                                                   # one face with nothing to cover
    monkeypatch.setattr(M, "face_wearing_maps", lambda faces, size: (cover[:len(faces)], eyes[:len(faces)]))
    train, cfg = resolve_config("mfgan", None, train=dict(size=s, steps=3, batch_size=4),
                                model={**TINY, "stage_steps": (3, 0, 0), "output": "composite", "lambda_wear": 2.0})
    assert "wear" in M.active_terms(cfg, 1)
    gan = build_gan(train, cfg)
    faces, masks = _domain("f", n, s, 1), _domain("m", n, s, 2)
    gan.prepare(faces, masks, tmp_path)
    batch, rng = step_batch(faces, masks, 0, train, gan.device)
    batch.face_idx, batch.face_flips = np.array([0, 1, 3, 2]), np.array([False, True, False, False])
    step = gan.cycle(batch, None)
    step.alpha_m = torch.zeros_like(step.alpha_m)
    step.alpha_m[..., 18:28, 4:14] = 1.0                               # drawn where the unflipped face needs it
    wear = float(gan.extra_generator_losses(step, rng)["wear"].detach())
    # face 0: 0; flipped face 1: its cover is mirrored, none of it drawn (1); face 3: no cover; face 2: 0
    assert wear == pytest.approx(2.0 * (0 + 1 + 0 + 0) / 4)
    # a plain generator has no alpha: the option does nothing there (as cycle_drawn_weight), so presets can share it
    _, plain = resolve_config("mfgan", None, model={**TINY, "lambda_wear": 1.0})
    assert "wear" not in M.active_terms(plain, 1)


def test_an_added_option_at_its_default_keeps_the_config_hash():
    """lambda_wear came after the study's stages were keyed: at 0 the hash is the one without the key."""
    from mfrbench.config import config_hash
    from mfrbench.generators.gan.config import GAN_RUN_CONTROL, gan_config_hash

    train, cfg = resolve_config("mfgan", "cpu")
    record = run_config(train, cfg, profile="cpu")
    assert gan_config_hash(train, cfg, profile="cpu") == config_hash(record, exclude=(*GAN_RUN_CONTROL,
                                                                                      "model.lambda_wear"))
    _, on = resolve_config("mfgan", "cpu", model={"lambda_wear": 1.0})
    assert gan_config_hash(train, on, profile="cpu") != gan_config_hash(train, cfg, profile="cpu")
