"""Per-image randomness that never collides, and the digest of a key that shards and seeds share.

Every image's random stream is a function of (run seed, image key) only, so outputs do not
depend on batching, workers, shards, order or resume. How the two are turned into a stream is
versioned; a manifest records the version it was made with in ``manifest.json``
(``"seed_version"``; manifests without the field are version 1):

* **version 1** (mfrbench before issue 15): ``numpy.random.default_rng([seed, k])`` with ``k``
  the first 8 hex digits (32 bits) of ``sha1(key)``; a batch generator used
  ``default_rng([seed, k_1, ..., k_B])``. 32 bits collide: by the birthday bound about
  ``n^2 / 2^33`` pairs of n keys share a stream (7,825 images of 5,822,653 MS1MV2-style keys).
  :func:`image_rng_v1` reproduces it, to explain old outputs.
* **version 2** (now): ``numpy.random.default_rng(SeedSequence(entropy))`` with ``entropy`` the
  64-bit seed (2 words) followed by the whole 256-bit ``sha256(key)`` digest (8 words), all
  little-endian ``uint32``. SeedSequence hashes all 10 words into its 128-bit pool, so two keys
  share a stream only if 128-bit hashes collide (about ``n^2 / 2^129``: never, in practice);
  ``tests/test_seeds.py`` checks 10^7 keys by recomputing the generators' seeds vectorised
  (:func:`pcg64_seeds`).

The same digest assigns a key to a shard (:mod:`mfrbench.shards`).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from mfrbench.errors import MfrbenchError

#: The scheme :func:`image_rng` implements (written into every manifest as ``seed_version``).
SEED_VERSION = 2
#: What a manifest without a ``seed_version`` field was made with.
LEGACY_SEED_VERSION = 1


def key_digest(key: str) -> bytes:
    """The 32-byte sha256 digest of an image key (its UTF-8 bytes)."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def _seed_words(seed: int) -> np.ndarray:
    seed = int(seed)
    if not 0 <= seed < 1 << 64:
        raise MfrbenchError(f"Expected a seed in [0, 2**64), but got {seed}")
    return np.array([seed & 0xFFFFFFFF, seed >> 32], np.uint32)


def image_entropy(seed: int, key: str) -> np.ndarray:
    """The 10 ``uint32`` entropy words of (seed, key): 2 seed words, then the 8 words of the digest."""
    return np.concatenate([_seed_words(seed), np.frombuffer(key_digest(key), "<u4").astype(np.uint32)])


def image_rng(seed: int, key: str) -> np.random.Generator:
    """The random generator of one image (version 2): a function of (run seed, image key) only."""
    return np.random.default_rng(np.random.SeedSequence(image_entropy(seed, key)))


def batch_rng(seed: int, keys: Sequence[str]) -> np.random.Generator:
    """One generator for a batch (backends without ``per_image_rng``): the seed and every key's full digest."""
    words = [_seed_words(seed)] + [np.frombuffer(key_digest(k), "<u4") for k in keys]
    return np.random.default_rng(np.random.SeedSequence(np.concatenate(words).astype(np.uint32)))


def image_rng_v1(seed: int, key: str) -> np.random.Generator:
    """Version 1 (32 bits of ``sha1(key)``): only to reproduce manifests written before ``seed_version``."""
    return np.random.default_rng([int(seed), int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)])


# --------------------------------------------------------------------------- vectorised check
# numpy's SeedSequence (O'Neill's seed_seq, numpy/random/bit_generator.pyx), on arrays of keys at once.
_INIT_A, _MULT_A = np.uint32(0x43B0D7E5), np.uint32(0x931E8875)
_INIT_B, _MULT_B = np.uint32(0x8B51F9DD), np.uint32(0x58F38DED)
_MIX_L, _MIX_R = np.uint32(0xCA01F9DD), np.uint32(0x4973F715)
_POOL = 4


def _seedseq_pool(entropy: np.ndarray) -> np.ndarray:
    """(n, 4) SeedSequence pools of ``entropy`` (n, w) uint32 rows (w >= 4), as numpy computes them."""
    n, w = entropy.shape
    h = np.full(n, _INIT_A, np.uint32)

    def hashmix(v: np.ndarray) -> np.ndarray:
        nonlocal h
        v = v ^ h
        h = h * _MULT_A
        v = v * h
        return v ^ (v >> np.uint32(16))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = _MIX_L * x - _MIX_R * y
        return r ^ (r >> np.uint32(16))

    pool = [hashmix(entropy[:, i]) for i in range(_POOL)]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for src in range(_POOL, w):
        for dst in range(_POOL):
            pool[dst] = mix(pool[dst], hashmix(entropy[:, src]))
    return np.stack(pool, axis=1)


def pcg64_seeds(seed: int, digests: np.ndarray) -> np.ndarray:
    """(n, 4) ``uint64``: what ``SeedSequence.generate_state(4, uint64)`` gives PCG64 for each key.

    ``digests`` is (n, 32) ``uint8`` (the :func:`key_digest` of each key). Words 0-1 are the
    generator's initial state and 2-3 its increment, so two keys share a stream only if their rows
    are equal (:func:`image_rng` is ``default_rng(SeedSequence(...))``, i.e. PCG64 seeded so).
    """
    digests = np.ascontiguousarray(digests, np.uint8)
    n = len(digests)
    with np.errstate(over="ignore"):
        words = digests.view("<u4").astype(np.uint32).reshape(n, 8)                    # (n, 8)
        entropy = np.concatenate([np.broadcast_to(_seed_words(seed), (n, 2)), words], axis=1)  # (n, 10)
        pool = _seedseq_pool(entropy)
        h = _INIT_B
        out = np.empty((n, 8), np.uint32)
        for i in range(8):  # generate_state(4, uint64) draws 8 uint32 words, cycling the pool
            v = pool[:, i % _POOL] ^ h
            h = np.uint32((int(h) * int(_MULT_B)) & 0xFFFFFFFF)
            v = v * h
            out[:, i] = v ^ (v >> np.uint32(16))
    return out.view("<u8").reshape(n, 4)
