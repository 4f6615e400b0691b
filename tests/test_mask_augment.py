"""MaskAugment (on-the-fly mtf masking of aligned crops) and crop-fit wearing modes in mtf (issue 16)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from mfrbench.errors import DataNotFoundError, MfrbenchError
from mfrbench.generators.augment import CROP_LMK68, MaskAugment, parse_mask_aug, parse_spec
from mfrbench.generators.mask_templates import KIT_TYPES, WEARING_MODES, FaceFrame, load_kit
from mfrbench.generators.mtf import MTFConfig, MTFGenerator, draw_wearing


def _crops(n: int = 12, size: int = 112) -> np.ndarray:
    """Textured face-coloured crops (no data kit needed): (n, size, size, 3) uint8."""
    rng = np.random.default_rng(3)
    base = np.array([190, 150, 125], np.float32)
    noise = rng.normal(0, 18, (n, size, size, 3))
    return np.clip(base + noise * rng.uniform(0.3, 1.0, (n, 1, 1, 1)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def kit_ok(kit):
    try:
        load_kit()
    except DataNotFoundError:
        pytest.skip("masktheface-templates/ not in the data kit")
    return kit


def test_same_seed_epoch_index_same_image():
    aug = MaskAugment(p=0.7, mask_type="plain", wearing="random")
    crops = _crops()
    a = [aug(c, 5, 2, i) for i, c in enumerate(crops)]
    b = [MaskAugment(p=0.7, mask_type="plain", wearing="random")(c, 5, 2, i) for i, c in enumerate(crops)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    other_epoch = [aug(c, 5, 3, i) for i, c in enumerate(crops)]
    assert any(not np.array_equal(x, y) for x, y in zip(a, other_epoch))
    other_seed = [aug(c, 6, 2, i) for i, c in enumerate(crops)]
    assert any(not np.array_equal(x, y) for x, y in zip(a, other_seed))


def test_p0_is_identity_and_p1_always_masks():
    crops = _crops()
    none = MaskAugment(p=0.0, mask_type="plain")
    assert all(none(c, 0, 0, i) is c for i, c in enumerate(crops))
    full = MaskAugment(p=1.0, mask_type="plain", wearing="random")
    for i, c in enumerate(crops):
        out, m, info = full.mask(c, full.rng(0, 0, i))
        assert info["masked"] and m.sum() > 150 and (out != c).any()
    half = MaskAugment(p=0.5, mask_type="plain")
    rate = np.mean([half.mask(crops[0], half.rng(0, 0, i))[2]["masked"] for i in range(400)])
    assert 0.4 < rate < 0.6


@pytest.mark.parametrize("wearing", ["correct", "nose-out", "mouth-nose-out"])
def test_masked_pixels_lie_in_the_nose_mouth_region(wearing):
    """Changed pixels stay below the eyes and between the jaw lines; correct wearing covers the nose
    tip and the mouth, nose-out leaves the nose tip visible; the map is the drawn mask."""
    aug = MaskAugment(p=1.0, mask_type="plain", wearing=wearing)
    lm = CROP_LMK68
    eye_y = lm[36:48, 1].max()
    for i, c in enumerate(_crops(6)):
        out, m, info = aug.mask(c, aug.rng(1, 0, i), info=True)
        changed = np.any(out != c, axis=2)
        ys, xs = np.nonzero(changed)
        assert ys.min() > eye_y and xs.min() >= lm[0:17, 0].min() - 6 and xs.max() <= lm[0:17, 0].max() + 6
        assert (changed & m.astype(bool)).sum() / m.sum() > 0.99
        tip = bool(m[int(round(lm[30, 1])), int(round(lm[30, 0]))])
        mouth = m[np.round(lm[48:60, 1]).astype(int), np.round(lm[48:60, 0]).astype(int)].mean()
        if wearing == "correct":
            assert tip and mouth == 1.0 and info["covers_nose"]
        elif wearing == "nose-out":
            assert not tip and mouth > 0.8
        else:
            assert not tip and mouth < 0.2
        assert not info["covers_eyes"]


def test_every_offered_wearing_mode_fits_a_crop():
    """Every mode MaskAugment draws lies inside the crop (mtf's mask_outside rule); chin, which hangs
    below an ArcFace crop (chin at y = 120), is refused by name."""
    aug = MaskAugment(p=1.0, mask_type="plain", wearing="random")
    modes = aug.fitting_modes()
    assert modes == ["correct", "nose-out", "mouth-nose-out"]
    for mode in modes:
        one = MaskAugment(p=1.0, mask_type="plain", wearing=mode)
        for i, c in enumerate(_crops(4)):
            _, m, info = one.mask(c, one.rng(0, 0, i), info=True)
            assert info["masked"] and info["wearing"] == mode and info["mask_visible"] >= 0.2 and m.sum() > 150
    drawn = {aug.mask(_crops(1)[0], aug.rng(0, 0, i))[2]["wearing"] for i in range(200)}
    assert drawn == set(modes)
    with pytest.raises(MfrbenchError, match="does not fit an aligned 112x112 crop"):
        MaskAugment(wearing="chin", mask_type="plain")


def test_mtf_random_wearing_draws_only_modes_that_fit():
    """The generate path on crops: --wearing random never skips a crop as mask_outside."""
    g = MTFGenerator(MTFConfig(mask_type="plain", wearing="random"))
    crop = _crops(1)[0]
    seen = set()
    for i in range(120):
        _, m, info = g.mask_face(crop, CROP_LMK68, np.random.default_rng(i))
        seen.add(info["wearing"])
        assert m.sum() > 0 and info["mask_visible"] >= 0.2
    assert seen == {"correct", "nose-out", "mouth-nose-out"}
    # where every mode fits, the draw is the same single uniform as before (rng.choice with p)
    assert draw_wearing(0.05) == "correct" and draw_wearing(0.99) == "chin"
    assert draw_wearing(0.99, lambda m: m != "chin") == "mouth-nose-out"


def test_resumed_epoch_gives_identical_images():
    """A run stopped mid-epoch and resumed (fresh process state: pickled copy, new caches) masks the
    remaining crops exactly as the uninterrupted run, and a data loader's workers change nothing."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    crops = _crops(16)

    class Crops(Dataset):
        def __init__(self, aug):
            self.aug = aug

        def __len__(self):
            return len(crops)

        def __getitem__(self, i):
            return torch.from_numpy(self.aug(crops[i], 9, 1, i))

    aug = MaskAugment(p=0.5, mask_type="plain", wearing="random")
    order = np.random.default_rng([9, 1]).permutation(len(crops))
    full = [aug(crops[i], 9, 1, int(i)) for i in order]
    resumed = pickle.loads(pickle.dumps(aug))
    tail = [resumed(crops[i], 9, 1, int(i)) for i in order[7:]]
    assert all(np.array_equal(a, b) for a, b in zip(full[7:], tail))
    loaded = torch.cat(list(DataLoader(Crops(aug), batch_size=4, num_workers=2)))
    assert all(np.array_equal(loaded[i].numpy(), aug(crops[i], 9, 1, i)) for i in range(len(crops)))


def test_torchvision_style_call_keeps_the_type():
    import torch
    from PIL import Image

    aug = MaskAugment(p=1.0, mask_type="plain", seed=4)
    c = _crops(1)[0]
    pil = aug(Image.fromarray(c))
    assert isinstance(pil, Image.Image) and (np.asarray(pil) != c).any()
    t = aug(torch.from_numpy(c).permute(2, 0, 1))
    assert isinstance(t, torch.Tensor) and t.shape == (3, 112, 112) and t.dtype == torch.uint8
    again = MaskAugment(p=1.0, mask_type="plain", seed=4)
    assert np.array_equal(np.asarray(again(Image.fromarray(c))), np.asarray(pil))
    other = aug(c, None, None, None)
    assert other.shape == c.shape


def test_other_crop_sizes_scale_the_template():
    aug = MaskAugment(p=1.0, mask_type="plain", wearing="correct")
    c = _crops(1, size=224)[0]
    _, m, _ = aug.mask(c, aug.rng(0, 0, 0))
    tip = (CROP_LMK68[30] * 2).round().astype(int)
    assert m[tip[1], tip[0]] == 1 and m.sum() > 4 * 2000
    with pytest.raises(ValueError, match="square uint8"):
        aug.mask(c[:, :200], aug.rng(0, 0, 0))


def test_crop_landmarks_match_the_arcface_template():
    from mfrbench.align import ARCFACE_TEMPLATE
    from mfrbench.synthetic import five_from_68

    assert np.abs(five_from_68(CROP_LMK68) - ARCFACE_TEMPLATE).max() < 3.0
    aug = MaskAugment(mask_type="plain")
    for v in range(aug.variants):
        FaceFrame.from_landmarks(aug.landmarks(v))
        assert np.abs(aug.landmarks(v) - CROP_LMK68).max() < 12


def test_identity_names_mtf_and_the_options():
    from mfrbench.generate import UNMASKED, GeneratorIdentity

    a, b = MaskAugment(p=0.5, mask_type="plain"), MaskAugment(p=0.3, mask_type="plain")
    assert a.identity().family == "mtf" and a.identity().maps == "exact" and len(a.identity().config_hash) == 12
    assert a.identity() != b.identity() and a.identity() == MaskAugment(p=0.5, mask_type="plain").identity()
    assert GeneratorIdentity.join([UNMASKED, a.identity()]) == a.identity()


def test_spec_strings():
    assert parse_spec("mtf") == {}
    assert parse_spec("mtf:p=0.25,mask-type=mix,wearing=correct|nose-out,match_light=false,variants=4") == {
        "p": 0.25, "mask_type": "mix", "wearing": "correct|nose-out", "match_light": False, "variants": 4}
    aug = parse_mask_aug("mtf:p=0.3,mask_type=plain,wearing=correct")
    assert aug.p == 0.3 and aug.config()["mask_type"] == "plain" and aug.weights == {"correct": 1.0}
    for bad, msg in [("cyclegan:p=1", "mtf is the on-the-fly method"), ("mtf:q=1", "KEY in p, mask_type"),
                     ("mtf:p=x", "expected a number"), ("mtf:p=0.1,p=0.2", "given twice"),
                     ("mtf:mask_type=foo", "mask_type: expected one of"), ("mtf:wearing=upside", "Expected wearing"),
                     ("mtf:p=2", r"p in \[0, 1\]")]:
        with pytest.raises(MfrbenchError, match=msg):
            parse_mask_aug(bad)


@pytest.mark.parametrize("mask_type", KIT_TYPES)
def test_kit_families_cover_nose_and_mouth_on_crops(kit_ok, mask_type):
    aug = MaskAugment(p=1.0, mask_type=mask_type, wearing="correct")
    for i, c in enumerate(_crops(3)):
        out, m, info = aug.mask(c, aug.rng(0, 0, i), info=True)
        assert info["covers_nose"] and info["covers_mouth"] and not info["covers_eyes"], mask_type
        assert info["template"] == mask_type


def test_mix_draws_colours_textures_and_fitting_modes(kit_ok):
    aug = MaskAugment(p=1.0, mask_type="mix", wearing="random")
    infos = [aug.mask(c, aug.rng(2, 0, i), info=True)[2] for i, c in enumerate(np.repeat(_crops(1), 150, 0))]
    assert all(x["masked"] for x in infos)
    assert len({x["mask_type"] for x in infos}) >= 6 and any(x["color"] for x in infos)
    assert any(x["texture"] for x in infos)
    assert {x["wearing"] for x in infos} <= set(WEARING_MODES) - {"chin"}


# ---------------------------------------------------------------------------- in the trainer (train-fr --mask-aug)
@pytest.fixture(scope="module")
def train_crops(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_recognizer_data import write_crops

    return write_crops(tmp_path_factory.mktemp("maskaug_train"), identities=4, per_identity=4)


def test_trainer_hook_masks_and_a_resumed_epoch_loads_the_same_batches(train_crops):
    import torch

    from mfrbench.recognizers.data import EpochBatchSampler, FaceImages, build_train_data

    data = build_train_data([str(train_crops)], val_identities=0, seed=1)
    aug = MaskAugment(p=1.0, mask_type="plain", wearing="random")

    def batches(dataset, start):
        sampler = EpochBatchSampler(len(data.train), 4, seed=1)
        sampler.set_epoch(1, start)
        return [torch.stack([dataset[i][0] for i in b]) for b in sampler]

    masked = FaceImages(data.train, data.train_labels, train=True, seed=1, augment=aug)
    plain = FaceImages(data.train, data.train_labels, train=True, seed=1)
    full, resumed = batches(masked, 0), batches(pickle.loads(pickle.dumps(masked)), 2)
    assert len(full) == 4 and all(torch.equal(a, b) for a, b in zip(full[2:], resumed))
    assert all(not torch.equal(a, b) for a, b in zip(full, batches(plain, 0)))


def test_cli_train_fr_mask_aug_is_a_training_option(train_crops, tmp_path):
    """train-fr --mask-aug trains, is saved in the run's config, and a resume with another spec is refused."""
    import json

    from click.testing import CliRunner

    from mfrbench.cli import cli

    out = tmp_path / "run"
    base = ["train-fr", "--data", str(train_crops), "--backbone", "timm:test_resnet", "--embedding-dim", "16",
            "--batch-size", "4", "--workers", "0", "--val-identities", "0", "--no-progress", "--out", str(out)]
    r = CliRunner().invoke(cli, [*base, "--max-steps", "1", "--mask-aug", "mtf:p=1,mask_type=plain"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["config"]["mask_aug"] == "mtf:p=1,mask_type=plain"
    from mfrbench.recognizers.embed import load_backbone

    info = load_backbone(out)[1]          # traced to the masks it saw: mtf, hashed over the spec
    assert (info["generator"], info["generator_family"]) == ("mtf", "mtf")
    assert info["generator_hash"] == parse_mask_aug("mtf:p=1,mask_type=plain").identity().config_hash
    r = CliRunner().invoke(cli, ["train-fr", "--out", str(out), "--resume", "--mask-aug", "mtf:p=0.5"])
    assert r.exit_code != 0 and "mask_aug" in r.output
    r = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "bad"), "--mask-aug", "mtf:q=1"])
    assert r.exit_code != 0 and "--mask-aug: expected KEY=VALUE" in r.output


def test_a_mode_that_fits_few_geometries_still_masks_every_crop(kit_ok):
    """gas worn mouth-nose-out fits only some of the 8 geometries: every crop is masked in one of those."""
    aug = MaskAugment(p=1.0, mask_type="gas", wearing="mouth-nose-out")
    fits = aug._variants_fitting("gas", "mouth-nose-out", 112)
    assert 0 < len(fits) < aug.variants
    infos = [aug.mask(c, aug.rng(0, 0, i))[2] for i, c in enumerate(np.repeat(_crops(1), 30, 0))]
    assert all(x["masked"] and x["variant"] in fits for x in infos)
