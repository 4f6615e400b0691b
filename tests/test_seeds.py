"""Per-image seeds (mfrbench.seeds): no two keys share a random stream; version 1 stays reproducible."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mfrbench.errors import MfrbenchError
from mfrbench.seeds import SEED_VERSION, batch_rng, image_entropy, image_rng, image_rng_v1, key_digest, pcg64_seeds


def ms1m_keys(n: int, start: int = 0) -> list[str]:
    """MS1MV2-style keys: about 70 images per identity folder."""
    return [f"m.{i // 70:07d}/{i:08d}.jpg" for i in range(start, start + n)]


def digests(keys: list[str]) -> np.ndarray:
    sha = hashlib.sha256
    return np.frombuffer(b"".join([sha(k.encode()).digest() for k in keys]), np.uint8).reshape(len(keys), 32)


def shared_streams(n: int, seed: int = 0, chunk: int = 1_000_000) -> int:
    """How many of n keys have a generator seed (PCG64 initial state) equal to another key's."""
    state = np.concatenate([pcg64_seeds(seed, digests(ms1m_keys(min(chunk, n - s), s)))[:, :2]
                            for s in range(0, n, chunk)])                                     # (n, 2) uint64
    state = state[np.lexsort((state[:, 1], state[:, 0]))]
    return int(((state[1:] == state[:-1]).all(axis=1)).sum())


def test_vectorised_seeds_are_the_generators_seeds():
    keys = ms1m_keys(300) + ["", "é/ü.png", "a" * 500]
    got = pcg64_seeds(7, digests(keys))
    for k, row in zip(keys, got):
        rng = image_rng(7, k)
        assert isinstance(rng.bit_generator, np.random.PCG64)
        assert np.array_equal(rng.bit_generator.seed_seq.generate_state(4, np.uint64), row), k
    assert np.array_equal(pcg64_seeds(2**40 + 3, digests(keys[:5]))[0],
                          np.random.SeedSequence(image_entropy(2**40 + 3, keys[0])).generate_state(4, np.uint64))


def test_image_rng_uses_the_whole_digest_and_the_seed():
    assert image_rng(5, "k").integers(1 << 62) == image_rng(5, "k").integers(1 << 62)
    assert image_rng(5, "k").integers(1 << 62) != image_rng(6, "k").integers(1 << 62)
    words = image_entropy(1, "x")
    assert words.dtype == np.uint32 and len(words) == 10
    assert words[2:].tobytes() == key_digest("x")
    assert batch_rng(0, ["a", "b"]).integers(1 << 62) != batch_rng(0, ["b", "a"]).integers(1 << 62)
    with pytest.raises(MfrbenchError, match="seed in"):
        image_rng(-1, "k")
    assert SEED_VERSION == 2


def test_version_1_is_reproduced_and_does_collide():
    # The old scheme, as mfrbench <= issue 14 wrote it, stays available to explain old outputs...
    assert image_rng_v1(3, "k0").integers(1 << 30) == np.random.default_rng(
        [3, int(hashlib.sha1(b"k0").hexdigest()[:8], 16)]).integers(1 << 30)
    # ... and its 32 bits collide at this scale (n^2 / 2^33 ~ 116 expected pairs of 10^6 keys).
    k32 = np.array([int(hashlib.sha1(k.encode()).hexdigest()[:8], 16) for k in ms1m_keys(1_000_000)], np.uint64)
    assert len(k32) - len(np.unique(k32)) > 50


def test_no_shared_stream_in_1e6_keys():
    assert shared_streams(1_000_000) == 0


@pytest.mark.slow
def test_no_shared_stream_in_1e7_keys():
    """The issue's check: 10^7 keys (about 25 s here)."""
    assert shared_streams(10_000_000) == 0
