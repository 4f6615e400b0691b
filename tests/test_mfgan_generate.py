"""Reference-guided MFGAN generation through the shared dataset driver (real photos from the data kit).

The GAN is a tiny run trained for a few steps with stand-in Det/Seg (the wrapper is real); what
is checked is the plumbing: reference choice per mode, manifest columns, determinism.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_mfgan_model import TINY, _domain, stand_in_aux  # noqa: F401  (fixture re-export)

from mfrbench.generators import mfgan as M
from mfrbench.generators.base import generate_dataset
from mfrbench.generators.gan.config import resolve_config, run_config
from mfrbench.generators.gan.contract import build_gan
from mfrbench.generators.gan.fit import fit
from mfrbench.manifest import read_manifest


@pytest.fixture()
def tiny_run(stand_in_aux, tmp_path):  # noqa: F811
    train, cfg = resolve_config("mfgan", None, train=dict(size=32, steps=3, batch_size=2, sample_every=3,
                                                          ckpt_every=3, n_sample=2), model=TINY)
    gan = build_gan(train, cfg)
    run = tmp_path / "run"
    fit(gan, _domain("f", 6, 32, 1), _domain("m", 6, 32, 2), run, config=run_config(train, cfg),
        progress=False)
    return run


@pytest.fixture()
def photo_dirs(celeba_root, masked_photos_root, tmp_path):
    faces = tmp_path / "faces"
    for ident in ("a", "b"):
        (faces / ident).mkdir(parents=True)
    files = sorted((celeba_root / "img_celeba").glob("*.jpg"))[:6]
    for i, f in enumerate(files):
        shutil.copy(f, faces / ("a" if i < 3 else "b") / f.name)
    refs = tmp_path / "refs"
    refs.mkdir()
    for f in sorted(masked_photos_root.rglob("*.jpg"))[:12]:
        shutil.copy(f, refs / f"{f.parent.name}_{f.name}")
    return faces, refs


def _gen(run, faces, refs, out, mode, seed=1):

    gen = M.mfgan(checkpoint=str(run), reference=str(refs) if refs else None, reference_mode=mode, seed=seed,
                  device="cpu")
    ds = _identity_folders(faces)
    meta = generate_dataset(gen, out, dataset=ds, seed=seed, progress=False)
    return meta, read_manifest(out, status="ok")


def _identity_folders(root: Path):
    from mfrbench.datasets import Dataset, FaceRecord

    def gen():
        for p in sorted(root.rglob("*.jpg")):
            yield FaceRecord(str(p), p.parent.name, False, "test", p.relative_to(root).as_posix())

    return Dataset("test-ids", root, gen)


def test_reference_modes_and_manifest_columns(tiny_run, photo_dirs, tmp_path):
    faces, refs = photo_dirs
    meta, df = _gen(tiny_run, faces, refs, tmp_path / "rand", "random")
    assert meta["inputs"] == 6 and meta["ok"] + meta["skipped"] == 6 and meta["ok"] >= 4
    for col in ("reference", "style_domain", "reference_mode", "map_out_path", "gan_run"):
        assert col in df.columns
    assert (df["reference_mode"] == "random").all() and df["reference"].str.len().gt(0).all()
    assert df["style_domain"].between(0, TINY["n_domains"] - 1).all()
    # same seed -> byte-identical outputs; another output folder, same inputs
    _, df2 = _gen(tiny_run, faces, refs, tmp_path / "rand2", "random")
    for a, b in zip(df["abs_out_path"], df2["abs_out_path"]):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    assert list(df["reference"]) == list(df2["reference"])
    # fixed: one reference for all
    _, dff = _gen(tiny_run, faces, refs, tmp_path / "fixed", "fixed")
    assert dff["reference"].nunique() == 1
    # per-identity: one reference per identity
    _, dfi = _gen(tiny_run, faces, refs, tmp_path / "ident", "per-identity")
    assert (dfi.groupby("identity")["reference"].nunique() == 1).all()
    # no reference: the learned default style
    _, dfd = _gen(tiny_run, faces, None, tmp_path / "default", None)
    assert (dfd["reference_mode"] == "default-style").all() and (dfd["style_domain"] == -1).all()
    m = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(dfd["abs_out_path"].iloc[0].replace(
        "/images/", "/maps/").rsplit(".", 1)[0] + ".png"))
    assert m.shape[:2] == (112, 112) and set(np.unique(m)) <= {0, 1}


def test_bad_reference_mode(tiny_run):
    with pytest.raises(M.MfrbenchError, match="reference-mode"):
        M.mfgan(checkpoint=str(tiny_run), reference=None, reference_mode="sometimes")
