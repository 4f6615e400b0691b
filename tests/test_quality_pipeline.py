"""`run_quality` / `mfrbench quality`: which non-mask region SSIM/PSNR use, the row it writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mfrbench.errors import MfrbenchError
from mfrbench.imageio import save_image
from mfrbench.manifest import ManifestWriter
from mfrbench.metrics.quality import SSIM_PSNR_PROTOCOL, ssim_non_mask
from mfrbench.quality import run_quality

SIZE = 112
MASK = (slice(62, SIZE), slice(22, 90))      # the mask region every test image gets
EYES = (slice(36, 48), slice(24, 88))        # where the "eye-damaging" generator also changes pixels


def _face(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img = np.stack([128 + 60 * np.sin(xx / 9) + 40 * np.cos(yy / 13), 100 + 50 * np.cos(xx / 7 + yy / 11),
                    90 + 30 * np.sin(yy / 5)], -1)
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def true_keep() -> np.ndarray:
    keep = np.ones((SIZE, SIZE), bool)
    keep[MASK] = False
    return keep


def write_masked_set(out, *, maps: str, family: str = "cyclegan", damage_eyes: bool = False, n: int = 4):
    """A masked manifest written by hand: inputs, outputs with a flat mask, and their mask maps.

    ``maps="diff"`` stores the changed-pixel map (mask and any eye damage), ``"exact"`` the true mask.
    Returns the (input, output) image pairs.
    """
    pairs = []
    with ManifestWriter(out, kind="masked", config={"stage": "generate"}, seed=0) as w:
        for i in range(n):
            src = _face(i)
            res = src.copy()
            res[MASK] = (60, 110, 200)
            if damage_eyes:
                noise = np.random.default_rng(100 + i).integers(-60, 61, res[EYES].shape)
                res[EYES] = np.clip(res[EYES].astype(int) + noise, 0, 255).astype(np.uint8)
            mask = (res != src).any(-1) if maps == "diff" else ~true_keep()
            save_image(out / f"in/{i}.png", src)
            save_image(out / f"img/{i}.png", res)
            save_image(out / f"map/{i}.png", mask.astype(np.uint8))
            w.add({"key": f"k{i}", "src_path": str(out / f"in/{i}.png"), "identity": str(i), "source": "synthetic",
                   "out_path": f"img/{i}.png", "map_out_path": f"map/{i}.png", "status": "ok", "reason": ""})
            pairs.append((src, res))
        w.close(extra_meta={"generator": {"family": family, "variant": family, "config_hash": "abc123def456",
                                          "run": "", "maps": maps}})
    return pairs


def hand_made_seg(images: np.ndarray) -> np.ndarray:
    """Stand-in for the common Seg model: the true mask of every test image, as keep maps (B, H, W)."""
    return np.broadcast_to(true_keep(), images.shape[:3]).copy()


def test_changed_pixel_maps_are_refused_without_a_common_seg(tmp_path):
    write_masked_set(tmp_path / "m", maps="diff")
    with pytest.raises(MfrbenchError, match=r"estimated from its output \(maps='diff'\).*pass --seg RUN"):
        run_quality(tmp_path / "m", results_dir=tmp_path / "res", progress=False)


def test_eye_damage_counts_as_non_mask_with_a_common_seg(tmp_path):
    """A generator that damages the eyes and stores the changed-pixel map no longer hides the damage.

    The old code took the manifest's changed-pixel map as the mask, so the eye damage was "mask":
    it reported SSIM 0.924 and PSNR inf on this set (run_quality had no common-Seg input); outside
    the true mask SSIM is 0.894 and PSNR 28.1 dB.
    """
    pairs = write_masked_set(tmp_path / "m", maps="diff", damage_eyes=True)
    row = run_quality(tmp_path / "m", results_dir=tmp_path / "res", progress=False, nonmask_fn=hand_made_seg,
                      nonmask_source="seg:hand-made")
    want = np.mean([ssim_non_mask(s, o, true_keep()) for s, o in pairs])
    assert row["ssim"] == pytest.approx(want, rel=1e-12)
    assert row["ssim"] < 0.9 and np.isfinite(row["psnr"]) and row["psnr"] < 30
    # the changed-pixel map would have hidden all of it: nothing differs outside it
    diff_keep = [(o == s).all(-1) for s, o in pairs]
    assert [ssim_non_mask(s, o, k) for (s, o), k in zip(pairs, diff_keep)] == [1.0] * len(pairs)
    assert row["nonmask_source"] == "seg:hand-made"
    stored = pd.read_csv(tmp_path / "res" / "evals.csv").iloc[0]
    assert stored.nonmask_source == "seg:hand-made" and stored.quality_protocol == SSIM_PSNR_PROTOCOL
    assert stored.generator == "cyclegan" and stored.generator_family == "cyclegan"
    assert stored.generator_hash == "abc123def456"


def test_exact_maps_are_used_even_when_a_seg_is_given(tmp_path):
    """mtf's maps are its mask: identical non-mask pixels give SSIM 1.0 and PSNR inf, whatever --seg says."""
    write_masked_set(tmp_path / "m", maps="exact", family="mtf")

    def wrong_seg(images):
        return np.zeros(images.shape[:3], bool)

    row = run_quality(tmp_path / "m", results_dir=tmp_path / "res", progress=False, nonmask_fn=wrong_seg,
                      nonmask_source="seg:runs/seg")
    assert row["ssim"] == 1.0 and row["psnr"] == float("inf") and row["n_images"] == 4
    assert row["nonmask_source"] == "exact-maps" and row["quality_protocol"] == SSIM_PSNR_PROTOCOL
    assert "--seg seg:runs/seg not used: mtf has exact mask maps" in row["notes"]
    assert "no --real set: FID/KID not computed" in row["notes"]


