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


def test_iamgan_alpha_region_penalises_only_a_translucent_mask(tmp_path):
    """pix_region=alpha: the non-mask region is 1 - A, so an opaque or absent mask costs nothing and a
    half-transparent one costs A (1 - A) |C - f|; it needs a compositing generator."""
    from mfrbench.generators.gan.config import resolve_config
    from mfrbench.generators.gan.contract import build_gan
    from mfrbench.generators.seg import AuxConfig, save_aux_model

    save_aux_model(tmp_path / "seg", UNet(base=4), AuxConfig(module="seg", base=4, size=32))
    model = {"ngf": 4, "ndf": 4, "n_blocks": 1, "seg_checkpoint": str(tmp_path / "seg"), "pix_region": "alpha",
             "output": "composite"}
    t, m = resolve_config("iamgan", "smoke", train={"size": 32}, model=model)
    gan = build_gan(t, m)
    real, content = torch.rand(2, 3, 32, 32) * 2 - 1, torch.zeros(2, 3, 32, 32)
    alpha = torch.zeros(2, 1, 32, 32)
    alpha[..., 16:, :] = 1.0                                         # an opaque mask on the lower half
    fake = alpha * content + (1 - alpha) * real
    assert gan.identity_terms(real, fake, alpha)["pix"].item() == pytest.approx(0.0, abs=1e-6)
    half = torch.full_like(alpha, 0.5)
    fake = half * content + (1 - half) * real
    expected = m.lambda_pix * (0.5 * 0.5 * real.abs().mean(1)).sum().item() / (0.5 * 2 * 32 * 32)
    assert gan.identity_terms(real, fake, half)["pix"].item() == pytest.approx(expected, rel=1e-4)
    t, m = resolve_config("iamgan", "smoke", train={"size": 32}, model={**model, "output": "plain"})
    with pytest.raises(MfrbenchError, match="needs a compositing generator"):
        build_gan(t, m)


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


# ------------------------------------------------------------------- real photos (issue 14, point 5)


def test_wearing_nll_scores_the_set_for_a_real_masked_photo():
    """PRESENT (a real masked photo) scores -log(p_correct + p_incorrect); a known class is plain cross-entropy."""
    from mfrbench.generators.parts import wearing_nll
    from mfrbench.generators.seg import PRESENT

    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    nll = wearing_nll(logits, torch.tensor([PRESENT, 2]))
    p = logits.softmax(1)
    assert nll[0].item() == pytest.approx(-torch.log(p[0, 0] + p[0, 1]).item(), rel=1e-5)
    assert nll[1].item() == pytest.approx(torch.nn.functional.cross_entropy(logits[1:], torch.tensor([2])).item())


class _Outputs(torch.nn.Module):
    """A "network" whose outputs are its parameters: the gradient a loss sends to each output."""

    def __init__(self, *shapes):
        super().__init__()
        self.outs = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(s)) for s in shapes])

    def forward(self, x):
        return self.outs[0] if len(self.outs) == 1 else tuple(self.outs)


