"""Wrote this folder with the real mxnet 1.9.1 writer (run outside the repo: `pip install mxnet==1.9.1 "numpy<1.24"`;
`python make_fixture.py OUT`). Split records (cflag 1/2/3) come from JPEG payloads with the magic appended."""
import hashlib
import json
import os
import struct
import sys

import cv2
import mxnet as mx
import numpy as np

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
MAGIC = struct.pack("<I", 0xCED7230A)


def jpeg(i, split):
    img = cv2.resize(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), (112, 112), interpolation=cv2.INTER_CUBIC)
    b = cv2.imencode(".jpg", img)[1].tobytes()
    if split:   # trailing bytes after EOI holding the magic at 4-byte-aligned payload offsets (twice: 3 parts)
        pad = (-(24 + len(b))) % 4
        b = b + b"\0" * pad + MAGIC + b"tail" + MAGIC + b"end!"
    return b
expected = {}
# face2rec2 layout: header, images 1..n, identity records
classes = [[0, 1, 2], [3, 4], [5, 6, 7]]
n = 8
w = mx.recordio.MXIndexedRecordIO(f"{out}/train.idx", f"{out}/train.rec", "w")
a, b = n + 1, n + 1 + len(classes)
w.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(2, [a, b], 0, 0), b""))
for c, members in enumerate(classes):
    for i in members:
        img = jpeg(i, split=i in (2, 6))
        w.write_idx(i + 1, mx.recordio.pack(mx.recordio.IRHeader(0, float(c), i + 1, 0), img))
        expected[i + 1] = [c, hashlib.sha1(img).hexdigest()]
for c, members in enumerate(classes):
    w.write_idx(a + c, mx.recordio.pack(mx.recordio.IRHeader(2, [members[0] + 1, members[-1] + 2], a + c, 0), b""))
w.close()
open(f"{out}/property", "w").write(f"{len(classes)},112,112")
# rec_builder layout: no header, vector labels
os.makedirs(f"{out}/nohdr", exist_ok=True)
w = mx.recordio.MXIndexedRecordIO(f"{out}/nohdr/train.idx", f"{out}/nohdr/train.rec", "w")
exp2 = {}
for k in range(5):
    img = jpeg(k, split=k == 3)
    w.write_idx(k, mx.recordio.pack(mx.recordio.IRHeader(2, [k % 2, 7.0], k, 0), img))
    exp2[k] = [k % 2, hashlib.sha1(img).hexdigest()]
w.close()
with open(f"{out}/expected.json", "w") as fh:
    json.dump({"face2rec2": expected, "nohdr": exp2, "written_by": f"mxnet {mx.__version__}"}, fh, indent=1)
# count split parts to prove the writer split
data = open(f"{out}/train.rec", "rb").read()
heads = [i for i in range(0, len(data) - 8, 4) if data[i:i + 4] == MAGIC]
print("cflags", sorted({struct.unpack_from("<I", data, i + 4)[0] >> 29 for i in heads}))
print(os.path.getsize(f"{out}/train.rec"), os.path.getsize(f"{out}/nohdr/train.rec"))