def test_identity_cosine_and_a_bad_seg_output(tmp_path):
    write_masked_set(tmp_path / "m", maps="exact", family="mtf")

    class Embedder:
        info = {"model": "toy", "config_hash": "h"}

        def embed(self, images):
            return images.reshape(len(images), -1)[:, :64].astype(np.float64) + 1

    row = run_quality(tmp_path / "m", results_dir=tmp_path / "res", progress=False, model=Embedder())
    assert row["identity_cos"] == pytest.approx(1.0) and row["model"] == "toy"  # first 64 values are non-mask
    write_masked_set(tmp_path / "d", maps="seg")
    with pytest.raises(ValueError, match=r"Expected nonmask_fn to return keep maps of shape \(4, 112, 112\)"):
        run_quality(tmp_path / "d", results_dir=tmp_path / "res", progress=False,
                    nonmask_fn=lambda images: np.ones(images.shape[:2], bool))


def test_a_manifest_without_identity_is_a_clear_error(tmp_path):
    write_masked_set(tmp_path / "m", maps="exact")
    meta = json.loads((tmp_path / "m" / "manifest.json").read_text())
    del meta["generator"]
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(meta))
    with pytest.raises(MfrbenchError, match="no generator identity record"):
        run_quality(tmp_path / "m", results_dir=tmp_path / "res", progress=False)


def test_quality_cli_passes_the_seg_run_on(tmp_path, monkeypatch):
    """`--seg RUN` becomes a keep-map callable from that Seg run and the row's source ``seg:<run>``."""
    import mfrbench.generators.seg as seg_mod
    import mfrbench.quality as quality_mod
    from mfrbench.cli import cli

    (tmp_path / "seg").mkdir()
    write_masked_set(tmp_path / "m", maps="diff")
    loaded, seen = [], {}

    class FakeSeg:
        def predict_uint8(self, images):
            return (~hand_made_seg(images)).astype(np.uint8)  # 1 = mask, as Seg does

    monkeypatch.setattr(seg_mod, "load_seg", lambda run: loaded.append(run) or FakeSeg())

    def fake_run_quality(generated, **kw):
        seen.update(kw, generated=generated)
        return {"generator": "cyclegan", "n_images": 4, "eval_id": "e1", "notes": "", "nonmask_source": "x"}

    monkeypatch.setattr(quality_mod, "run_quality", fake_run_quality)
    r = CliRunner().invoke(cli, ["quality", "--generated", str(tmp_path / "m"), "--seg", str(tmp_path / "seg"),
                                 "--results", str(tmp_path / "res"), "--limit", "3", "--seed", "7"])
    assert r.exit_code == 0, r.output
    assert loaded == [tmp_path / "seg"]
    assert seen["nonmask_source"] == f"seg:{(tmp_path / 'seg').resolve()}"
    assert seen["limit"] == 3 and seen["seed"] == 7 and seen["real"] is None
    imgs = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    np.testing.assert_array_equal(seen["nonmask_fn"](imgs), hand_made_seg(imgs))


def test_quality_cli_without_seg_on_estimated_maps_is_one_line(tmp_path):
    from mfrbench.cli import cli

    write_masked_set(tmp_path / "m", maps="diff")
    r = CliRunner().invoke(cli, ["quality", "--generated", str(tmp_path / "m"), "--results", str(tmp_path / "res")])
    assert r.exit_code != 0 and "pass --seg RUN" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


@pytest.mark.data
def test_quality_cli_on_a_generated_set(kit, tmp_path):
    """mtf on synthetic faces (known landmarks) -> SSIM/PSNR outside its exact mask maps -> a quality row."""
    if not (kit / "masktheface-templates").is_dir():
        pytest.skip("mask templates not in the data kit")
    from mfrbench.align import AlignConfig, align_dataset
    from mfrbench.cli import cli
    from mfrbench.datasets import create_dataset
    from mfrbench.generators.base import generate_dataset

    ds = create_dataset("synthetic", tmp_path / "syn", identities=3, per_identity=2)
    align_dataset(ds, tmp_path / "aligned", progress=False, cfg=AlignConfig(landmarker="none"))
    generate_dataset("mtf", tmp_path / "masked", manifest=tmp_path / "aligned", seed=0, progress=False)
    r = CliRunner().invoke(cli, ["quality", "--generated", str(tmp_path / "masked"), "--results",
                                 str(tmp_path / "res")])
    assert r.exit_code == 0, r.output
    row = pd.read_csv(tmp_path / "res" / "evals.csv").iloc[0]
    assert row.kind == "quality" and row.generator == "mtf" and row.n_images == 6
    assert row.nonmask_source == "exact-maps" and row.quality_protocol == SSIM_PSNR_PROTOCOL
    assert 0.5 < row.ssim <= 1 and row.psnr > 20 and pd.isna(row.fid)
    assert "no --real set: FID/KID not computed" in row.notes
    bad = CliRunner().invoke(cli, ["quality", "--generated", str(tmp_path / "aligned")])
    assert bad.exit_code != 0 and "is a 'aligned' manifest" in bad.output
