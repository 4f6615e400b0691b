"""The evaluator's metric rules end to end, on tiny synthetic benchmarks (no data kit, no detector).

Each image encodes (identity, image) in its top-left pixel; a table embedder maps that to a
chosen embedding, and alignment is replaced by the images themselves, so every score is known.
These tests call only :func:`mfrbench.evaluate.evaluate` and :func:`mfrbench.protocols.build_protocol`,
so they run unchanged against older code (the docstrings say what 4139fb7 gave).
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mfrbench.errors import MfrbenchError
from mfrbench.evaluate import EvalConfig, evaluate
from mfrbench.metrics import FARResolutionWarning, operating_points, similarity, verification_accuracy
from mfrbench.protocols import build_protocol


def _write_face(path: Path, ident: int, idx: int) -> None:
    arr = np.full((112, 112, 3), 128, np.uint8)
    arr[0, 0, :2] = ident, idx
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _table_embedding(model, path) -> np.ndarray:
    """What the table embedder gives the image at ``path`` (read from its pixel, as the model does)."""
    px = np.asarray(Image.open(path))[0, 0]
    return model.table[(int(px[0]), int(px[1]))]


class TableEmbedder:
    """Embeds an image as ``table[(red, green)]`` of its top-left pixel."""

    metric = "cosine"

    def __init__(self, table: dict[tuple[int, int], np.ndarray]) -> None:
        self.table = table
        self.embedding_dim = len(next(iter(table.values())))
        digest = hashlib.sha1(np.stack([table[k] for k in sorted(table)]).tobytes()).hexdigest()[:10]
        self.info = {"model": "table", "config_hash": digest, "embedding_dim": self.embedding_dim}

    def embed(self, images: np.ndarray, *, flip: bool = False) -> np.ndarray:
        return np.stack([self.table[(int(im[0, 0, 0]), int(im[0, 0, 1]))] for im in images]).astype(np.float32)


@pytest.fixture(autouse=True)
def no_alignment(monkeypatch):
    """The synthetic images are their own 112x112 crops."""

    def prepare_images(proto, cache_dir, **kw):
        df = proto.images.copy()
        df["crop_path"], df["how"] = df.src_path, "detected"
        return df

    monkeypatch.setattr("mfrbench.protocols.prepare_images", prepare_images)


def _folder_set(root: Path, n_ids: int, per: int, seed: int = 0, noise: float = 1.5, dim: int = 16):
    """``root/{masked,unmasked}/p<i>/<j>.png`` and the table embedder for them."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_ids, dim))
    table = {}
    for i in range(n_ids):
        for j in range(2 * per):
            sub = "masked" if j < per else "unmasked"
            _write_face(root / sub / f"p{i:02d}" / f"{j}.png", i, j)
            table[(i, j)] = centers[i] + rng.normal(scale=noise, size=dim)
    return TableEmbedder(table)


def _eval(tmp_path: Path, benchmark: str, root: Path, model, **cfg):
    return evaluate("table", EvalConfig(benchmark=benchmark, root=str(root), flip=False, n_boot=200, **cfg),
                    results_dir=tmp_path / "res", cache_dir=tmp_path / "cache", progress=False, model=model)


def _pair_scores(proto, model, ap_name: str):
    """Scores, labels and probe folds of an all-pairs set, straight from the table."""
    ap = next(a for a in proto.allpairs if a.name == ap_name)
    imgs = proto.images.set_index("image_id")

    def emb(i):
        return _table_embedding(model, imgs.loc[i].src_path)

    if ap.same_set:
        ia, ib = np.triu_indices(len(ap.probe), k=1)
        a, b = ap.probe[ia], ap.probe[ib]
    else:
        a, b = np.repeat(ap.probe, len(ap.gallery)), np.tile(ap.gallery, len(ap.probe))
    s = similarity(np.stack([emb(i) for i in a]), np.stack([emb(i) for i in b]))
    same = imgs.identity.loc[a].to_numpy() == imgs.identity.loc[b].to_numpy()
    return s, same, imgs.fold.loc[a].to_numpy(), a, b


