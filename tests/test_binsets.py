"""insightface verification ``.bin`` sets: restricted reading, arcface_torch's protocol, ``mfrbench eval`` on them.

Every file here is written the way arcface_torch's tools write one
(``pickle.dump((bins, issame_list), f, protocol=pickle.HIGHEST_PROTOCOL)``), from JPEG bytes of
solid-colour 112x112 images whose embeddings are known, so every accuracy is computed by hand.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from mfrbench.binsets import arcface_accuracy, kfold_folds, pair_groups, parse_bin, read_bin, write_bin
from mfrbench.errors import DataNotFoundError, MfrbenchError
from mfrbench.evaluate import EvalConfig, evaluate
from mfrbench.protocols import PROTOCOLS, build_protocol

RED, GREEN, BLUE, GREY = (230, 30, 30), (30, 230, 30), (30, 30, 230), (128, 128, 128)


def _jpeg(rgb: tuple[int, int, int], size: int = 112) -> bytes:
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = rgb[::-1]  # BGR for OpenCV
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def _arcface_dump(path: Path, bins, issame) -> Path:
    """What arcface_torch-style tools write: a pickle of (bins, issame_list), highest protocol."""
    with open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _toy_set(n_pairs: int = 20, wrong: tuple[int, ...] = (3,)) -> tuple[list[bytes], list[bool]]:
    """Even pairs genuine (one colour twice), odd pairs impostors (two colours); the pairs in ``wrong`` are
    labelled genuine but show two colours, so every threshold gets them wrong."""
    colours = [RED, GREEN, BLUE]
    bins, same = [], []
    for i in range(n_pairs):
        c = colours[i % 3]
        if i in wrong:
            bins += [_jpeg(c), _jpeg(colours[(i + 1) % 3])]
            same.append(True)
        elif i % 2 == 0:
            bins += [_jpeg(c), _jpeg(c)]
            same.append(True)
        else:
            bins += [_jpeg(c), _jpeg(colours[(i + 1) % 3])]
            same.append(False)
    return bins, same


class ColourEmbedder:
    """Embeds a crop as its mean colour minus grey (3-d): same colour -> cosine 1, two of R/G/B -> about -0.5."""

    metric = "cosine"
    embedding_dim = 3

    def __init__(self) -> None:
        self.info = {"model": "colour", "config_hash": "colour0", "embedding_dim": 3}
        self.flips = []

    def embed(self, images: np.ndarray, *, flip: bool = False) -> np.ndarray:
        self.flips.append(flip)
        e = images.reshape(len(images), -1, 3).mean(1) - 128.0
        return (2 * e if flip else e).astype(np.float32)  # flip test: the mirror of a solid image is itself


# ------------------------------------------------------------------------------------------ reading
def test_round_trip_of_an_arcface_torch_style_file(tmp_path):
    bins, same = _toy_set(10)
    vb = read_bin(_arcface_dump(tmp_path / "lfw.bin", bins, same))
    assert vb.images == bins and vb.issame.tolist() == same and vb.n_pairs == 10
    assert read_bin(write_bin(tmp_path / "again.bin", bins, same)).images == bins


def test_numpy_labels_py2_strings_and_protocol_2_files_read(tmp_path):
    bins, same = _toy_set(10)
    for proto in (2, 4, pickle.HIGHEST_PROTOCOL):   # protocol 2 pickles bytes through _codecs.encode
        p = tmp_path / f"p{proto}.bin"
        with open(p, "wb") as f:
            pickle.dump((bins, np.array(same)), f, protocol=proto)
        assert read_bin(p).issame.tolist() == same
        with open(p, "wb") as f:
            pickle.dump(([np.frombuffer(b, np.uint8) for b in bins], [np.bool_(s) for s in same]), f, protocol=proto)
        assert read_bin(p).images == bins
    # Python 2 `str` images (SHORT_BINSTRING opcodes, how the public files hold JPEGs) read as bytes
    py2 = b"\x80\x02]q\x00(U\x02\xff\xd8U\x02\xff\xd9e]q\x01\x88a\x86q\x02."  # ([b'\xff\xd8', b'\xff\xd9'], [True])
    (tmp_path / "py2.bin").write_bytes(py2)
    vb = read_bin(tmp_path / "py2.bin")
    assert vb.images == [b"\xff\xd8", b"\xff\xd9"] and vb.issame.tolist() == [True]


class _Shell:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_pickle_that_calls_code_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bins, same = _toy_set(10)
    _arcface_dump(tmp_path / "evil.bin", bins + [_Shell()], same)
    with pytest.raises(MfrbenchError) as err:
        read_bin(tmp_path / "evil.bin")
    msg = str(err.value)
    assert "\n" not in msg and re.search(r"refused to unpickle it \(global (posix|os|nt)\.system refused\)", msg)
    assert not (tmp_path / "PWNED").exists()
    # an object array would unpickle its elements: refused at the dtype
    _arcface_dump(tmp_path / "obj.bin", bins, np.array(same, dtype=object))
    with pytest.raises(MfrbenchError, match="refused to unpickle it .*dtype '\\|O' refused"):
        read_bin(tmp_path / "obj.bin")


@pytest.mark.parametrize("obj, match", [
    ([b"a"], "expected a pair \\(images, issame_list\\), but got a list of length 1"),
    (([b"a", b"b", b"c"], [True]), "expected 2 images per pair, but got 3 images for 1 pairs"),
    (([b"a", 7], [True]), "expected every image to be encoded bytes, but found a int"),
    (([b"a", b"b"], ["yes"]), "expected issame_list to hold booleans, but found 'yes'"),
])
def test_malformed_contents_are_named(tmp_path, obj, match):
    with pytest.raises(MfrbenchError, match=match):
        read_bin(_arcface_dump(tmp_path / "bad.bin", *obj) if isinstance(obj, tuple) else _raw(tmp_path, obj))


def _raw(tmp_path: Path, obj) -> Path:
    p = tmp_path / "raw.bin"
    p.write_bytes(pickle.dumps(obj))
    return p


def test_truncated_file_is_one_line(tmp_path):
    p = _arcface_dump(tmp_path / "t.bin", *_toy_set(10))
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(MfrbenchError, match="is not a readable verification .bin"):
        read_bin(p)


# ------------------------------------------------------------------------------------------ protocol
def test_folds_are_sklearn_kfold():
    assert np.bincount(kfold_folds(25)).tolist() == [3] * 5 + [2] * 5  # sklearn: the first n % k folds longer
    assert np.all(np.diff(kfold_folds(6000)) >= 0) and np.bincount(kfold_folds(6000)).tolist() == [600] * 10


def test_groups_link_genuine_pairs_and_identical_images():
    bins, same = _toy_set(10, wrong=())
    g = pair_groups(parse_bin((bins, same)))
    assert g[0] == g[1]                  # a genuine pair
    assert g[2] != g[3]                  # an impostor pair of two different images
    assert len(set(g)) == 3              # every image is one of three JPEGs: byte-identical images join


def test_arcface_accuracy_by_hand():
    """One pair of 20 is labelled genuine but shows two colours: its fold (2 pairs) scores 1/2, the other nine 1."""
    bins, same = _toy_set(20, wrong=(3,))
    emb = np.stack([cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR).reshape(-1, 3).mean(0) - 128
                    for b in bins])
    mean, std = arcface_accuracy(emb, np.array(same))
    assert mean == pytest.approx(0.95) and std == pytest.approx(0.15)


def test_eval_scores_a_bin_with_arcface_torchs_protocol(tmp_path):
    bins, same = _toy_set(20, wrong=(3,))
    (tmp_path / "data").mkdir()
    path = _arcface_dump(tmp_path / "data" / "cfp_fp.bin", bins, same)
    model = ColourEmbedder()
    row = evaluate("colour", EvalConfig(benchmark=f"bin:{path}", n_boot=50), results_dir=tmp_path / "res",
                   cache_dir=tmp_path / "cache", progress=False, model=model)
    assert row["acc"] == pytest.approx(0.95) and row["acc_std"] == pytest.approx(0.15)
    assert row["acc_protocol"] == "10-fold (contiguous blocks of cfp_fp.bin, which has no folds), threshold from " \
                                  "the other 9"
    assert row["coverage"] == 1.0 and np.isnan(row["detect_rate"]) and all(model.flips)  # flip test by default
    assert row["n_genuine"] == 11 and row["n_impostor"] == 9
    # the named set finds the file under --root; the crops are cached with the protocol
    named = evaluate("colour", EvalConfig(benchmark="cfp-fp", root=str(tmp_path / "data"), n_boot=50),
                     results_dir=tmp_path / "res", cache_dir=tmp_path / "cache", progress=False, model=model)
    assert named["acc"] == pytest.approx(0.95) and named["benchmark"] == "cfp-fp"
    crops = sorted((tmp_path / "cache").glob("cfp-fp-*/crops/*.jpg"))
    assert len(crops) == 40 and crops[0].read_bytes() == bins[0]  # the file's JPEG bytes, not re-encoded


def test_bin_protocols_are_registered_and_missing_files_are_clear(tmp_path):
    assert {"lfw-bin", "cfp-fp", "agedb-30", "calfw", "cplfw"} <= set(PROTOCOLS.names())
    with pytest.raises(DataNotFoundError, match="agedb_30.bin not found in .*pass --root DIR"):
        build_protocol("agedb-30", tmp_path)
    with pytest.raises(DataNotFoundError, match="no file"):
        build_protocol(f"bin:{tmp_path / 'nope.bin'}")


def test_other_image_sizes_are_resized_and_undecodable_ones_counted(tmp_path):
    bins, same = _toy_set(10, wrong=())
    bins[0] = _jpeg(RED, size=96)
    bins[5] = b"not an image"
    path = _arcface_dump(tmp_path / "x.bin", bins, same)
    row = evaluate("colour", EvalConfig(benchmark=f"bin:{path}", n_boot=50), results_dir=tmp_path / "res",
                   cache_dir=tmp_path / "cache", progress=False, model=ColourEmbedder())
    assert row["coverage"] == pytest.approx(9 / 10)
    assert list((tmp_path / "cache").glob("bin-x-*/crops/00000-*.png"))


def test_arcface_accuracy_is_arcface_torchs_calculate_roc(monkeypatch):
    """With MFRBENCH_ARCFACE_TORCH set: arcface_torch's own eval/verification.py (mxnet stubbed: only its
    load_bin needs it) gives the accuracy :func:`arcface_accuracy` gives, fold for fold."""
    import sys
    import types

    root = os.environ.get("MFRBENCH_ARCFACE_TORCH")
    if not root:
        pytest.skip("set MFRBENCH_ARCFACE_TORCH=/path/to/insightface/recognition/arcface_torch to compare with "
                    "arcface_torch's eval/verification.py")
    pytest.importorskip("sklearn")
    pytest.importorskip("scipy")
    mx = types.ModuleType("mxnet")
    mx.ndarray = types.ModuleType("mxnet.ndarray")
    monkeypatch.setitem(sys.modules, "mxnet", mx)
    monkeypatch.setitem(sys.modules, "mxnet.ndarray", mx.ndarray)
    monkeypatch.syspath_prepend(str(Path(root) / "eval"))
    monkeypatch.delitem(sys.modules, "verification", raising=False)
    import verification

    for seed, n_pairs, noise in ((0, 6000, 3.5), (1, 603, 3.0)):
        rng = np.random.default_rng(seed)
        same = rng.random(n_pairs) < 0.5
        a = rng.normal(size=(n_pairs, 64))
        b = np.where(same[:, None], a, rng.normal(size=(n_pairs, 64))) + noise * rng.normal(size=(n_pairs, 64))
        emb = np.empty((2 * n_pairs, 64))
        emb[0::2], emb[1::2] = a, b
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        _, _, acc = verification.calculate_roc(np.arange(0, 4, 0.01), emb[0::2], emb[1::2], same, nrof_folds=10)
        assert arcface_accuracy(emb, same) == pytest.approx((acc.mean(), acc.std()), abs=1e-12)
