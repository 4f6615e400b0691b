"""NaN / inf embeddings and scores are refused with a message, never scored."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from mfrbench.errors import MfrbenchError
from mfrbench.metrics import identification_ranks, roc_curve, streamed_roc
from mfrbench.metrics.identification import ranks_from_identity_scores


def test_all_nan_gallery_is_an_error_not_rank1():
    """4139fb7 returned ranks [0, 0, 0, 0, 0] here: Rank-1 = 100 % for a gallery of NaN embeddings."""
    P = np.random.default_rng(0).normal(size=(5, 8))
    G = np.full((4, 8), np.nan)
    msg = "Expected finite gallery embeddings, but 4 of 4 rows hold NaN or inf (first rows: [0, 1, 2, 3])"
    with pytest.raises(ValueError, match=re.escape(msg)):
        identification_ranks(P, [0, 1, 2, 3, 0], G, [0, 1, 2, 3])
    P[2, 3] = np.inf
    with pytest.raises(ValueError, match=re.escape("Expected finite probe embeddings, but 1 of 5 rows")):
        identification_ranks(P, [0, 1, 2, 3, 0], np.ones((4, 8)), [0, 1, 2, 3])


def test_nan_identity_scores_are_an_error():
    with pytest.raises(ValueError, match=re.escape("Expected finite scores, but 1 probe rows hold NaN or inf "
                                                   "(first: [1])")):
        ranks_from_identity_scores([[0.9, 0.1], [np.nan, np.nan]], [0, 1])


@pytest.mark.parametrize("same", [False, True])
def test_streamed_roc_refuses_nan_embeddings(same):
    """4139fb7 raised ``RuntimeError: bincount only supports 1-d non-negative integral inputs``."""
    A = np.random.default_rng(1).normal(size=(6, 4))
    A[4] = np.nan
    msg = "Expected finite embeddings `A`, but 1 of 6 rows hold NaN or inf (first rows: [4])"
    with pytest.raises(ValueError, match=re.escape(msg)):
        streamed_roc(A, None if same else A[::-1].copy(), [0, 0, 1, 1, 2, 2], None if same else [0, 0, 1, 1, 2, 2],
                     far=[0.1])


def test_streamed_roc_refuses_scores_beyond_float32():
    A = np.ones((3, 4), np.float64) * 1e20
    with pytest.raises(ValueError, match="Expected embeddings whose dot scores fit in float32"):
        streamed_roc(A, None, [0, 1, 2], metric="dot", far=[0.1])


def test_nan_scores_message_counts_them():
    with pytest.raises(ValueError, match=re.escape("found 2 NaN or inf (first at index [1, 3])")):
        roc_curve([0.1, np.nan, 0.3, np.inf], [0, 1, 0, 1])


class _NaNModel:
    """Returns NaN for images whose top-left red value is odd."""

    info = {"model": "nanny", "config_hash": "n1"}
    embedding_dim = 4

    def embed(self, images, *, flip=False):
        out = np.ones((len(images), 4), np.float32)
        out[images[:, 0, 0, 0] % 2 == 1] = np.nan
        return out


def _crops(tmp_path, reds):
    from mfrbench.imageio import save_image

    paths = []
    for i, r in enumerate(reds):
        img = np.zeros((112, 112, 3), np.uint8)
        img[0, 0, 0] = r
        paths.append(str(tmp_path / f"c{i}.png"))
        save_image(paths[-1], img)
    return paths


def test_embed_images_names_the_nan_images_and_writes_no_cache(tmp_path):
    """4139fb7 returned the NaN rows (and cached them); the evaluator then scored them."""
    from mfrbench.evaluate import embed_images

    paths = _crops(tmp_path, [0, 1, 2, 3, 5])
    cache = tmp_path / "emb.npz"
    msg = f"nanny gives NaN or inf embeddings for 3 of 5 images (first: {paths[1]}, {paths[3]}, {paths[4]})"
    with pytest.raises(MfrbenchError, match=re.escape(msg)):
        embed_images(_NaNModel(), paths, flip=False, cache=cache, progress=False)
    assert not cache.exists()


def test_cached_nan_embeddings_are_refused(tmp_path):
    from mfrbench.evaluate import embed_images

    paths = _crops(tmp_path, [0, 2])
    cache = tmp_path / "emb.npz"
    np.savez(cache, emb=np.array([[1, 1, 1, 1], [np.nan] * 4], np.float32), keys=np.array(paths),
             meta=np.array(json.dumps({"model": "nanny", "config_hash": "n1", "embedding_dim": 4})))
    with pytest.raises(MfrbenchError, match=re.escape(f"for 1 of 2 images (first: {paths[1]})")):
        embed_images(_NaNModel(), paths, flip=False, cache=cache, progress=False)
