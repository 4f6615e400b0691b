"""insightface / MXNet RecordIO training sets (``train.rec`` + ``train.idx`` + ``property``), without mxnet.

What ``faces_webface_112x112``, ``faces_emore`` (MS1MV2), ``glint360k`` and the kit's ``celeba-rec/``
are. mxnet is retired (its last wheel needs numpy < 1.24), so this reads the format directly
(``../shared/reference/formats.md``):

* a record is ``uint32 magic, uint32 lrec = cflag << 29 | length``, ``length`` payload bytes, zero
  padding to 4 bytes; a writer splits a payload wherever the magic appears at an aligned offset
  (``cflag`` 1/2/3 = first/middle/last part) and drops the magic there, so the reader puts it back;
* a payload is an ``IRHeader`` (``<IfQQ``: flag, label, id, id2), ``flag`` float32 labels when
  ``flag > 0``, then the encoded image;
* ``face2rec2`` sets start with a header record (flag 2, labels ``[a, b]``): images are records
  ``1..a-1`` and records ``a..b-1`` give each identity's image range. Sets from ``rec_builder`` have
  no header: every key is an image whose first label is its class.

Reading is random access through the ``.idx`` offsets: only the index (two ints per image) lives in
memory, each image is read and decoded when a DataLoader worker asks for it, and every worker
process opens its own file handle (a handle inherited over ``fork`` would share its file position).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfrbench.errors import MfrbenchError

MAGIC = 0xCED7230A
OLD_MAGIC = 0x3ED7230A          # old dmlc files: 30-bit length, 2-bit cflag
_MAGIC_BYTES = struct.pack("<I", MAGIC)
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)   # 24


@dataclass(frozen=True)
class Record:
    """One decoded payload: its labels (float32) and the encoded image bytes."""

    flag: int
    labels: np.ndarray
    image: bytes
    id: int = 0

    @property
    def label(self) -> int:
        """The class id: the scalar label, or the first of a label vector (as arcface_torch takes it)."""
        return int(self.labels[0])


def unpack(payload: bytes) -> Record:
    """Split a payload into IRHeader, labels and image bytes."""
    if len(payload) < IR_SIZE:
        raise MfrbenchError(f"RecordIO payload of {len(payload)} bytes is shorter than its {IR_SIZE}-byte header")
    flag, label, rid, _ = struct.unpack_from(IR_FORMAT, payload)
    if flag > 0:
        end = IR_SIZE + 4 * flag
        labels = np.frombuffer(payload, np.float32, flag, IR_SIZE).copy()
    else:
        end = IR_SIZE
        labels = np.array([label], np.float32)
    return Record(flag, labels, payload[end:], rid)


def pack(labels, image: bytes, rid: int = 0) -> bytes:
    """The payload :func:`unpack` reads (``mxnet.recordio.pack``'s layout); for tests and small writers."""
    labels = np.atleast_1d(np.asarray(labels, np.float32))
    if labels.size == 1:
        return struct.pack(IR_FORMAT, 0, float(labels[0]), rid, 0) + image
    return struct.pack(IR_FORMAT, labels.size, 0.0, rid, 0) + labels.tobytes() + image


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


class RecordFile:
    """Random-access reads of ``.rec`` records by byte offset; one file handle per process."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self._fh = None
        self._pid = -1

    def _file(self):
        if self._fh is None or self._pid != os.getpid():
            self._fh, self._pid = open(self.path, "rb"), os.getpid()
        return self._fh

    def __getstate__(self) -> dict:          # picklable for spawn-started DataLoader workers
        return {"path": self.path, "_fh": None, "_pid": -1}

    def _part(self, fh) -> tuple[int, bytes]:
        head = fh.read(8)
        if len(head) < 8:
            raise MfrbenchError(f"{self.path}: truncated record header at byte {fh.tell() - len(head)}")
        magic, lrec = struct.unpack("<II", head)
        if magic == MAGIC:
            cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        elif magic == OLD_MAGIC:
            cflag, length = lrec >> 30, lrec & ((1 << 30) - 1)
        else:
            raise MfrbenchError(f"{self.path}: no RecordIO record at byte {fh.tell() - 8} (magic {magic:#010x}); "
                                "is the .idx file the one written with this .rec?")
        data = fh.read(length)
        if len(data) < length:
            raise MfrbenchError(f"{self.path}: record at byte {fh.tell() - len(data) - 8} is truncated")
        fh.read(_pad(length))
        return cflag, data

    def read_at(self, offset: int) -> bytes:
        """The whole payload of the record starting at ``offset`` (split parts joined, magic restored)."""
        fh = self._file()
        fh.seek(offset)
        cflag, data = self._part(fh)
        if cflag == 0:
            return data
        if cflag != 1:
            raise MfrbenchError(f"{self.path}: record at byte {offset} starts mid-record (cflag {cflag})")
        parts = [data]
        while cflag != 3:
            cflag, data = self._part(fh)
            if cflag not in (2, 3):
                raise MfrbenchError(f"{self.path}: split record at byte {offset} is missing its last part")
            parts.append(data)
        return _MAGIC_BYTES.join(parts)

    def record(self, offset: int) -> Record:
        return unpack(self.read_at(offset))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def write_record(fh, payload: bytes) -> int:
    """Append one record the way mxnet's writer does (split at aligned magics); returns its offset."""
    offset = fh.tell()
    cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i:i + 4] == _MAGIC_BYTES]
    parts, start = [], 0
    for c in cuts:
        parts.append(payload[start:c])
        start = c + 4
    parts.append(payload[start:])
    for i, part in enumerate(parts):
        cflag = 0 if len(parts) == 1 else 1 if i == 0 else 3 if i == len(parts) - 1 else 2
        fh.write(struct.pack("<II", MAGIC, cflag << 29 | len(part)) + part + b"\0" * _pad(len(part)))
    return offset


