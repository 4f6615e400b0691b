"""Recognizer data: sources (manifests, folders), mixing, identity split, samplers, augmentation."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mfrbench.errors import MfrbenchError
from mfrbench.manifest import ManifestWriter
from mfrbench.recognizers.data import (
    EpochBatchSampler,
    FaceImages,
    PKBatchSampler,
    Sample,
    build_train_data,
    collate,
    mix_by_mask_ratio,
    read_source,
    split_identities,
)
from mfrbench.synthetic import materialize


def write_crops(root: Path, identities: int = 6, per_identity: int = 4, seed: int = 0) -> Path:
    """SYNTHETIC 112x112 faces re-encoded as JPEG in ``root/crops/<identity>/<n>.jpg``."""
    src, table = materialize(root / "png", identities=identities, per_identity=per_identity, size=112, seed=seed)
    out = root / "crops"
    for key in table["key"]:
        dst = out / key.replace(".png", ".jpg")
        dst.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dst), cv2.imread(str(src / key)), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return out


def write_manifest(crops: Path, out: Path, *, kind: str, config: dict, extra_missing: int = 0,
                   extra_meta: dict | None = None) -> Path:
    """A manifest in ``out`` whose rows point at the crops (relative ``out_path``, as the stages write)."""
    w = ManifestWriter(out, kind=kind, config=config, resume=False)
    for f in sorted(crops.rglob("*.jpg")):
        w.add({"key": f"{f.parent.name}/{f.name}", "identity": f.parent.name, "status": "ok",
               "out_path": str(Path("..") / crops.name / f.parent.name / f.name), "is_masked": kind == "masked"})
    for i in range(extra_missing):
        w.add({"key": f"gone/{i}.jpg", "identity": "synthetic-0000", "status": "ok", "out_path": f"gone/{i}.jpg"})
    w.close(extra_meta=extra_meta)
    return out


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    return write_crops(tmp_path_factory.mktemp("rec_data"))


def test_folder_source(crops):
    src = read_source(crops)
    assert src.kind == "folder" and src.generator == "none" and len(src.samples) == 24 and src.missing == 0
    assert {s.identity for s in src.samples} == {f"synthetic-{i:04d}" for i in range(6)}


def test_manifest_sources_masked_kind_generator_and_missing_files(crops, tmp_path):
    aligned = write_manifest(crops, crops.parent / "aligned_m", kind="aligned", config={"stage": "align"})
    masked = write_manifest(crops, crops.parent / "masked_m", kind="masked", config={"stage": "generate"},
                            extra_missing=2, extra_meta={"generator": {"family": "mtf", "variant": "mtf",
                                                                       "config_hash": "abc", "maps": "exact"}})
    a, m = read_source(aligned), read_source(masked)
    assert a.kind == "aligned" and a.generator == "none" and not any(s.masked for s in a.samples)
    assert m.kind == "masked" and m.generator == "mtf" and all(s.masked for s in m.samples) and m.missing == 2
    data = build_train_data([str(aligned), str(masked)], val_identities=0)
    # Same paths in both manifests are one image; the note reports the missing rows.
    assert len(data.train) == 24 and data.generator == "mtf"
    assert data.identity.row() == {"generator": "mtf", "generator_family": "mtf", "generator_hash": "abc"}
    assert any("skipped 2 rows whose image file is missing" in n for n in data.notes)


def _samples(n_ids: int, per: int, masked: bool = False, tag: str = "") -> list[Sample]:
    return [Sample(f"/x/{tag}{i}_{j}.jpg", f"id{i}", masked) for i in range(n_ids) for j in range(per)]


def test_mask_ratio_mixing():
    pool = _samples(6, 4) + _samples(6, 4, masked=True, tag="m")
    mixed = mix_by_mask_ratio(pool, 0.25, seed=0)
    assert sum(s.masked for s in mixed) == 8 and sum(not s.masked for s in mixed) == 24
    assert mix_by_mask_ratio(pool, 0.25, seed=0) == mixed                 # deterministic
    assert all(s.masked for s in mix_by_mask_ratio(pool, 1.0, seed=0))
    assert mix_by_mask_ratio(pool, None, seed=0) is pool
    with pytest.raises(MfrbenchError, match="needs masked images"):
        mix_by_mask_ratio(_samples(3, 2), 0.5, seed=0)


def test_identity_split_is_disjoint_and_sized():
    train, val = split_identities(_samples(10, 3) + [Sample("/x/solo.jpg", "solo", False)], 0.2, seed=1)
    assert not {s.identity for s in train} & {s.identity for s in val}
    assert len({s.identity for s in val}) == 2 and "solo" not in {s.identity for s in val}  # needs >= 2 images


def test_labels_are_contiguous(crops):
    data = build_train_data([str(crops)], val_identities=2, seed=0)
    assert data.num_classes == 4 and sorted(set(data.train_labels.tolist())) == [0, 1, 2, 3]
    assert [data.classes[k] for k in data.train_labels] == [s.identity for s in data.train]
    assert len(data.val) == 8 and sorted(set(data.val_labels.tolist())) == [0, 1]


def test_bad_inputs_have_clear_messages(tmp_path, crops):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MfrbenchError, match=re.escape("empty dataset: no readable images in")):
        build_train_data([str(tmp_path / "empty")])
    one = tmp_path / "one" / "only_person"
    one.mkdir(parents=True)
    for f in sorted((crops / "synthetic-0000").iterdir()):
        (one / f.name).write_bytes(f.read_bytes())
    with pytest.raises(MfrbenchError, match=re.escape("need at least 2 training identities, but the data has 1")):
        build_train_data([str(tmp_path / "one")])
    with pytest.raises(MfrbenchError, match="not a manifest"):
        build_train_data([str(tmp_path / "nope")])


def test_triplet_excludes_single_image_identities_with_a_note(crops, tmp_path):
    root = tmp_path / "mixed"
    for d in sorted(crops.iterdir()):
        (root / d.name).mkdir(parents=True)
        files = sorted(d.iterdir())[: 1 if d.name.endswith("5") else 4]
        for f in files:
            (root / d.name / f.name).write_bytes(f.read_bytes())
    data = build_train_data([str(root)], val_identities=0, metric_loss=True)
    assert "synthetic-0005" not in data.classes
    assert any("excluded 1 identities with a single image" in n for n in data.notes)
    assert "synthetic-0005" in build_train_data([str(root)], val_identities=0).classes  # fine for softmax/margin


def test_epoch_sampler_shards_ranks_and_resumes_mid_epoch():
    full = list(EpochBatchSampler(40, 8, seed=3))
    assert len(full) == 5 and sorted(i for b in full for i, _ in b) == list(range(40))
    r0, r1 = EpochBatchSampler(40, 8, seed=3, rank=0, world=2), EpochBatchSampler(40, 8, seed=3, rank=1, world=2)
    b0, b1 = list(r0), list(r1)
    assert len(b0) == len(b1) == 5 and all(len(b) == 4 for b in b0)
    assert not {i for b in b0 for i, _ in b} & {i for b in b1 for i, _ in b}
    s = EpochBatchSampler(40, 8, seed=3)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(1, start=2)
    assert list(s) == e1[2:] and e1 != full and all(ep == 1 for b in e1 for _, ep in b)


def test_pk_sampler_batches_p_identities_times_k():
    labels = np.repeat(np.arange(10), 3)
    s = PKBatchSampler(labels, 12, 4, seed=0)
    batches = list(s)
    assert len(batches) == 30 // 12
    for b in batches:
        ids = labels[[i for i, _ in b]]
        assert len(b) == 12 and sorted(np.unique(ids, return_counts=True)[1].tolist()) == [4, 4, 4]
    r0 = list(PKBatchSampler(labels, 12, 2, seed=0, rank=0, world=2))
    r1 = list(PKBatchSampler(labels, 12, 2, seed=0, rank=1, world=2))
    assert len(r0) == len(r1) and r0 != r1 and all(len(b) == 6 for b in r0 + r1)
    with pytest.raises(MfrbenchError, match="must be a multiple of --images-per-identity"):
        PKBatchSampler(labels, 10, 4, seed=0)


def test_images_decode_and_augmentation_is_a_function_of_seed_epoch_index(crops):
    samples = read_source(crops).samples
    ds = FaceImages(samples, np.zeros(len(samples)), train=True, seed=5, jitter=0.2)
    a, _ = ds[(3, 0)]
    b, _ = FaceImages(samples, np.zeros(len(samples)), train=True, seed=5, jitter=0.2)[(3, 0)]
    c, _ = ds[(3, 1)]
    plain, _ = FaceImages(samples, np.zeros(len(samples)), train=False)[3]
    assert a.shape == (3, 112, 112) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, plain)


def test_unreadable_images_are_dropped_and_counted(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), np.full((112, 112, 3), 90, np.uint8))
    ds = FaceImages([Sample(str(good), "a", False), Sample(str(bad), "a", False)], np.zeros(2), train=False)
    images, labels, dropped = collate([ds[0], ds[1]])
    assert images.shape == (1, 3, 112, 112) and dropped == 1


def test_gray_augment_makes_equal_channels_and_gray_zero_keeps_the_old_stream():
    from mfrbench.recognizers.data import augment

    img = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    g = augment(img, np.random.default_rng(1), flip=False, jitter=0.0, gray=1.0)
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    assert not (img[..., 0] == img[..., 1]).all()
    old = augment(img, np.random.default_rng(5), flip=True, jitter=0.1)
    assert (augment(img, np.random.default_rng(5), flip=True, jitter=0.1, gray=0.0) == old).all()