def _real_batch(size: int = 16):
    """Row 0 an mtf row (every label known), row 1 a real masked photo (no map, nose/mouth/chin unknown)."""
    from mfrbench.generators.seg import PRESENT, REAL_MASKED_UNKNOWN, AuxBatch

    part_known = torch.ones(2, len(PARTS), dtype=torch.bool)
    part_known[1, [PARTS.index(p) for p in REAL_MASKED_UNKNOWN]] = False
    maps = torch.zeros(2, size, size, dtype=torch.uint8)
    maps[0, size // 2:] = 1
    return AuxBatch(maps, torch.ones(2, len(PARTS)), torch.tensor([0, PRESENT]), torch.tensor([True, False]),
                    part_known)


def test_det_loss_sends_nothing_to_the_parts_a_real_photo_does_not_tell():
    from mfrbench.generators.parts import _det_loss
    from mfrbench.generators.seg import REAL_MASKED_UNKNOWN, AuxConfig

    net = _Outputs((2, len(PARTS)), (2, len(WEARING)))
    sum(_det_loss(net, None, _real_batch(), AuxConfig(module="det")).values()).backward()
    g = net.outs[0].grad
    unknown = [PARTS.index(p) for p in REAL_MASKED_UNKNOWN]
    assert (g[1, unknown] == 0).all() and (g[1, [PARTS.index("face"), PARTS.index("eyes")]] != 0).all()
    assert (g[0] != 0).all() and (net.outs[1].grad[1] != 0).any()


@pytest.mark.parametrize("topk", [0.0, 0.05])
def test_seg_loss_has_no_pixel_term_on_a_real_masked_photo(topk):
    """Only the top-k pixels of a real masked photo get a gradient (none with topk 0); the mtf row all of them."""
    from mfrbench.generators.seg import AuxConfig, _seg_loss

    net = _Outputs((2, 1, 16, 16))
    terms = _seg_loss(net, None, _real_batch(), AuxConfig(seg_real_topk=topk))
    assert ("present" in terms) == (topk > 0)
    sum(terms.values()).backward()
    g = net.outs[0].grad
    assert (g[0] != 0).all()
    assert int((g[1] != 0).sum()) == round(topk * 16 * 16)


def _toy_domain(name, n=12, size=32, prefix="p"):
    """What load_domain gives for a folder of real photos: uint8 crops and their keys."""
    from mfrbench.generators.gan.data import DomainData

    g = torch.Generator().manual_seed(len(prefix))
    return DomainData(name, torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
                      [f"{prefix}/{i:04d}.jpg" for i in range(n)], "toy")


def _trained_keys(monkeypatch):
    """Every key the training loop is handed (the training list), recorded at each step."""
    import mfrbench.generators.seg as seg_mod

    seen, step = set(), seg_mod._aux_step

    def recording(spec, net, opt, train, cfg, i, dev):
        seen.update(train.keys)
        return step(spec, net, opt, train, cfg, i, dev)

    monkeypatch.setattr(seg_mod, "_aux_step", recording)
    return seen


@pytest.mark.parametrize("module", ["seg", "det"])
def test_real_photos_train_are_held_out_by_key_and_read_out_apart(toy_aux, monkeypatch, tmp_path, module):
    """Real inputs: trained on except the hash-held-out keys, which the loop never sees; read by judge_on_real."""
    import mfrbench.generators.gan.data as data_mod
    from mfrbench.generators.gan.data import held_out_keys

    monkeypatch.setattr(data_mod, "load_domain", lambda name, spec, cache, **kw: _toy_domain(
        name, n=16 if name == "real_masked" else 8, size=kw["size"], prefix=name))
    seen = _trained_keys(monkeypatch)
    photos = tmp_path / "photos"
    photos.mkdir()
    m = toy_aux(module, ["m"], tmp_path / "run", real_masked=[str(photos)], real_faces=[str(photos)],
                sets=["size=32", "base=4", "batch_size=4"], overrides={"steps": 2}, progress=False, device="cpu")
    split = json.loads((tmp_path / "run" / "real_split.json").read_text())
    keys = {"real_masked": _toy_domain("x", 16, prefix="real_masked").keys,
            "real_faces": _toy_domain("x", 8, prefix="real_faces").keys}
    for kind, want in keys.items():
        held = [k for k, h in zip(want, held_out_keys(want, 0.25)) if h]
        got = split["inputs"][kind][str(photos)]
        assert got["heldout"] == held and got["train"] == [k for k in want if k not in held]
        assert not {f"{photos}:{k}" for k in held} & seen                  # never trained on
        assert {f"{photos}:{k}" for k in got["train"]} <= seen
    real = m["real"]
    assert real["n_masked"] == m["heldout_real_masked"] == int(held_out_keys(keys["real_masked"], 0.25).sum())
    assert m["train_real_masked"] + m["heldout_real_masked"] == 16
    if module == "seg":
        assert {"seg_correct_masked", "seg_area_masked", "seg_any_faces"} <= set(real)
        assert "det_present_masked" not in real
    else:
        assert {"det_present_masked", "det_wearing_masked", "det_wearing_faces"} <= set(real)
        assert "seg_correct_masked" not in real
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["real"] == json.loads(json.dumps(real))


def test_a_missing_real_photo_folder_is_one_line_before_any_work(tmp_path):
    from click.testing import CliRunner

    from mfrbench.cli import cli

    res = CliRunner().invoke(cli, ["train-aux", "--module", "det", "--data", str(tmp_path / "mtf"), "--real-masked",
                                   str(tmp_path / "NOPE"), "--out", str(tmp_path / "run"), "--profile", "smoke"])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: --real-masked "), res.output
    assert "NOPE: no such folder or file" in lines[0] and "masked-photos" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.data
def test_real_masked_photo_folder_of_the_kit_aligns_trains_and_reads_out(toy_aux, monkeypatch, tmp_path,
                                                                         masked_photos_root, models_root):
    """The kit's real masked photos as a folder (YuNet-aligned into RUN/data once): held out by key, read out."""
    from mfrbench.generators.gan.data import held_out_keys

    seen = _trained_keys(monkeypatch)
    run = tmp_path / "det"
    m = toy_aux("det", ["m"], run, real_masked=[str(masked_photos_root)], profile="smoke", progress=False,
                sets=["size=32", "base=4", "max_images=16", "real_min_face_px=0"], device="cpu")
    (split,) = json.loads((run / "real_split.json").read_text())["inputs"]["real_masked"].values()
    assert split["heldout"] and split["train"] and (run / "data" / "real_masked_0" / "manifest.csv").is_file()
    assert list(held_out_keys(split["heldout"], 0.25)) == [True] * len(split["heldout"])
    assert not {f"{masked_photos_root.resolve()}:{k}" for k in split["heldout"]} & seen
    assert m["real"]["n_masked"] == len(split["heldout"]) == m["heldout_real_masked"]
    assert 0.0 <= m["real"]["det_present_masked"] <= 1.0


def _square_batch(b: int = 8, s: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey faces with a bright square 'mask' and its exact map."""
    x = torch.full((b, 3, s, s), -0.6)
    maps = torch.zeros((b, s, s), dtype=torch.uint8)
    x[:, :, 36:56, 16:48] = 0.8
    maps[:, 36:56, 16:48] = 1
    return x, maps


def test_basic_augment_is_flip_and_brightness_only():
    from mfrbench.generators.seg import augment

    x, maps = _square_batch()
    y, m = augment(x, maps, np.random.default_rng(3))
    y2, m2 = augment(x, maps, np.random.default_rng(3), "basic")
    assert torch.equal(y, y2) and torch.equal(m, m2)
    assert all(torch.equal(m[i], maps[i]) or torch.equal(m[i], maps[i].flip(-1)) for i in range(len(m)))
    # an affine of each image's intensities: the map's pixels stay one value, the rest another
    for i in range(len(y)):
        assert y[i][:, m[i].bool()].std() < 1e-5 and y[i][:, ~m[i].bool()].std() < 1e-5


def test_real_photo_augment_moves_the_map_with_the_image_and_repeats():
    from mfrbench.generators.seg import augment

    x, maps = _square_batch()
    y, m = augment(x, maps, np.random.default_rng(5), "real")
    y2, m2 = augment(x, maps, np.random.default_rng(5), "real")
    assert torch.equal(y, y2) and torch.equal(m, m2)            # a pure function of the generator's state
    assert y.shape == x.shape and m.shape == maps.shape and m.dtype == maps.dtype
    assert set(m.unique().tolist()) <= {0, 1} and y.min() >= -1 and y.max() <= 1
    assert not torch.equal(m, maps) and not torch.equal(m, maps.flip(-1))   # geometry changed
    grey = y.mean(1)
    for i in range(len(y)):                                     # the bright square is still where the map says
        inside, outside = grey[i][m[i].bool()], grey[i][~m[i].bool()]
        assert inside.numel() > 0.5 * maps[i].sum() and inside.mean() > outside.mean() + 0.5


def test_aux_config_refuses_an_unknown_augment():
    from mfrbench.generators.seg import AuxConfig

    with pytest.raises(MfrbenchError, match="augment"):
        AuxConfig(augment="strong")