# ----------------------------------------------------------------------------- training sets
@dataclass
class RecordSet:
    """A training set: where its images are (offsets into ``rec``) and their class ids."""

    rec: Path
    offsets: np.ndarray        # (N,) int64 byte offsets of image records, in key order
    labels: np.ndarray         # (N,) int64 class ids
    num_classes: int | None    # from ``property`` (None when absent)
    has_header: bool

    def __len__(self) -> int:
        return len(self.offsets)


def find_recordio(path: str | os.PathLike) -> Path | None:
    """The ``.rec`` file ``path`` names (a ``.rec`` file, or a folder holding ``train.rec``), else ``None``."""
    p = Path(path)
    if p.is_file() and p.suffix == ".rec":
        return p
    if p.is_dir() and (p / "train.rec").is_file():
        return p / "train.rec"
    return None


def read_index(idx: Path) -> dict[int, int]:
    """``key -> byte offset`` from a ``.idx`` file (``key<TAB>offset`` per line)."""
    out: dict[int, int] = {}
    with open(idx, encoding="ascii") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                key, off = line.split("\t")
                out[int(key)] = int(off)
            except ValueError:
                raise MfrbenchError(f"{idx}:{n}: not a 'key<TAB>offset' line: {line.strip()[:60]!r}") from None
    return out


def read_property(folder: Path) -> int | None:
    p = folder / "property"
    if not p.is_file():
        return None
    try:
        return int(p.read_text().split(",")[0])
    except ValueError:
        raise MfrbenchError(f"{p}: expected 'num_classes,height,width'") from None


def _is_header(first: Record, keys: list[int]) -> bool:
    """Record 0 is a ``face2rec2`` header: flag 2, no image, ``[a, b]`` spanning exactly the keys.

    The flag alone is not enough (arcface_torch trusts it): an image record with a 2-vector label
    also has flag 2.
    """
    if keys[0] != 0 or first.flag != 2 or first.image:
        return False
    a, b = (float(v) for v in first.labels[:2])
    return a.is_integer() and b.is_integer() and 1 <= a <= b and int(b) == keys[-1] + 1


def open_recordset(path: str | os.PathLike) -> RecordSet:
    """Index a RecordIO training set: its image offsets and class ids, without decoding any image.

    With a ``face2rec2`` header, the labels come from the identity records (one read per class);
    without, from each image record's header (one small read per image).
    """
    rec = find_recordio(path)
    if rec is None:
        raise MfrbenchError(f"{path}: no RecordIO set (expected a .rec file or a folder with train.rec)")
    idx_path = rec.with_suffix(".idx")
    if not idx_path.is_file():
        raise MfrbenchError(f"{rec}: its index {idx_path.name} is missing (insightface sets ship train.rec with "
                            "train.idx)")
    index = read_index(idx_path)
    if not index:
        raise MfrbenchError(f"{idx_path}: empty index")
    f = RecordFile(rec)
    try:
        keys = sorted(index)
        first = f.record(index[keys[0]])
        if _is_header(first, keys):
            a, b = int(first.labels[0]), int(first.labels[1])
            img_keys = np.arange(1, a, dtype=np.int64)
            labels = np.full(len(img_keys), -1, np.int64)
            for cls, k in enumerate(range(a, b)):
                lo, hi = f.record(index[k]).labels[:2].astype(np.int64)
                labels[lo - 1:hi - 1] = cls
            if (labels < 0).any():
                raise MfrbenchError(f"{rec}: {(labels < 0).sum()} image records belong to no identity record")
            has_header = True
        else:
            img_keys = np.array(keys, np.int64)
            labels = np.array([f.record(index[k]).label for k in keys], np.int64)
            has_header = False
        missing = [int(k) for k in img_keys if int(k) not in index]
        if missing:
            raise MfrbenchError(f"{idx_path}: {len(missing)} image keys missing (first: {missing[0]})")
        offsets = np.array([index[int(k)] for k in img_keys], np.int64)
    finally:
        f.close()
    return RecordSet(rec, offsets, labels, read_property(rec.parent), has_header)
