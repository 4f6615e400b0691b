import json

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
    assert df.lmk5[0] == [0.0] * 10 and df.identity.tolist()[:2] == ["id0", "id1"]
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
