"""Damaged manifests given to the commands that read them (issue 12): one line naming the file, never a traceback.

A manifest is a user file too: copied, synced, hand-edited, cut by a full disk. Every reader goes
through :func:`mfrbench.manifest.read_manifest` / ``read_manifest_meta`` (``generate --manifest`` reads the
CSV in chunks through the same checks), so a truncated or garbled CSV, a CSV cut at a line end (it still
parses, with rows missing: caught by the counts in ``manifest.json``) and a broken ``manifest.json`` are
named; rerunning the stage that wrote the CSV rewrites it from its journal.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import synthetic_aligned  # noqa: E402

from mfrbench.cli import cli


@pytest.fixture(scope="module")
def aligned(tmp_path_factory) -> Path:
    return synthetic_aligned(tmp_path_factory.mktemp("manifests"))


def _truncate(d: Path) -> str:
    p = d / "manifest.csv"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return "manifest.csv is damaged"


def _garbage(d: Path) -> str:
    with open(d / "manifest.csv", "ab") as f:
        f.write(b'\x00\xff garbage,"unterminated\n1,2\n')
    return "manifest.csv is damaged"


def _cut_at_line_end(d: Path) -> str:
    p = d / "manifest.csv"
    lines = p.read_bytes().split(b"\n")
    p.write_bytes(b"\n".join(lines[:-3]) + b"\n")
    return "manifest.csv holds 4 rows but manifest.json counts 6"


def _bad_json(d: Path) -> str:
    (d / "manifest.json").write_text('{"kind": "aligned", ')
    return "manifest.json is damaged"


def _bad_cell(d: Path) -> str:
    p = d / "manifest.csv"
    p.write_text(p.read_text().replace('"[', '"[oops '))  # every landmark / box cell
    return "manifest.csv is damaged"


DAMAGE = {"truncated": _truncate, "garbage": _garbage, "cut at a line end": _cut_at_line_end,
          "manifest.json": _bad_json, "bad JSON cell": _bad_cell}
COMMANDS = {
    "generate": ["generate", "--method", "mtf", "--mask-type", "plain", "--manifest", "{m}", "--out", "{o}"],
    "dataset-report": ["dataset-report", "{m}"],
    "train-fr": ["train-fr", "--data", "{m}", "--out", "{o}", "--epochs", "1", "--batch-size", "2", "--workers", "0",
                 "--val-identities", "0"],
    "train-aux": ["train-aux", "--module", "seg", "--data", "{m}", "--out", "{o}", "--profile", "smoke"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_manifest_is_one_line_naming_the_file(aligned, tmp_path, damage, command):
    m = tmp_path / "m"
    shutil.copytree(aligned, m)
    must = DAMAGE[damage](m)
    args = [a.format(m=m, o=tmp_path / "o") for a in COMMANDS[command]]
    res = CliRunner().invoke(cli, args)
    lines = res.output.strip().splitlines()
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 1 and lines and lines[-1].startswith("Error: "), res.output
    assert must in lines[-1] and str(m) in lines[-1] and "Traceback" not in res.output


def test_rerunning_the_stage_rewrites_a_damaged_csv_from_its_journal(aligned, tmp_path):
    m = tmp_path / "m"
    shutil.copytree(aligned, m)
    good = (m / "manifest.csv").read_bytes()
    _cut_at_line_end(m)
    meta = (m / "manifest.json").read_text()
    root = str(Path(__import__("json").loads(meta)["config"]["root"]))
    res = CliRunner().invoke(cli, ["align", "--dataset", "synthetic", "--root", root, "--out", str(m), "--no-grid"])
    assert res.exit_code == 0, res.output
    assert (m / "manifest.csv").read_bytes() == good
