"""Benchmark protocols: built from real layouts (kit or small fixture trees), written to disk, seeded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mfrbench.errors import MfrbenchError
from mfrbench.protocols import PROTOCOLS, build_protocol


def test_registry_lists_benchmarks():
    bin_sets = ["agedb-30", "calfw", "cfp-ff", "cfp-fp", "cplfw", "lfw-bin", "vgg2-fp"]  # insightface .bin (issue 16)
    assert PROTOCOLS.names() == sorted(["folder", "lfw", "lfw-masked", "mfr2", "rmfrd", *bin_sets])


@pytest.mark.data
def test_lfw_uses_official_folds(lfw_root, tmp_path):
    p = build_protocol("lfw", lfw_root)
    assert len(p.pairs) == 1800 and p.pairs.is_same.sum() == 900  # the kit: View 2 folds 1-3
    assert sorted(p.pairs.fold.unique()) == [0, 1, 2]
    first = p.pairs.groupby("fold").is_same.apply(list)
    assert all(f[:300] == [True] * 300 and f[300:] == [False] * 300 for f in first)  # file order, unshuffled
    out = p.write(tmp_path)
    assert (out / "pairs.csv").is_file() and json.loads((out / "protocol.json").read_text())["folds"] == 3


@pytest.mark.data
def test_lfw_masked_is_seeded_and_masks_one_side(lfw_root):
    a = build_protocol("lfw-masked", lfw_root, seed=0)
    b = build_protocol("lfw-masked", lfw_root, seed=0)
    c = build_protocol("lfw-masked", lfw_root, seed=1)
    assert a.pairs.equals(b.pairs) and not a.pairs.equals(c.pairs)
    masked = a.images.set_index("image_id").variant == "masked"
    assert (masked[a.pairs.a].to_numpy() ^ masked[a.pairs.b].to_numpy()).all()
    # Identification: one unmasked gallery image per person with >= 2 images, all others masked probes.
    n_people = (a.images[a.images.variant == "orig"].groupby("identity").size() >= 2).sum()
    assert len(a.gallery) == n_people and not masked[a.gallery].any() and masked[a.probes].all()
    assert a.generator == "mtf" and a.generator_kwargs == {"mask_type": "random"}


@pytest.mark.data
def test_rmfrd_all_pairs_counts(rmfrd_root, tmp_path):
    p = build_protocol("rmfrd", rmfrd_root)
    c = p.counts()
    # The kit: 23 people, 477 masked x 460 unmasked.
    assert c["allpairs:masked-unmasked"] == 477 * 460 and c["identities"] == 23
    masked = p.images.set_index("image_id").is_masked
    assert masked[p.probes].all() and not masked[p.gallery].any()
    assert p.images.fold.nunique() == 10
    out = p.write(tmp_path)
    spec = json.loads((out / "allpairs.json").read_text())
    assert spec[0]["name"] == "masked-unmasked" and len(spec[0]["probe"]) == 477 and spec[1]["gallery"] == "probe"
    assert out.name == f"rmfrd-{p.id}" and build_protocol("rmfrd", rmfrd_root).write(tmp_path) == out


@pytest.fixture()
def mfr2_tree(rmfrd_root, tmp_path) -> Path:
    """A tiny MFR2-layout tree (PNG, labels, space-separated pairs) made from kit faces."""
    from PIL import Image

    root = tmp_path / "mfr2"
    src = rmfrd_root
    people = sorted(d.name for d in (src / "AFDB_masked_face_dataset").iterdir())[:3]
    labels = []
    for name in people:
        (root / name).mkdir(parents=True)
        files = [(f, "no-mask") for f in sorted((src / "AFDB_face_dataset" / name).iterdir())[:2]]
        files += [(f, "surgical_blue") for f in sorted((src / "AFDB_masked_face_dataset" / name).iterdir())[:2]]
        for n, (f, kind) in enumerate(files, 1):
            Image.open(f).convert("RGB").save(root / name / f"{name}_{n:04d}.png")
            labels.append(f"{name}, {n}, {kind}")
    (root / "mfr2_labels.txt").write_text("\n".join(labels) + "\n")
    a, b, c = people
    (root / "pairs.txt").write_text(f"{a} 1 3\n{a} 1 {b} 3\n{b} 3 4\n{b} 2 {c} 4\n{c} 1 2\n{c} 3 {a} 4\n")
    return root


@pytest.mark.data
def test_mfr2_pair_types_and_split(mfr2_tree):
    p = build_protocol("mfr2", mfr2_tree)
    assert p.pairs.is_same.tolist() == [True, False, True, False, True, False]
    assert p.pairs.pair_type.tolist() == ["masked-unmasked", "masked-unmasked", "masked-masked",
                                          "masked-unmasked", "unmasked-unmasked", "masked-masked"]
    assert len(p.probes) == 6 and len(p.gallery) == 6
    assert set(p.images.mask_type) == {"no-mask", "surgical_blue"}


@pytest.mark.data
def test_mfr2_missing_image_is_a_clear_error(mfr2_tree):
    next(mfr2_tree.rglob("*_0004.png")).unlink()
    with pytest.raises(MfrbenchError, match="name images that do not exist"):
        build_protocol("mfr2", mfr2_tree)
    p = build_protocol("mfr2", mfr2_tree, allow_missing=True)
    assert len(p.pairs) < 6 and "dropped: image missing" in p.notes[0]


def test_folder_layout_errors(tmp_path):
    with pytest.raises(MfrbenchError, match="needs --root"):
        build_protocol("folder", None)
    (tmp_path / "masked").mkdir()
    with pytest.raises(MfrbenchError, match="must hold masked/<identity>/ and unmasked/<identity>/"):
        build_protocol("folder", tmp_path)


def test_duplicate_files_are_kept_out_of_impostor_pairs_of_a_pair_list(tmp_path):
    """LFW layout where Bob_0001.jpg is a byte copy of Ann_0001.jpg: the impostor pairs using either
    copy are dropped from pairs.csv (4139fb7 kept them, e.g. the copy against itself as an impostor),
    genuine pairs stay, and the protocol counts and lists the copies."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("Ann", "Bob", "Cy"):
        (tmp_path / name).mkdir()
        for n in (1, 2):
            img = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
            img.save(tmp_path / name / f"{name}_{n:04d}.jpg")
    shutil.copy(tmp_path / "Ann" / "Ann_0001.jpg", tmp_path / "Bob" / "Bob_0001.jpg")
    (tmp_path / "pairs.txt").write_text("1\t3\nAnn\t1\t2\nBob\t1\t2\nCy\t1\t2\n"
                                        "Ann\t1\tBob\t1\nAnn\t2\tCy\t1\nBob\t2\tCy\t2\n")
    p = build_protocol("lfw", tmp_path)
    keys = p.images.set_index("image_id").key
    assert sorted(keys[p.duplicates]) == ["Ann/Ann_0001.jpg", "Bob/Bob_0001.jpg"] and p.n_duplicate_files == 2
    assert p.pairs.is_same.sum() == 3 and (~p.pairs.is_same).sum() == 2  # Ann_1 x Bob_1 dropped
    assert "(1 impostor pairs dropped from the pair list)" in p.notes[-1]
    out = p.write(tmp_path / "proto")
    assert sorted(pd.read_csv(out / "duplicates.csv").key) == ["Ann/Ann_0001.jpg", "Bob/Bob_0001.jpg"]
    meta = json.loads((out / "protocol.json").read_text())
    assert meta["counts"]["duplicates"] == 2 and meta["duplicates"]["impostor_pairs_dropped"] == 1


@pytest.mark.data
def test_rmfrd_kit_duplicates(rmfrd_root):
    """The kit's RMFRD files 3 masked photos under 7 names (wangjunkai/yangyang/zhengshuang, ...)."""
    p = build_protocol("rmfrd", rmfrd_root)
    assert p.n_duplicate_files == 7 and p.images.is_masked[p.duplicates].all()
