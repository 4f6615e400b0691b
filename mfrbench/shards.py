"""Shards: split one run (``align``, ``generate``, ``eval``'s embedding step) over N machines or array tasks.

``--shard i/N`` (``0 <= i < N``) keeps the inputs whose key digest (:func:`mfrbench.seeds.key_digest`)
is ``i`` modulo ``N``: a function of the key alone, so any ``N`` partitions the inputs exactly, every
shard sees the same list, and no shard needs to know what the others do. A shard writes a complete,
resumable manifest of its part into its own folder; ``mfrbench merge`` (:mod:`mfrbench.merge`)
checks that the shards add up to the whole run and writes the manifest one process would have written.

While it lists the inputs, a shard also counts all of them and sums their digests (:class:`InputTally`);
the merge compares those numbers across shards and with the union of the shards' rows, so a missing,
doubled or foreign shard is named instead of silently giving a smaller set.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from mfrbench.errors import MfrbenchError
from mfrbench.seeds import key_digest

_MASK128 = (1 << 128) - 1


def shard_of(key: str, count: int) -> int:
    """The shard (``0 .. count-1``) that owns ``key``: the first 8 digest bytes, big-endian, modulo ``count``."""
    return int.from_bytes(key_digest(key)[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based, as ``SLURM_ARRAY_TASK_ID`` with ``--array=0-(N-1)``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise MfrbenchError(f"Expected a shard i/N with 0 <= i < N, but got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: "str | Shard | None") -> "Shard | None":
        """``"i/N"`` -> :class:`Shard`; ``None`` (no sharding) stays ``None``."""
        if text is None or isinstance(text, Shard):
            return text
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not m:
            raise MfrbenchError(f"Expected --shard i/N (e.g. 0/4, the first of 4 shards), but got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    def owns(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index

    def to_dict(self) -> dict:
        return {"index": self.index, "count": self.count}

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def fingerprint(keys: Iterable[str]) -> tuple[int, str]:
    """(number of keys, order-independent fingerprint): the sum of the 128-bit digest prefixes, in hex."""
    n, total = 0, 0
    for k in keys:
        n += 1
        total += int.from_bytes(key_digest(k)[:16], "big")
    return n, f"{total & _MASK128:032x}"


class InputTally:
    """Counts and fingerprints every input a shard lists (its own and the others'), in one pass."""

    def __init__(self) -> None:
        self.n = 0
        self._sum = 0

    def add(self, key: str) -> None:
        self.n += 1
        self._sum += int.from_bytes(key_digest(key)[:16], "big")

    @property
    def fingerprint(self) -> str:
        return f"{self._sum & _MASK128:032x}"


def take(records: Iterable, shard: Shard | None, tally: InputTally | None = None) -> Iterator:
    """The records of ``shard`` (all of them when ``None``), tallying every record seen into ``tally``."""
    for rec in records:
        if tally is not None:
            tally.add(rec.key)
        if shard is None or shard.owns(rec.key):
            yield rec


def shard_record(shard: Shard, tally: InputTally) -> dict:
    """The ``shard`` entry of a shard's ``manifest.json``: which part, of how many inputs, with what fingerprint."""
    return {**shard.to_dict(), "inputs_all": tally.n, "inputs_fingerprint": tally.fingerprint}


@contextlib.contextmanager
def exclusive(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created) for the block: shards that share a cache take turns
    preparing it (``flock``; on NFS, Linux maps it to a POSIX lock that all nodes see)."""
    import fcntl

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
