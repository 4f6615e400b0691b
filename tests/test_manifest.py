import json
from pathlib import Path

import pytest

from mfrbench.errors import MfrbenchError
from mfrbench.manifest import CORE_COLUMNS, ManifestWriter, read_manifest, read_manifest_meta


def _row(i, status="ok"):
    return {"key": f"id{i % 3}/{i}.jpg", "src_path": f"/x/{i}.jpg", "sha1": f"h{i}", "identity": f"id{i % 3}",
            "is_masked": False, "source": "folder", "out_path": f"images/{i}.jpg" if status == "ok" else "",
            "status": status, "reason": "" if status == "ok" else "no_face: none",
            "lmk5": [float(i)] * 10}


def test_write_read_roundtrip(tmp_path):
    w = ManifestWriter(tmp_path, kind="aligned", config={"a": 1}, seed=3)
    for i in range(5):
        w.add(_row(i, "ok" if i != 2 else "skipped"))
    meta = w.close(expected_inputs=5)
    assert (meta["inputs"], meta["ok"], meta["skipped"]) == (5, 4, 1)
    assert meta["skip_reasons"] == {"no_face": 1} and meta["seed"] == 3 and meta["schema_version"] == 1
    df = read_manifest(tmp_path)
    assert list(df.columns[: len(CORE_COLUMNS)]) == CORE_COLUMNS
    assert df.lmk5[0] == [0.0] * 10 and df.key.tolist() == sorted(_row(i)["key"] for i in range(5))  # key order
    assert read_manifest_meta(tmp_path)["config"] == {"a": 1}
    assert len(read_manifest(tmp_path, status="ok")) == 4


def test_resume_ignores_truncated_tail_and_checks_config(tmp_path):
    w = ManifestWriter(tmp_path, kind="aligned", config={"a": 1})
    for i in range(3):
        w.add(_row(i))
    w.__exit__()
    with open(tmp_path / "rows.jsonl", "a") as f:  # a kill in the middle of a write
        f.write(json.dumps(_row(3))[:20])
    with pytest.raises(MfrbenchError, match="different config"):
        ManifestWriter(tmp_path, kind="aligned", config={"a": 2})
    with pytest.raises(MfrbenchError, match="--resume"):
        ManifestWriter(tmp_path, kind="aligned", config={"a": 1}, resume=False)
    w2 = ManifestWriter(tmp_path, kind="aligned", config={"a": 1})
    assert w2.done_keys() == {_row(i)["key"] for i in range(3)}
    w2.add(_row(3))
    meta = w2.close(expected_inputs=4)
    assert meta["inputs"] == 4 and len(read_manifest(tmp_path)) == 4


def test_rejects_bad_rows(tmp_path):
    w = ManifestWriter(tmp_path, kind="aligned", config={})
    with pytest.raises(ValueError, match="status"):
        w.add({**_row(0), "status": "maybe"})
    w.add(_row(0))
    with pytest.raises(ValueError, match="duplicate"):
        w.add(_row(0))
    with pytest.raises(MfrbenchError, match="rows for 2 inputs"):
        w.close(expected_inputs=2)


def test_missing_manifest_is_clear_error(tmp_path):
    with pytest.raises(MfrbenchError, match="no manifest"):
        read_manifest(tmp_path)


def test_csv_and_duplicates_do_not_depend_on_the_order_rows_came_in(tmp_path):
    """The rule behind sharded runs: the smallest key of a content hash stays, and the bytes are the same."""
    rows = [{**_row(i), "sha1": f"h{i % 4}", "score": 0.5 * i, "n": i, "flag": i % 2 == 0, "opt": None}
            for i in range(9)]
    outs = []
    for name, order in (("a", rows), ("b", rows[::-1]), ("c", rows[4:] + rows[:4])):
        d = tmp_path / name
        (d / "images").mkdir(parents=True)
        for r in order:
            (d / r["out_path"]).write_bytes(b"x")
        w = ManifestWriter(d, kind="masked", config={})
        for r in order:
            w.add(r)
        meta = w.close(dedupe=True)
        assert meta["skip_reasons"] == {"duplicate": 5}
        outs.append((d / "manifest.csv").read_bytes())
        df = read_manifest(d)
        kept = df[df.status == "ok"].key.tolist()
        assert kept == sorted(min(r["key"] for r in rows if r["sha1"] == h) for h in {r["sha1"] for r in rows})
        assert sorted(p.name for p in (d / "images").iterdir()) == sorted(Path(o).name for o in
                                                                           df.out_path[df.status == "ok"])
        assert set(df.reason[df.status == "skipped"]) <= {f"duplicate: same content as {k}" for k in kept}
    assert outs[0] == outs[1] == outs[2]
    head = outs[0].decode().splitlines()[:2]
    assert head[0].startswith(",".join(CORE_COLUMNS) + ",flag,lmk5,n,opt,score")  # core, then sorted
