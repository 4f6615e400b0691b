"""insightface / MXNet RecordIO reading without mxnet (mfrbench.recordio) and as recognizer training data."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mfrbench.errors import MfrbenchError
from mfrbench.recognizers.data import FaceImages, build_train_data, collate, decode_crop, read_source
from mfrbench.recordio import RecordFile, open_recordset, pack, unpack, write_record

MX = Path(__file__).parent / "data" / "recordio_mxnet"   # written by mxnet 1.9.1's own writer (make_fixture.py)


def _expected(layout: str) -> dict[int, list]:
    return {int(k): v for k, v in json.loads((MX / "expected.json").read_text())[layout].items()}


@pytest.mark.parametrize("folder,layout", [(MX, "face2rec2"), (MX / "nohdr", "nohdr")])
def test_mxnet_written_set_reads_image_for_image(folder, layout):
    exp = _expected(layout)
    rs = open_recordset(folder)
    assert rs.has_header == (layout == "face2rec2")
    assert len(rs) == len(exp)
    f = RecordFile(rs.rec)
    got = [[int(lab), hashlib.sha1(f.record(int(off)).image).hexdigest()] for off, lab in zip(rs.offsets, rs.labels)]
    assert got == [exp[k] for k in sorted(exp)]


def test_split_records_are_joined_with_the_magic_restored():
    """The fixture's split images (cflag 1/2/3 parts) come back whole: payload with both magics inside."""
    rs = open_recordset(MX)
    f = RecordFile(rs.rec)
    img = f.record(int(rs.offsets[2])).image       # image 2 was written with two aligned magics appended
    assert img.count(bytes.fromhex("0a23d7ce")) == 2 and img.endswith(b"end!")


def test_our_writer_gives_mxnets_bytes():
    """Re-writing mxnet's payloads with write_record reproduces its .rec byte for byte (split points included)."""
    rs_bytes = (MX / "train.rec").read_bytes()
    index = [int(line.split("\t")[1]) for line in (MX / "train.idx").read_text().split("\n") if line]
    f = RecordFile(MX / "train.rec")
    import io
    buf = io.BytesIO()
    for off in index:
        write_record(buf, f.read_at(off))
    assert buf.getvalue() == rs_bytes


def test_pack_unpack_scalar_and_vector_labels():
    r = unpack(pack(7, b"jpeg"))
    assert (r.flag, r.label, r.image) == (0, 7, b"jpeg")
    r = unpack(pack([3, 9.5], b"x"))
    assert (r.flag, r.label, r.labels.tolist(), r.image) == (2, 3, [3.0, 9.5], b"x")


def test_decode_and_dataloader_workers_agree():
    """Each worker opens its own handle: 2 workers decode what 0 workers decode."""
    src = read_source(str(MX))
    assert src.kind == "recordio" and len(src.samples) == 8
    labels = np.array([int(s.identity) for s in src.samples])
    ds = FaceImages(src.samples, labels, train=False)
    from torch.utils.data import DataLoader
    seq = [collate([ds[i]])[0] for i in range(len(ds))]
    par = [b[0] for b in DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate)]
    assert all((a == b).all() for a, b in zip(seq, par))
    assert seq[0].shape == (1, 3, 112, 112)


def test_damaged_rec_is_a_one_line_error(tmp_path):
    d = tmp_path / "set"
    shutil.copytree(MX, d)
    data = (d / "train.rec").read_bytes()
    (d / "train.rec").write_bytes(data[: len(data) // 2])
    with pytest.raises(MfrbenchError, match="truncated|no RecordIO record"):
        open_recordset(d)
    (d / "train.idx").unlink()
    with pytest.raises(MfrbenchError, match="index train.idx is missing"):
        open_recordset(d)


def test_wrong_index_offset_names_the_byte(tmp_path):
    d = tmp_path / "set"
    shutil.copytree(MX / "nohdr", d)
    lines = (d / "train.idx").read_text().splitlines()
    lines[1] = lines[1].split("\t")[0] + "\t5"
    (d / "train.idx").write_text("\n".join(lines) + "\n")
    with pytest.raises(MfrbenchError, match="no RecordIO record at byte 5"):
        open_recordset(d)


@pytest.mark.data
def test_kit_celeba_rec_matches_its_table(kit):
    root = kit / "celeba-rec"
    if not (root / "train.rec").is_file():
        pytest.skip("celeba-rec/ not in the data kit")
    rs = open_recordset(root)
    assert (len(rs), rs.num_classes, rs.has_header) == (6274, 299, True)
    rows = list(csv.DictReader(open(root / "images.tsv"), delimiter="\t"))
    f = RecordFile(rs.rec)
    for r in rows[::97]:
        i = int(r["record"]) - 1
        assert rs.labels[i] == int(r["class"])
        assert hashlib.sha1(f.record(int(rs.offsets[i])).image).hexdigest() == r["sha1"]
    img = decode_crop(str(rs.rec), int(rs.offsets[0]))
    assert img.shape == (112, 112, 3) and img.dtype == np.uint8
    data = build_train_data([str(root)], val_identities=30, seed=0)
    assert data.num_classes == 269 and len({s.identity for s in data.val}) == 30
    assert not {s.identity for s in data.val} & set(data.classes)