def test_allpairs_accuracy_is_held_out_on_the_streamed_path(tmp_path):
    """All-pairs accuracy is 10-fold by probe identity with thresholds from the other folds, on the
    streamed path (``exact_limit=0``, as for full RMFRD) exactly as on the in-memory one.

    4139fb7 streamed path: acc = the best threshold on the very pairs it scores (0.758 here,
    ``acc_protocol`` "balanced, best threshold (streamed; optimistic)"), above the held-out 0.734.
    """
    root = tmp_path / "set"
    model = _folder_set(root, n_ids=20, per=3)
    streamed = _eval(tmp_path, "folder", root, model, exact_limit=0)
    in_memory = _eval(tmp_path, "folder", root, model)
    s, same, folds, _, _ = _pair_scores(build_protocol("folder", root), model, "masked-unmasked")
    exact = verification_accuracy(s, same, folds=folds, balanced=True)
    best = max((np.mean(same & (s >= t)) / same.mean() + np.mean(~same & (s < t)) / (~same).mean()) / 2
               for t in np.unique(s))
    assert streamed["acc"] == pytest.approx(exact.mean, abs=2e-3) and streamed["acc"] < best - 0.01
    assert in_memory["acc"] == streamed["acc"] and in_memory["acc_std"] == streamed["acc_std"]
    assert streamed["acc_protocol"] == ("balanced accuracy, 10-fold by probe identity, thresholds from the other "
                                        "folds, histogram bins=65536")
    assert streamed["ci_method"].startswith("TAR@FAR: no CI (3.6e+03 pairs, streamed); Rank-k: identity bootstrap")
    assert in_memory["ci_method"] == ("TAR@FAR: identity bootstrap (cluster), 200 resamples of 20 identities, "
                                      "percentile 95 %; Rank-k: identity bootstrap (cluster), 200 resamples of 20 "
                                      "probe identities, percentile 95 % (gallery fixed)")
    for k in ("tar_far_1e-2", "n_genuine", "n_impostor"):
        assert in_memory[k] == streamed[k]
    assert in_memory["tar_far_1e-2_lo"] <= in_memory["tar_far_1e-2"] <= in_memory["tar_far_1e-2_hi"]
    row = pd.read_csv(tmp_path / "res" / "evals.csv").iloc[-1]
    assert row.acc_protocol == in_memory["acc_protocol"] and row.ci_method == in_memory["ci_method"]


@pytest.mark.parametrize("exact_limit", [0, 5_000_000])
def test_nan_embeddings_are_an_error_naming_the_images(tmp_path, exact_limit):
    """An all-NaN gallery: 4139fb7 raised ``RuntimeError: bincount only supports 1-d non-negative integral
    inputs`` from the all-pairs pass (and its identification step gave Rank-1 = 100 % for such a gallery)."""
    root = tmp_path / "set"
    model = _folder_set(root, n_ids=3, per=2)
    for i in range(3):
        for j in range(2, 4):  # every unmasked (gallery) image
            model.table[(i, j)] = np.full(model.embedding_dim, np.nan)
    first = root / "unmasked" / "p00" / "2.png"
    with pytest.raises(MfrbenchError, match=r"table gives NaN or inf embeddings for 6 of 12 images \(first: "
                                            + str(first).replace(".", r"\.")):
        _eval(tmp_path, "folder", root, model, exact_limit=exact_limit)


