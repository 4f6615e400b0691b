"""The generation driver (generate_dataset) with mtf: manifests, reproducibility, resume, bad files, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mfrbench.align import align_dataset
from mfrbench.cli import cli
from mfrbench.datasets import create_dataset
from mfrbench.generators.base import (
    GenerateConfig,
    GeneratedBatch,
    MaskGenerator,
    generate_dataset,
    image_rng,
    save_sample_grid,
)
from mfrbench.imageio import load_rgb
from mfrbench.manifest import JOURNAL, MANIFEST_CSV, read_manifest, read_manifest_meta

PLAIN = {"mask_type": "plain", "wearing": "random"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return create_dataset("synthetic", tmp_path_factory.mktemp("synth") / "s", identities=4, per_identity=3)


def _tree_digest(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for sub in ("images", "maps") for p in sorted((out / sub).rglob("*")) if p.is_file()}


def _rows(out: Path) -> list[dict]:
    df = read_manifest(out).drop(columns=["abs_out_path"])
    return df.sort_values("key").to_dict("records")


def test_synthetic_faces_without_kit(synth, tmp_path, monkeypatch):
    """Synthetic faces + the drawn 'plain' mask need no data kit; rows carry the part labels."""
    import mfrbench.paths
    from mfrbench.generators.mask_templates import load_kit

    monkeypatch.setattr(mfrbench.paths, "data_root", lambda *a, **k: None)  # no kit, no models
    monkeypatch.setattr(mfrbench.paths, "models_dir", lambda: None)
    load_kit.cache_clear()
    meta = generate_dataset("mtf", tmp_path / "o", dataset=synth, seed=1, generator_kwargs=PLAIN, progress=False,
                            cfg=GenerateConfig(ext=".png"))
    assert (meta["inputs"], meta["ok"], meta["synthetic"], meta["kind"]) == (12, 12, True, "masked")
    df = read_manifest(tmp_path / "o", status="ok")
    for col in ("mask_type", "wearing", "anchors", "yaw_bin", "seed", "covers_eyes", "covers_nose", "covers_mouth",
                "covers_chin", "covered_parts", "map_out_path", "lmk68"):
        assert col in df.columns, col
    assert set(df.frame) == {"photo"} and set(df.lmk_source) == {"annotation"}
    for r in df.to_dict("records"):
        img, src = load_rgb(r["abs_out_path"]), load_rgb(r["src_path"])
        m = np.asarray(Image.open(tmp_path / "o" / r["map_out_path"]))
        assert m.shape == img.shape[:2] and set(np.unique(m)) <= {0, 1}
        changed = np.any(img != src, axis=2)  # PNG output: lossless, so the change is exact
        assert (changed & (m == 1)).sum() / max(m.sum(), 1) > 0.99
        assert len(r["anchors"]) == 12 and not r["covers_eyes"]
        l68 = np.array(r["lmk68"]).reshape(68, 2)
        on_nose = m[int(round(l68[30, 1])), int(round(l68[30, 0]))] == 1
        assert on_nose == (r["wearing"] == "correct")


def test_same_seed_is_byte_identical_for_any_worker_count(synth, tmp_path):
    a = generate_dataset("mtf", tmp_path / "a", dataset=synth, seed=5, generator_kwargs=PLAIN, progress=False)
    b = generate_dataset("mtf", tmp_path / "b", dataset=synth, seed=5, generator_kwargs=PLAIN, progress=False,
                         workers=2, batch_size=3)
    c = generate_dataset("mtf", tmp_path / "c", dataset=synth, seed=6, generator_kwargs=PLAIN, progress=False)
    assert a["ok"] == b["ok"] == c["ok"] == 12
    da, db, dc = (_tree_digest(tmp_path / x) for x in "abc")
    assert len(da) == 24 and da == db
    assert da != dc
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    assert image_rng(5, "k").integers(1 << 30) == image_rng(5, "k").integers(1 << 30)


def test_resume_after_kill_completes_without_duplicates(synth, tmp_path):
    out = tmp_path / "o"
    generate_dataset("mtf", out, dataset=synth, seed=2, generator_kwargs=PLAIN, progress=False)
    full = _tree_digest(out)
    # Simulate a kill after 5 images: journal cut mid-line, no final CSV, later outputs missing.
    lines = (out / JOURNAL).read_text().splitlines(keepends=True)
    (out / JOURNAL).write_text("".join(lines[:5]) + lines[5][:17])
    (out / MANIFEST_CSV).unlink()
    for line in lines[5:]:
        row = json.loads(line)
        for col in ("out_path", "map_out_path"):
            if row.get(col):
                (out / row[col]).unlink()
    meta = generate_dataset("mtf", out, dataset=synth, seed=2, generator_kwargs=PLAIN, progress=False)
    df = read_manifest(out)
    assert meta["inputs"] == 12 and len(df) == 12 and df.key.is_unique
    assert _tree_digest(out) == full
    with pytest.raises(Exception, match="different config"):
        generate_dataset("mtf", out, dataset=synth, seed=3, generator_kwargs=PLAIN, progress=False)


def test_aligned_manifest_fast_path(synth, tmp_path):
    align_dataset(synth, tmp_path / "al", progress=False)
    meta = generate_dataset("mtf", tmp_path / "m", manifest=tmp_path / "al", seed=0, generator_kwargs=PLAIN,
                            progress=False)
    assert meta["input"] == "aligned_manifest" and meta["inputs"] == 12
    df = read_manifest(tmp_path / "m", status="ok")
    assert len(df) + meta["skipped"] == 12 and len(df) >= 9
    assert set(df.frame) == {"aligned"} and all(load_rgb(p).shape == (112, 112, 3) for p in df.abs_out_path)
    assert (df.mask_visible >= 0.2).all()  # slivers at the crop edge are skipped, with the reason
    assert all(r.startswith("mask_outside: only") for r in read_manifest(tmp_path / "m", status="skipped").reason)
    al = read_manifest(tmp_path / "al").set_index("key")
    for r in df.to_dict("records"):  # landmarks are the crop's, passed through
        np.testing.assert_allclose(r["lmk68"], al.loc[r["key"], "lmk68_crop"], atol=0.01)
    with pytest.raises(Exception, match="--manifest takes the output folder of `mfrbench align`"):
        generate_dataset("mtf", tmp_path / "m2", manifest=tmp_path / "m", generator_kwargs=PLAIN, progress=False)


class _ToyAligned(MaskGenerator):
    """A stand-in for a batched GAN: aligned crops in, lower half painted, no landmarks needed."""

    name = "toy"
    input_frame = "aligned"

    def __init__(self):
        self.batches = []

    def generate(self, images, landmarks, *, rng):
        self.batches.append(len(images))
        out, maps = images.copy(), np.zeros(images.shape[:3], np.uint8)
        maps[:, 60:] = 1
        out[:, 60:] = (rng.integers(0, 255, 3)).astype(np.uint8)
        info = [{"mask_type": "toy"} for _ in images]
        info[0] = {"skip": "toy_refused: first of each batch"}
        return GeneratedBatch(out, maps, info)


def test_driver_serves_batched_aligned_generators(synth, tmp_path):
    """Raw photos are aligned on the fly for aligned-frame generators; batches are honoured;
    a per-image skip in info becomes one skipped row."""
    gen = _ToyAligned()
    meta = generate_dataset(gen, tmp_path / "t", dataset=synth, batch_size=4, progress=False)
    assert gen.batches == [4, 4, 4]
    assert (meta["ok"], meta["skipped"], meta["skip_reasons"]) == (9, 3, {"toy_refused": 3})
    df = read_manifest(tmp_path / "t", status="ok")
    assert set(df.frame) == {"aligned"} and load_rgb(df.abs_out_path[0]).shape == (112, 112, 3)


def test_bad_files_become_skipped_rows(broken_dir, models_root, tmp_path):
    ds = create_dataset("folder", broken_dir)
    n = ds.count()
    meta = generate_dataset("mtf", tmp_path / "o", dataset=ds, generator_kwargs={"mask_type": "plain"}, progress=False)
    df = read_manifest(tmp_path / "o")
    assert meta["inputs"] == n == len(df) and meta["ok"] + meta["skipped"] == n
    by = dict(zip(df.key.map(lambda k: Path(k).stem), zip(df.status, df.reason)))
    for stem, (status, reason) in by.items():
        if stem.startswith("ok_"):
            assert status == "ok", (stem, reason)
        elif stem.startswith("dup_"):
            assert reason.startswith("duplicate"), stem
        else:
            assert status == "skipped" and reason, stem
    assert by["bad_empty"][1].startswith("empty") and by["bad_truncated"][1].startswith("corrupt")
    assert by["bad_noface"][1].startswith("no_face") and by["bad_tiny"][1].startswith("too_small")


def test_celeba_in_the_wild(celeba_root, models_root, tmp_path):
    """Real photos: detection + PFLD + kit templates, mix styles; the CLI's check at small scale."""
    r = CliRunner().invoke(cli, ["generate", "--method", "mtf", "--dataset", "celeba", "--root", str(celeba_root),
                                 "--out", str(tmp_path / "o"), "--mask-type", "mix", "--wearing", "random",
                                 "--limit", "16", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "16 inputs:" in r.output and (tmp_path / "o" / "grid.png").is_file()
    df = read_manifest(tmp_path / "o")
    assert len(df) == 16 and (df.status == "ok").sum() >= 14
    ok = df[df.status == "ok"]
    assert set(ok.frame) == {"photo"} and ok.mask_type.nunique() >= 3
    for r_ in ok.to_dict("records"):
        m = np.asarray(Image.open(tmp_path / "o" / r_["map_out_path"]))
        assert m.shape == (r_["height"], r_["width"]) and m.sum() > 0
        l68 = np.array(r_["lmk68"]).reshape(68, 2)
        tip = m[int(np.clip(round(l68[30, 1]), 0, m.shape[0] - 1)), int(np.clip(round(l68[30, 0]), 0, m.shape[1] - 1))]
        if r_["wearing"] == "correct":
            assert tip == 1 and r_["covers_nose"] and r_["covers_mouth"]
        else:
            assert tip == 0 and not r_["covers_nose"]


@pytest.mark.slow
def test_celeba_200_rows_cli(celeba_root, models_root, tmp_path):
    """The issue's check: 200 rows ok + skipped, and the same seed twice is byte-identical."""
    args = ["generate", "--method", "mtf", "--dataset", "celeba", "--root", str(celeba_root), "--mask-type", "mix",
            "--wearing", "random", "--limit", "200", "--seed", "1", "--no-grid"]
    r = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "a"), "--workers", "2"])
    assert r.exit_code == 0, r.output
    meta = read_manifest_meta(tmp_path / "a")
    assert meta["inputs"] == 200 == meta["ok"] + meta["skipped"]
    r = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")


