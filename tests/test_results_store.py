"""The results store (issue 12): locked appends, one header under concurrency, damage named on read."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
from click.testing import CliRunner

from mfrbench.cli import cli
from mfrbench.errors import DamagedFileError, MfrbenchError
from mfrbench.results import COLUMNS, append_row, check_store, read_breakdown, read_results, require_store, store_paths


def _row(i: int, **kw) -> dict:
    return {"eval_id": f"e{i}", "kind": "eval", "time": "2026-12-02T00:00:00+00:00", "model": "m", "benchmark": "lfw",
            "acc": 0.5 + i / 100, "n_genuine": 10, "flip": True, "notes": "a, \"quoted\" note", **kw}


def _store(tmp_path: Path, n: int = 3) -> Path:
    for i in range(n):
        append_row(tmp_path, _row(i), breakdown=[{"benchmark": "lfw", "subset": "all", "acc": 0.5}])
    return tmp_path / "evals.csv"


def _one_line_error(res) -> str:
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1, res.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert "Traceback" not in res.output
    return lines[0]


def test_rows_round_trip(tmp_path):
    _store(tmp_path)
    df = read_results(tmp_path)
    assert list(df["eval_id"]) == ["e0", "e1", "e2"] and list(df.columns) == COLUMNS
    assert df["notes"][0] == 'a, "quoted" note' and df["acc"][2] == pytest.approx(0.52)
    assert len(read_breakdown(tmp_path)) == 3


def _append_at_once(args) -> None:
    """Append one row together with the other processes, each opening the file 0.2 s late.

    The delay sits between "is the file empty?" (header or not) and the write in an unlocked append, so
    without the lock every process writes a header (10 of 10 trials on the old store); under the lock the
    check happens after the open and the result is the same for any timing.
    """
    import builtins
    import time

    folder, i, barrier = args
    real_open = builtins.open

    def late_open(file, mode="r", *a, **kw):
        if "a" in mode:
            time.sleep(0.2)
        return real_open(file, mode, *a, **kw)

    builtins.open = late_open  # this child process only
    barrier.wait()
    append_row(folder, _row(i))


@pytest.mark.parametrize("trial", range(3))
def test_concurrent_appenders_write_one_header_and_every_row(tmp_path, trial):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_append_at_once, args=((tmp_path, i, barrier),)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    lines = (tmp_path / "evals.csv").read_text().splitlines()
    assert sum(line.startswith("eval_id,") for line in lines) == 1
    assert sorted(read_results(tmp_path)["eval_id"]) == ["e0", "e1", "e2", "e3"]


def test_truncated_last_row_is_named_and_the_next_append_does_not_glue_onto_it(tmp_path):
    path = _store(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 30])  # a writer killed mid-row
    with pytest.raises(DamagedFileError, match=r"evals.csv:4: .*truncated"):
        read_results(tmp_path)
    append_row(tmp_path, _row(9))  # the new row lands whole on its own line
    lines = path.read_text().splitlines()
    assert lines[-1].startswith("e9,") and len(lines) == 5
    with pytest.raises(DamagedFileError, match=r"evals.csv:4: \d+ fields, expected"):
        read_results(tmp_path)
    lines.pop(3)  # the user deletes the named line: every other row is intact
    path.write_text("\n".join(lines) + "\n")
    assert list(read_results(tmp_path)["eval_id"]) == ["e0", "e1", "e9"]


def test_a_row_with_extra_fields_is_never_column_shifted(tmp_path):
    path = _store(tmp_path)
    with open(path, "a") as f:
        f.write("e7,eval," + ",".join("x" * len(COLUMNS)) + "\n")
    with pytest.raises(DamagedFileError, match=rf"evals.csv:5: {len(COLUMNS) + 2} fields, expected {len(COLUMNS)}"):
        read_results(tmp_path)


@pytest.mark.parametrize("garbage", [b"\x00\xff\xfe garbage \x9c\n", b"hello world\n", b'"unterminated,quote\n'])
def test_appended_garbage_is_named(tmp_path, garbage):
    path = _store(tmp_path)
    with open(path, "ab") as f:
        f.write(garbage)
    with pytest.raises(DamagedFileError, match=r"evals.csv:5: "):
        read_results(tmp_path)


def test_a_cell_of_the_wrong_type_is_named(tmp_path):
    path = _store(tmp_path)
    lines = path.read_text().splitlines()
    cells = lines[2].split(",")
    cells[COLUMNS.index("n_genuine")] = "ten"
    lines[2] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DamagedFileError, match=r"evals.csv:3: column n_genuine holds 'ten', not a int"):
        read_results(tmp_path)


def test_truncated_header_is_named_on_read_and_on_append(tmp_path):
    path = tmp_path / "evals.csv"
    path.write_text(",".join(COLUMNS)[:50])
    with pytest.raises(DamagedFileError, match=r"evals.csv:1: the header is truncated"):
        read_results(tmp_path)
    with pytest.raises(DamagedFileError, match=r"the header is truncated"):
        append_row(tmp_path, _row(0))
    assert path.read_text() == ",".join(COLUMNS)[:50]  # never rewritten


def test_another_schema_is_refused_not_rewritten(tmp_path):
    path = tmp_path / "evals.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(MfrbenchError, match="different header"):
        append_row(tmp_path, _row(0))
    assert path.read_text() == "a,b,c\n1,2,3\n"


def test_damaged_breakdown_is_named(tmp_path):
    _store(tmp_path)
    with open(tmp_path / "breakdown.csv", "a") as f:
        f.write("e9,lfw\n")
    with pytest.raises(DamagedFileError, match=r"breakdown.csv:5: 2 fields"):
        read_breakdown(tmp_path)
    with pytest.raises(DamagedFileError, match=r"breakdown.csv:5"):
        check_store(tmp_path)


def test_store_paths_refuses_a_file_that_is_not_csv(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(MfrbenchError, match=r"notes.txt is a file, not a results store"):
        store_paths(tmp_path / "notes.txt")
    assert store_paths(tmp_path / "r.csv")[1] == tmp_path / "r.csv"
    with pytest.raises(MfrbenchError, match="no results store at"):
        require_store(tmp_path / "nope")


def test_report_on_a_damaged_store_is_one_line_naming_the_line(tmp_path):
    path = _store(tmp_path)
    path.write_bytes(path.read_bytes()[:-20])
    line = _one_line_error(CliRunner().invoke(cli, ["report", "--results", str(tmp_path)]))
    assert "evals.csv:4:" in line


def test_report_on_a_missing_store_creates_nothing(tmp_path):
    line = _one_line_error(CliRunner().invoke(cli, ["report", "--results", str(tmp_path / "NOPE")]))
    assert "no results store" in line and "mfrbench eval" in line
    assert not (tmp_path / "NOPE").exists()


def test_report_on_a_text_file_is_one_line(tmp_path):
    (tmp_path / "FILE.txt").write_text("hello")
    line = _one_line_error(CliRunner().invoke(cli, ["report", "--results", str(tmp_path / "FILE.txt")]))
    assert "is a file, not a results store" in line


def test_eval_refuses_a_damaged_store_before_any_work(tmp_path):
    path = _store(tmp_path)
    path.write_bytes(path.read_bytes() + b"junk")
    # --model nosuch would fail when the model loads; the store is checked before that
    res = CliRunner().invoke(cli, ["eval", "--model", "nosuch", "--benchmark", "lfw", "--results", str(path),
                                   "--root", str(tmp_path)])
    assert "evals.csv:5:" in _one_line_error(res)
