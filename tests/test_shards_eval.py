"""eval's embedding step by shards: with a batch-independent embedder the assembled embeddings equal one
process's (a real network batched differently may differ in the last float bits); a missing shard is named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mfrbench.errors import MfrbenchError
from mfrbench.evaluate import EvalConfig, Prepared, embed, save_embeddings
from mfrbench.imageio import save_image
from mfrbench.merge import shard_embeddings_path
from mfrbench.shards import Shard


class PixelEmbedder:
    """A deterministic per-image embedder (a fixed projection of 8x8-pooled pixels): batch-independent."""

    embedding_dim = 16
    metric = "cosine"

    def __init__(self, config_hash: str = "pix000000001") -> None:
        self.info = {"model": "pixels", "config_hash": config_hash, "embedding_dim": 16, "backbone": "none"}
        self._w = np.random.default_rng(0).standard_normal((14 * 14 * 3, 16)).astype(np.float32)

    def embed(self, images: np.ndarray, *, flip: bool = False) -> np.ndarray:
        x = images.reshape(len(images), 14, 8, 14, 8, 3).mean(axis=(2, 4)).reshape(len(images), -1)
        if flip:
            x = x + images[:, :, ::-1].reshape(len(images), 14, 8, 14, 8, 3).mean(axis=(2, 4)).reshape(len(images), -1)
        x = x.astype(np.float32) / 255.0
        # row by row: a BLAS matrix product may round a row differently with the batch around it (seen on an
        # AVX-512 CPU), and this stand-in must be batch-independent for the test to be about the shards
        return np.stack([row @ self._w for row in x]) if len(x) else np.zeros((0, 16), np.float32)


def _prep(tmp_path, work: str) -> Prepared:
    crops = tmp_path / "crops"
    rng = np.random.default_rng(1)
    paths = []
    for i in range(40):
        p = crops / f"id{i % 5}" / f"{i}.png"
        if not p.exists():
            save_image(p, rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
        paths.append(str(p))
    ok = np.ones(40, bool)
    ok[[3, 17]] = False  # unusable images are never embedded
    images = pd.DataFrame({"crop_path": [p if o else "" for p, o in zip(paths, ok)]})
    return Prepared(proto=None, images=images, ok=ok, used=ok.copy(), work=tmp_path / work, detect_rate=1.0,
                    notes=[])


def test_embedding_shards_assemble_to_one_process(tmp_path):
    cfg = EvalConfig(benchmark="folder")
    model = PixelEmbedder()
    one = embed(model, _prep(tmp_path, "one"), cfg, progress=False)
    prep = _prep(tmp_path, "sharded")
    for i in (0, 2):
        assert embed(model, prep, cfg, progress=False, shard=Shard(i, 3)) is None
    with pytest.raises(MfrbenchError, match=r"^embeddings of shard 1/3 missing in .* \(have 0/3, 2/3\)"):
        embed(model, prep, cfg, progress=False)
    embed(model, prep, cfg, progress=False, shard=Shard(1, 3))
    assembled = embed(model, prep, cfg, progress=False)
    assert np.array_equal(assembled, one) and np.abs(one[prep.ok]).sum() > 0
    cache = next(prep.work.glob("emb-*-flip1.npz"))
    assert cache.name == "emb-pix000000001-flip1.npz"
    # a shard file of another model is refused, naming the file
    other = PixelEmbedder("otherhash0001")
    prep2 = _prep(tmp_path, "mixed")
    embed(model, prep2, cfg, progress=False, shard=Shard(0, 2))
    embed(other, prep2, cfg, progress=False, shard=Shard(1, 2))  # then copied in under this model's name
    w = prep2.work
    (w / "emb-otherhash0001-flip1.shard-1-of-2.npz").rename(w / "emb-pix000000001-flip1.shard-1-of-2.npz")
    with pytest.raises(MfrbenchError, match=r"shard-1-of-2.npz holds embeddings of another model"):
        embed(model, prep2, cfg, progress=False)


def test_embedding_shards_of_two_splits_are_refused(tmp_path):
    cfg = EvalConfig(benchmark="folder")
    model = PixelEmbedder()
    prep = _prep(tmp_path, "w")
    embed(model, prep, cfg, progress=False, shard=Shard(0, 1))
    cache = prep.work / "emb-pix000000001-flip1.npz"
    stale = shard_embeddings_path(cache, Shard(0, 2))
    save_embeddings(stale, np.zeros((0, 16), np.float32), [], model.info, flip=True)
    with pytest.raises(MfrbenchError, match="embedding shards of 1 and 2 shards"):
        embed(model, prep, cfg, progress=False)
    stale.unlink()
    assert embed(model, prep, cfg, progress=False).shape == (40, 16)


@pytest.mark.data
def test_eval_cli_by_shards_scores_like_one_process(kit, rmfrd_root, tmp_path):
    """`eval --shard i/N` on each shard, then `eval`: the same row as one unsharded eval (dlib, a tiny RMFRD)."""
    import shutil

    from click.testing import CliRunner

    from mfrbench.cli import cli

    pytest.importorskip("dlib", reason="dlib-bin not installed")
    if not (kit / "models" / "dlib" / "dlib_face_recognition_resnet_model_v1.dat").is_file():
        pytest.skip("dlib model not in the data kit")
    root = tmp_path / "set"
    names = sorted(d.name for d in (rmfrd_root / "AFDB_masked_face_dataset").iterdir())[:2]
    for n in names:
        for sub, tree in (("masked", "AFDB_masked_face_dataset"), ("unmasked", "AFDB_face_dataset")):
            (root / sub / n).mkdir(parents=True)
            for f in sorted((rmfrd_root / tree / n).iterdir())[:2]:
                shutil.copy(f, root / sub / n / f.name)

    def ev(cache: str, *extra: str):
        r = CliRunner().invoke(cli, ["eval", "--model", "dlib", "--benchmark", "folder", "--root", str(root),
                                     "--results", str(tmp_path / f"res-{cache}"), "--cache", str(tmp_path / cache),
                                     "--bootstrap", "20", "--no-flip", *extra])
        assert r.exit_code == 0, r.output
        return r.output

    one = ev("one")
    assert "shard 0/2:" in ev("sharded", "--shard", "0/2")
    r = CliRunner().invoke(cli, ["eval", "--model", "dlib", "--benchmark", "folder", "--root", str(root), "--results",
                                 str(tmp_path / "res-sharded"), "--cache", str(tmp_path / "sharded"), "--no-flip"])
    assert r.exit_code != 0 and "embeddings of shard 1/2 missing" in r.output
    ev("sharded", "--shard", "1/2")
    both = ev("sharded")
    import re

    def metrics(out: str) -> str:  # the metric columns of the result line, not the model name or the seconds
        return re.search(r"folder \| dlib \| (acc .*) \| \d+ s$", out, re.M).group(1)

    assert metrics(both) == metrics(one) and "embed (dlib)" not in both  # assembled from the shards, not redone