def test_cli_errors_are_one_line(synth, tmp_path):
    run = CliRunner().invoke
    r = run(cli, ["generate", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "give --dataset NAME" in r.output and "Traceback" not in r.output
    r = run(cli, ["generate", "--dataset", "synthetic", "--out", str(tmp_path / "x"), "--checkpoint", "runs/x"])
    assert r.exit_code != 0 and "--checkpoint does not apply to --method mtf" in r.output
    r = run(cli, ["generate", "--dataset", "synthetic", "--out", str(tmp_path / "x"), "--mask-type", "bandana"])
    assert r.exit_code != 0 and "Expected --mask-type in" in r.output
    r = run(cli, ["generate", "--method", "nosuch", "--dataset", "synthetic", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "Unknown generator 'nosuch'" in r.output


def test_cli_synthetic_with_grid(synth, tmp_path):
    r = CliRunner().invoke(cli, ["generate", "--dataset", "synthetic", "--root", str(synth.root), "--out",
                                 str(tmp_path / "o"), "--mask-type", "plain", "--limit", "6", "--format", "png"])
    assert r.exit_code == 0, r.output
    assert "6 inputs: 6 ok" in r.output and "[SYNTHETIC]" in r.output
    grid = load_rgb(tmp_path / "o" / "grid.png")
    assert grid.shape[1] > 3 * 128
    assert save_sample_grid(tmp_path / "o", tmp_path / "g2.png", n=2) == tmp_path / "g2.png"


def test_fast_decode_matches_decode_rgb():
    """OpenCV's JPEG path gives PIL's pixels (EXIF rotation, CMYK, gray); truncated files still fail."""
    import io

    from mfrbench.errors import SkipImage
    from mfrbench.generators.base import fast_decode
    from mfrbench.imageio import decode_rgb

    a = np.zeros((60, 100, 3), np.uint8)
    a[:, :20] = 255
    rotated = Image.fromarray(a)
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    cases = []
    for im, kw in ((rotated, {"exif": exif.tobytes()}), (Image.fromarray(a).convert("CMYK"), {}),
                   (Image.fromarray(a).convert("L"), {})):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=95, **kw)
        cases.append(buf.getvalue())
    for data in cases:
        ref = decode_rgb(data)[0]
        got = fast_decode(data)
        assert got.shape == ref.shape and np.abs(got.astype(int) - ref).max() <= 1
    assert fast_decode(cases[0]).shape == (100, 60, 3)
    with pytest.raises(SkipImage, match="corrupt"):
        fast_decode(cases[0][: len(cases[0]) // 2])