def test_duplicate_across_identities_is_counted_and_kept_out_of_impostor_pairs(tmp_path):
    """A byte-identical file under two identities: counted (2 files), noted, never an impostor pair.

    4139fb7: no ``n_duplicates``, 285 instead of 255 masked-unmasked impostor pairs, and 150 instead
    of 120 masked-masked ones, among them the copy against itself, an "impostor" at cosine 1.0.
    """
    root = tmp_path / "set"
    model = _folder_set(root, n_ids=6, per=3)
    shutil.copy(root / "masked" / "p00" / "0.png", root / "masked" / "p01" / "dup.png")
    proto = build_protocol("folder", root)
    dup = proto.images[proto.images.image_id.isin(proto.duplicates)]
    assert sorted(dup.key) == ["masked/p00/0.png", "masked/p01/dup.png"] and proto.n_duplicate_files == 2
    assert any("2 image files byte-identical to a file of another identity" in n for n in proto.notes)
    row = _eval(tmp_path, "folder", root, model)
    # 19 probes x 18 gallery images: 57 genuine (3 x 3 per person + the copy with p01's 3), 285 impostor,
    # of which the two flagged probes' 2 x 15 are dropped.
    s, same, _, a, b = _pair_scores(proto, model, "masked-unmasked")
    flagged = np.isin(a, proto.duplicates) | np.isin(b, proto.duplicates)
    assert row["n_duplicates"] == 2 and row["n_genuine"] == same.sum()
    assert row["n_impostor"] == (~same & ~flagged).sum() == (~same).sum() - 30
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FARResolutionWarning)
        exact = operating_points(s[same | ~flagged], same[same | ~flagged], far=[1e-2])
    assert row["tar_far_1e-2"] == exact.tar[0]
    bd = {b["subset"]: b for b in row["breakdown"]}
    s2, same2, _, a2, b2 = _pair_scores(proto, model, "masked-masked")
    kept = same2 | ~(np.isin(a2, proto.duplicates) | np.isin(b2, proto.duplicates))
    assert bd["pair:masked-masked"]["n_impostor"] == (~same2 & kept).sum()
    assert s2[~kept].max() == pytest.approx(1.0)  # the copy against itself is among the dropped pairs
    assert "kept out of impostor pairs" in pd.read_csv(tmp_path / "res" / "evals.csv").iloc[-1].notes


def _mfr2_tree(root: Path, n_ids: int = 6, seed: int = 0, dim: int = 16):
    """An MFR2-layout tree: ``<Name>/<Name>_NNNN.png`` (2 unmasked + 3 masked each), labels, pairs.txt."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_ids, dim))
    names = [f"Person{chr(65 + i)}" for i in range(n_ids)]
    table, labels = {}, []
    for i, name in enumerate(names):
        for n in range(1, 6):
            _write_face(root / name / f"{name}_{n:04d}.png", i, n)
            table[(i, n)] = centers[i] + rng.normal(scale=1.2, size=dim)
            labels.append(f"{name}, {n}, {'no-mask' if n <= 2 else 'surgical_blue'}")
    (root / "mfr2_labels.txt").write_text("\n".join(labels) + "\n")
    lines = []
    for i, name in enumerate(names):  # interleaved genuine / impostor lines, no header, no folds
        other = names[(i + 1) % n_ids]
        lines += [f"{name} 1 3", f"{name} 2 {other} 4", f"{name} 2 4", f"{name} 1 {other} 5"]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")

    return TableEmbedder(table), names


def test_mfr2_tar_at_far_from_all_cross_identity_pairs(tmp_path):
    """MFR2: TAR@FAR from every unordered pair of its images, accuracy from pairs.txt.

    4139fb7 read TAR@FAR from pairs.txt alone (here 12 impostor pairs, smallest non-zero FAR 0.083;
    the real file's 424 give 2.4e-3 > 1e-3), with no all-pairs set in the protocol.
    """
    root = tmp_path / "mfr2"
    model, _ = _mfr2_tree(root)
    proto = build_protocol("mfr2", root)
    assert [a.name for a in proto.allpairs] == ["all-pairs"] and proto.allpairs[0].same_set
    row = _eval(tmp_path, "mfr2", root, model)
    n = 6 * 5
    assert row["n_genuine"] == 6 * 10 and row["n_impostor"] == n * (n - 1) // 2 - 60  # 375 cross-identity pairs
    imgs = proto.images.set_index("image_id")

    def emb(i):
        return _table_embedding(model, imgs.loc[i].src_path)

    ia, ib = np.triu_indices(n, k=1)
    ids = proto.images.image_id.to_numpy()
    s = similarity(np.stack([emb(i) for i in ids[ia]]), np.stack([emb(i) for i in ids[ib]]))
    same = imgs.identity.loc[ids[ia]].to_numpy() == imgs.identity.loc[ids[ib]].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FARResolutionWarning)
        exact = operating_points(s, same, far=[1e-2])
    assert row["tar_far_1e-2"] == exact.tar[0] and np.isfinite(row["tar_far_1e-2_lo"])
    assert row["acc_protocol"] == ("10-fold (contiguous blocks of pairs.txt, which has no folds), threshold from the "
                                   "other 9")
    assert any("from the 'all-pairs' set (375 impostor pairs)" in x for x in row["notes"].split(" | "))
    assert {"pair:all-pairs", "mask:surgical_blue"} <= {b["subset"] for b in row["breakdown"]}
