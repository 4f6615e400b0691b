"""Compositing generators (issue 14): A * C + (1 - A) * x, alpha regularisers, full-resolution output, exact maps,
the cpu/paper profiles, the held-out mask split, the RecordIO face domain, and the read-out's pieces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mfrbench.errors import MfrbenchError
from mfrbench.generators._blocks import ResnetGenerator
from mfrbench.generators.gan.composite import (
    CompositeGenerator,
    alpha_regularizer,
    composite_full_res,
    total_variation,
)
from mfrbench.generators.gan.config import resolve_config
from mfrbench.generators.gan.contract import build_gan
from mfrbench.generators.gan.data import DomainData, GANBatch
from mfrbench.generators.gan.generator import GANMaskGenerator, translate_crops
from mfrbench.generators.gan.readout import (
    face_boxes,
    mask_colour,
    nonmask_scores,
    pick_references,
    seg_coverage,
    style_scores,
)


class _Fixed(torch.nn.Module):
    """A 4-channel 'generator' with a given content and alpha (tanh units)."""

    def __init__(self, content: float, alpha_map: torch.Tensor) -> None:
        super().__init__()
        self.content, self.alpha = content, alpha_map

    def forward(self, x):
        b, _, h, w = x.shape
        a = torch.nn.functional.interpolate(self.alpha, size=(h, w), mode="nearest").expand(b, 1, h, w)
        return torch.cat([torch.full((b, 3, h, w), self.content), a * 2 - 1], 1)


def test_composite_is_alpha_blend_and_alpha_zero_keeps_the_input():
    alpha = torch.zeros(1, 1, 8, 8)
    alpha[..., 4:, 2:6] = 1.0
    g = CompositeGenerator(_Fixed(0.5, alpha))
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    out, content, a = g.parts(x)
    assert out.shape == x.shape and a.shape == (2, 1, 8, 8) and content.shape == x.shape
    keep = a[:, 0] == 0
    assert torch.equal(out.permute(0, 2, 3, 1)[keep], x.permute(0, 2, 3, 1)[keep])
    torch.testing.assert_close(out[:, :, 5, 3], torch.full((2, 3), 0.5))
    torch.testing.assert_close(g(x), out)


def test_alpha_regularizer_by_hand():
    a = torch.zeros(1, 1, 2, 2)
    a[..., 0, 0] = 1.0
    assert float(total_variation(a)) == pytest.approx(1.0)           # 1/2 horizontal + 1/2 vertical
    reg = alpha_regularizer(a, l1=2.0, tv=3.0)
    assert float(reg["alpha_l1"]) == pytest.approx(0.5) and float(reg["alpha_tv"]) == pytest.approx(3.0)
    assert "alpha_area" not in reg
    two = torch.zeros(2, 1, 2, 2)
    two[1] = 1.0                                                       # drawn areas 0 and 1
    reg = alpha_regularizer(two, l1=0.0, tv=0.0, area=(0.25, 0.5), area_weight=2.0)
    assert float(reg["alpha_area"]) == pytest.approx(2.0 * (0.25 + 0.5) / 2)
    inside = torch.full((1, 1, 2, 2), 0.3)
    assert float(alpha_regularizer(inside, l1=0, tv=0, area=(0.25, 0.5), area_weight=2.0)["alpha_area"]) == 0


def test_full_resolution_composite_keeps_every_input_pixel_where_alpha_is_zero():
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    alpha = torch.zeros(2, 1, 64, 64)
    alpha[..., 36:58, 14:50] = 1.0
    content = torch.zeros(2, 3, 64, 64)
    out, a = composite_full_res(x, content, alpha)
    assert out.shape == x.shape and a.shape == (2, 1, 112, 112)
    zero = a[:, 0] == 0
    assert zero.float().mean() > 0.6
    assert torch.equal(out.permute(0, 2, 3, 1)[zero], x.permute(0, 2, 3, 1)[zero])       # byte-exact, not resampled
    assert (out.permute(0, 2, 3, 1)[a[:, 0] == 1].abs() < 1e-6).all()


def test_translate_crops_full_vs_train_resolution():
    alpha = torch.zeros(1, 1, 64, 64)
    alpha[..., 36:58, 14:50] = 1.0
    net = CompositeGenerator(_Fixed(0.0, alpha))
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    full, m_full = translate_crops(net, x, 64, resolution="full")
    train, m_train = translate_crops(net, x, 64, resolution="train")
    assert m_full.shape == (1, 112, 112) and m_full.dtype == torch.bool and m_full.float().mean() > 0.1
    assert not m_full[0, :60].any()
    err_full = (full[0] - x[0])[:, :60].abs().max()                   # rows far above the mask box
    err_train = (train[0] - x[0])[:, :60].abs().mean()
    assert err_full == 0 and err_train > 0.05  # the 64-px round trip blurs the face; full resolution does not
    plain, none = translate_crops(ResnetGenerator(ngf=4, n_blocks=1), x, 64)
    assert plain.shape == x.shape and none is None


@pytest.mark.parametrize("method", ["cyclegan", "mfgan"])
def test_cpu_profile_composites_and_paper_profile_stays_plain(method):
    assert resolve_config(method, "cpu")[1].output == "composite"
    assert resolve_config(method, "paper")[1].output == "plain"
    assert resolve_config(method, None)[1].output == "plain"
    with pytest.raises(MfrbenchError, match="Expected output in"):
        resolve_config(method, "smoke", model={"output": "blend"})


def _batch(n=2, s=64):
    return GANBatch(torch.rand(n, 3, s, s) * 2 - 1, torch.rand(n, 3, s, s) * 2 - 1)


def test_cyclegan_composite_step_logs_alpha_terms_and_starts_near_the_input():
    t, m = resolve_config("cyclegan", "smoke", model={"output": "composite"})
    g = build_gan(t, m)
    assert isinstance(g.G_M, CompositeGenerator) and isinstance(g.G_F, CompositeGenerator)
    b = _batch()
    with torch.no_grad():
        _, _, a = g.G_M.parts(b.faces)
    assert 0.15 < float(a.mean()) < 0.35                               # alpha bias init: A ~ 0.25
    losses = g.train_step(b, np.random.default_rng(0))
    assert {"alpha_M_l1", "alpha_M_tv", "alpha_M_area", "alpha_F_l1", "alpha_F_tv", "alpha_F_area"} <= set(losses)
    assert all(np.isfinite(v) for v in losses.values())
    plain = build_gan(*resolve_config("cyclegan", "smoke"))
    assert not isinstance(plain.G_M, CompositeGenerator)
    assert not {"alpha_M_l1"} & set(plain.train_step(_batch(), np.random.default_rng(0)))


def test_cycle_drawn_weight_leaves_what_the_mask_covers_out_of_the_cycle():
    """With cycle_drawn_weight 0, the face cycle is blind where G_M drew (alpha 1) and plain L1 where it kept x
    (the term lives in CycleGAN's step, which IAMGAN and MFGAN inherit)."""
    t, m = resolve_config("cyclegan", "smoke", model={"output": "composite", "cycle_drawn_weight": 0.0})
    g = build_gan(t, m)
    b = _batch()
    with torch.no_grad():
        step = g.cycle(b, g.style_codes(b, np.random.default_rng(0)))
    half = torch.zeros_like(step.alpha_m)
    half[..., :32] = 1.0                                                     # drew the left half, kept the right
    step.alpha_m, step.alpha_f = half, torch.zeros_like(half)
    terms = {k: v.detach() for k, v in g.generator_terms(step).items()}
    err = (step.rec_f - step.real_f).abs().detach()
    assert float(terms["cyc_F"]) == pytest.approx(float(err[..., 32:].mean()) / 2 * g.cfg.lambda_cycle, rel=1e-5)
    plain_m = float((step.rec_m - step.real_m).abs().mean().detach())
    assert float(terms["cyc_M"]) == pytest.approx(plain_m * g.cfg.lambda_cycle, rel=1e-5)  # G_F drew nothing
    # MFGAN's cpu profile leaves the mask out of the cycle (family profile_model); the others and paper keep 1
    assert resolve_config("mfgan", "cpu")[1].cycle_drawn_weight == 0.0
    assert resolve_config("mfgan-no-cor", "cpu")[1].cycle_drawn_weight == 0.0
    assert resolve_config("mfgan", "cpu", model={"cycle_drawn_weight": 1.0})[1].cycle_drawn_weight == 1.0
    assert resolve_config("mfgan", "paper")[1].cycle_drawn_weight == 1.0
    assert resolve_config("cyclegan", "cpu")[1].cycle_drawn_weight == 1.0
    assert resolve_config("iamgan", "cpu")[1].cycle_drawn_weight == 1.0
    for method in ("cyclegan", "iamgan", "mfgan"):
        with pytest.raises(MfrbenchError, match="cycle_drawn_weight"):
            resolve_config(method, "smoke", model={"cycle_drawn_weight": 1.5})


def test_composite_generator_maps_are_its_alpha(tmp_path):
    t, m = resolve_config("cyclegan", "smoke", model={"output": "composite"})
    model = build_gan(t, m)
    gen = GANMaskGenerator(model, run_dir=str(tmp_path))
    crops = (np.random.default_rng(0).random((3, 112, 112, 3)) * 255).astype(np.uint8)
    out = gen.generate(crops, None, rng=np.random.default_rng(0))
    assert out.images.shape == crops.shape and out.mask_maps.shape == crops.shape[:3]
    assert gen._maps() == "exact" and out.info[0]["mask_map_source"] == "alpha"
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
    _, exact = translate_crops(model.translator(), x, 64)
    np.testing.assert_array_equal(out.mask_maps, exact.numpy().astype(np.uint8))
    with pytest.raises(MfrbenchError, match="resolution"):
        GANMaskGenerator(model, run_dir=str(tmp_path), resolution="half")


def test_mfgan_active_terms_list_alpha_terms_when_compositing():
    from mfrbench.generators.mfgan import MFGANConfig, active_terms

    assert "alpha_M_l1" in active_terms(MFGANConfig(output="composite"), 1)
    assert "alpha_M_l1" not in active_terms(MFGANConfig(), 1)


def test_holdout_split_is_stable_and_disjoint():
    keys = [f"k{i}" for i in range(200)]
    d = DomainData("masks", torch.zeros(200, 3, 4, 4, dtype=torch.uint8), keys, "x")
    kept, held = d.split(0.25)
    assert set(kept.keys).isdisjoint(held.keys) and len(kept) + len(held) == 200 and 25 < len(held) < 75
    kept2, held2 = d.subset(np.arange(199, -1, -1)).split(0.25)
    assert set(held2.keys) == set(held.keys)                           # order does not matter
    assert d.split(0.0) == (d, None)
    with pytest.raises(MfrbenchError, match="already be a training split made by this rule"):
        kept.split(0.25)                                               # a split of a split holds out nothing


def test_recordio_faces_domain(kit, tmp_path):
    from mfrbench.generators.gan.data import load_domain

    rec = kit / "celeba-rec"
    if not (rec / "train.rec").is_file():
        pytest.skip("celeba-rec/ not in the data kit")
    d = load_domain("faces", rec, tmp_path, size=64, limit=6, progress=False)
    assert d.images.shape == (6, 3, 64, 64) and d.keys[0] == "rec/0"
    assert d.crops([0, 5]).shape == (2, 112, 112, 3)


# ------------------------------------------------------------------ read-out pieces
def test_face_boxes_and_seg_coverage():
    b = face_boxes(112)
    y0, y1, x0, x1 = b["nose_mouth"]
    e0, e1, _, _ = b["eye_band"]
    assert e1 < y0 and 60 < y0 < 66 and 95 < y1 < 100 and x0 == 41 and x1 == 71
    maps = np.zeros((3, 112, 112), bool)
    maps[0, y0:y1, x0:x1] = True                          # exactly the box: correct
    maps[1, 30:, :] = True                                 # also covers the eyes: not correct
    cov = seg_coverage(maps)
    assert cov["correct"].tolist() == [True, False, False]
    assert cov["nose_mouth"][0] == 1.0 and cov["eye_band"][1] > 0.5


def test_reference_choice_colour_and_style_scores():
    colours = np.array([[0.1, 0.1, 0.1], [0.12, 0.1, 0.1], [0.9, 0.9, 0.9], [0.2, 0.3, 0.9], [0.5, 0.5, 0.5]])
    assert sorted(pick_references(colours, 3).tolist()) == [0, 2, 3]
    imgs = np.zeros((2, 4, 4, 3), np.uint8)
    imgs[..., 0] = 255
    maps = np.zeros((2, 4, 4), bool)
    maps[0, :2] = True
    col = mask_colour(imgs, maps)
    np.testing.assert_allclose(col[0], [1.0, 0.0, 0.0])
    assert np.isnan(col[1]).all()
    refs = np.array([[0.1, 0.2, 0.3], [0.5, 0.4, 0.3], [0.9, 0.1, 0.6]])
    outs = [np.full((2, 4, 4, 3), int(255 * c[0]), np.uint8) for c in refs]
    for o, c in zip(outs, refs):
        o[...] = (np.asarray(c) * 255).round().astype(np.uint8)
    st = style_scores(refs, outs, [np.ones((2, 4, 4), bool)] * 3)
    assert st["colour_corr_mean"] == pytest.approx(1.0, abs=1e-3) and st["style_diversity"] > 0
    assert st["colour_gain"]["r"] == pytest.approx(1.0, abs=0.01)


def test_nonmask_scores_use_the_evaluator_metric():
    rng = np.random.default_rng(0)
    src = (rng.random((2, 32, 32, 3)) * 255).astype(np.uint8)
    out = src.copy()
    out[:, 20:] = 0                                          # changed only inside the mask
    keep = np.ones((2, 32, 32), bool)
    keep[:, 20:] = False
    s = nonmask_scores(src, out, keep)
    assert s["ssim"] == pytest.approx(1.0) and s["n_identical"] == 2


class _BoxSeg:
    """A stand-in Seg: calls the nose-mouth box mask (so Seg-correct is 1 on every image)."""

    def predict_uint8(self, images):
        (y0, y1, x0, x1) = face_boxes(images.shape[1])["nose_mouth"]
        m = np.zeros(images.shape[:3], np.uint8)
        m[:, y0:y1, x0:x1] = 1
        return m


def test_run_readout_writes_quality_json_and_grid(tmp_path):
    import json

    from mfrbench.generators.gan.readout import run_readout

    t, m = resolve_config("cyclegan", "smoke", model={"output": "composite"})
    model = build_gan(t, m)
    rng = np.random.default_rng(0)
    faces = DomainData("faces", torch.from_numpy(rng.integers(0, 256, (6, 3, 64, 64), dtype=np.uint8)),
                       [f"f{i}" for i in range(6)], "x",
                       lambda ix: rng.integers(0, 256, (len(ix), 112, 112, 3), dtype=np.uint8))
    masks = DomainData("masks", torch.zeros(5, 3, 64, 64, dtype=torch.uint8), [f"m{i}" for i in range(5)], "x",
                       lambda ix: np.stack([np.full((112, 112, 3), 40 * i, np.uint8) for i in ix]))
    res = run_readout(model, faces, masks, None, tmp_path, seg=_BoxSeg(), n_faces=4, n_refs=3)
    saved = json.loads((tmp_path / "quality.json").read_text())
    assert saved["seg_correct"] == 1.0 == res["seg_correct"] and saved["nonmask_source"] == "alpha"
    assert saved["seg_correct_ci"] == [1.0, 1.0]  # every output correct: the face bootstrap cannot move it
    assert {"nonmask_full", "nonmask_train", "mask_area", "ref_keys"} <= set(saved)
    assert len(saved["ref_keys"]) == 3 and "style" not in saved and "realism" not in saved
    assert (tmp_path / "quality_grid.png").is_file()


def test_judge_on_real_reads_real_masked_and_unmasked_photos():
    from mfrbench.generators.gan.readout import judge_on_real

    imgs = np.zeros((3, 112, 112, 3), np.uint8)
    res = judge_on_real(_BoxSeg(), None, imgs, imgs[:2])
    assert res["n_masked"] == 3 and res["n_faces"] == 2
    assert res["seg_correct_masked"] == 1.0 and 0 < res["seg_area_faces"] < 0.1
    assert "det_wearing_masked" not in res


def test_readout_without_kid_still_reads_the_judges_on_held_out_photos(tmp_path):
    """``train.readout_kid=0`` (the smoke profile) leaves realism out, never the judges' view of real photos."""
    from mfrbench.generators.gan.readout import run_readout

    t, m = resolve_config("cyclegan", "smoke", model={"output": "composite"})
    model = build_gan(t, m)
    rng = np.random.default_rng(0)
    crops = lambda ix: rng.integers(0, 256, (len(ix), 112, 112, 3), dtype=np.uint8)  # noqa: E731
    faces = DomainData("faces", torch.zeros(6, 3, 64, 64, dtype=torch.uint8), [f"f{i}" for i in range(6)], "x", crops)
    masks = DomainData("masks", torch.zeros(5, 3, 64, 64, dtype=torch.uint8), [f"m{i}" for i in range(5)], "x", crops)
    held = DomainData("held", torch.zeros(3, 3, 64, 64, dtype=torch.uint8), ["h0", "h1", "h2"], "x", crops)
    res = run_readout(model, faces, masks, held, tmp_path, seg=_BoxSeg(), n_faces=4, n_refs=3, n_kid=0)
    assert "realism" not in res
    assert res["judge_on_real"]["n_masked"] == 3 and res["judge_on_real"]["seg_correct_masked"] == 1.0


def test_a_preset_switch_wins_over_the_profile_and_loses_to_set():
    """``mfgan-plain`` is the compositing ablation: the ``cpu`` profile's ``output=composite`` must not undo it."""
    from mfrbench.generators.gan.config import resolve_configs

    def output(method, sets=()):
        return resolve_configs(method, "cpu", model_sets=sets)[1].config.output

    assert output("mfgan") == "composite" and output("mfgan-plain") == "plain"
    assert output("mfgan-plain", ["output=composite"]) == "composite"
    assert resolve_configs("mfgan-no-inv", "cpu")[1].config.use_inv is False
