from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mfrbench.datasets import create_dataset, read_mfr2_labels, read_pairs
from mfrbench.errors import DataNotFoundError, MfrbenchError
from mfrbench.registry import UnknownNameError


def _img(path: Path, size: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 100, np.uint8)).save(path)


def test_unknown_dataset_lists_names():
    with pytest.raises(UnknownNameError, match="Available: celeba, ffhq, folder, lfw"):
        create_dataset("lfw2", "/tmp")


def test_missing_root_is_clear(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        create_dataset("lfw", tmp_path / "nope")


def test_rmfrd_fixture_tree_with_wrapper(tmp_path):
    base = tmp_path / "rmfrd" / "self-built-masked-face-recognition-dataset"
    for person in ("zhangsan", "lisi"):
        for i in range(2):
            _img(base / "AFDB_face_dataset" / person / f"0_0_{person}_{i:04d}.jpg")
        _img(base / "AFDB_masked_face_dataset" / person / f"0_0_{i}.jpg")
    (base / "AFDB_face_dataset" / "lisi" / "notes.txt").write_text("ignored")
    recs = list(create_dataset("rmfrd", tmp_path / "rmfrd").records())
    assert len(recs) == 6
    assert sum(r.is_masked for r in recs) == 2
    assert {r.identity for r in recs} == {"zhangsan", "lisi"}
    assert len({r.key for r in recs}) == 6 and all(r.source == "rmfrd" for r in recs)


def test_rmfrd_rejects_wrong_folder(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DataNotFoundError, match="AFDB_face_dataset"):
        create_dataset("rmfrd", tmp_path / "x")


def test_mfr2_fixture_with_labels_and_pairs(tmp_path):
    root = tmp_path / "mfr2"
    for name in ("AdrianDunbar", "BoJohnson"):
        for n in (1, 2, 3):
            _img(root / name / f"{name}_{n:04d}.png")
    (root / "mfr2_labels.txt").write_text(
        "AdrianDunbar, 1, no-mask\nAdrianDunbar, 2, surgical_blue\nAdrianDunbar, 3, cloth\n"
        "BoJohnson, 1, no-mask\nBoJohnson, 2, no-mask\nBoJohnson, 3, KN95\n")
    (root / "pairs.txt").write_text("AdrianDunbar 1 2\nAdrianDunbar 1 BoJohnson 3\nBoJohnson 1 4\n")
    ds = create_dataset("mfr2", root)
    recs = {r.key: r for r in ds.records()}
    assert recs["AdrianDunbar/AdrianDunbar_0002.png"].is_masked
    assert not recs["BoJohnson/BoJohnson_0001.png"].is_masked
    assert read_mfr2_labels(root / "mfr2_labels.txt")[("BoJohnson", 3)] == "KN95"
    pairs = read_pairs(ds.pairs_file, root=root, ext=".png")
    assert pairs.is_same.tolist() == [True, False, True]
    assert pairs.missing.tolist() == [False, False, True]  # BoJohnson_0004 does not exist


def test_celeba_layouts_and_landmarks(tmp_path):
    root = tmp_path / "celeba"
    for f in ("000001.jpg", "000002.jpg", "000003.jpg"):
        _img(root / "img_align_celeba" / f)
    (root / "identity_CelebA.txt").write_text("000001.jpg 7\n000002.jpg 7\n000003.jpg 9\n")
    (root / "list_landmarks_align_celeba.txt").write_text(
        "3\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n"
        "000001.jpg 69 109 106 113 77 142 73 152 108 154\n")
    recs = list(create_dataset("celeba", root).records())
    assert [r.identity for r in recs] == ["7", "7", "9"]
    assert recs[0].lmk5 == (69, 109, 106, 113, 77, 142, 73, 152, 108, 154) and recs[1].lmk5 is None
    (root / "identity_CelebA.txt").unlink()
    with pytest.raises(DataNotFoundError, match="identity_CelebA.txt"):
        create_dataset("celeba", root)


def test_ffhq_nested_and_masked_photos(tmp_path):
    _img(tmp_path / "ffhq" / "00000" / "00001.png")
    _img(tmp_path / "ffhq" / "00000" / "00000.png")
    _img(tmp_path / "ffhq" / "01000" / "01000.png")
    keys = [r.key for r in create_dataset("ffhq", tmp_path / "ffhq").records()]
    assert keys == ["00000/00000.png", "00000/00001.png", "01000/01000.png"]
    recs = list(create_dataset("masked-photos", tmp_path / "ffhq").records(limit=2))
    assert len(recs) == 2 and all(r.is_masked and r.identity is None for r in recs)


def test_lfw_pairs_official_file(lfw_root):
    pairs = read_pairs(lfw_root / "pairs_full_view2.txt", root=lfw_root)
    assert len(pairs) == 6000 and pairs.fold.nunique() == 10
    assert pairs.groupby("fold").is_same.sum().tolist() == [300] * 10
    kit = read_pairs(lfw_root / "pairs.txt", root=lfw_root)
    assert len(kit) == 1800 and not kit.missing.any()  # the kit ships every image folds 1-3 need
    assert pairs.missing.any()  # the full list names images that are not in the kit


def test_pairs_header_mismatch_is_error(tmp_path):
    (tmp_path / "pairs.txt").write_text("2\t1\nA 1 2\nA 1 B 1\n")
    with pytest.raises(MfrbenchError, match="header says 2 folds"):
        read_pairs(tmp_path / "pairs.txt")


def test_real_kit_counts(celeba_root, lfw_root):
    assert create_dataset("celeba", celeba_root).count() == 960
    recs = list(create_dataset("lfw", lfw_root).records(limit=5))
    assert recs[0].key.count("/") == 1 and recs[0].identity == recs[0].key.split("/")[0]


def test_synthetic_is_deterministic_and_labelled(tmp_path):
    a = create_dataset("synthetic", tmp_path / "a", identities=3, per_identity=2, seed=5)
    b = create_dataset("synthetic", tmp_path / "b", identities=3, per_identity=2, seed=5)
    ra, rb = list(a.records()), list(b.records())
    assert len(ra) == 6 and all(r.source == "synthetic" and r.identity.startswith("synthetic-") for r in ra)
    for x, y in zip(ra, rb):
        assert Path(x.path).read_bytes() == Path(y.path).read_bytes()
        assert x.lmk68 == y.lmk68 and len(x.lmk68) == 136 and len(x.lmk5) == 10
