import pytest
from click.testing import CliRunner

from mfrbench.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_with_examples(name):
    res = run(name, "--help")
    assert res.exit_code == 0, res.output
    assert "Example" in res.output, f"`mfrbench {name} --help` shows no example"


def test_unknown_dataset_is_one_line_error(tmp_path):
    res = CliRunner().invoke(cli, ["align", "--dataset", "lfww", "--root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        "Error: Unknown dataset 'lfww'. Available: celeba, ffhq, folder, lfw, masked-photos, mfr2, rmfrd, synthetic"]
    assert "Traceback" not in res.output


def test_missing_root_is_one_line_error(tmp_path):
    res = CliRunner().invoke(cli, ["align", "--dataset", "lfw", "--root", str(tmp_path / "x"), "--out", str(tmp_path)])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1 and "does not exist" in res.output


def test_synth_align_report_roundtrip(tmp_path):
    assert run("synth", "--out", tmp_path / "s", "--identities", 3, "--per-identity", 2).exit_code == 0
    res = run("align", "--dataset", "synthetic", "--root", tmp_path / "s", "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    assert "6 inputs: 6 ok, 0 skipped" in res.output and "[SYNTHETIC]" in res.output
    assert (tmp_path / "a" / "grid.png").is_file()
    rep = run("dataset-report", tmp_path / "a")
    assert "SYNTHETIC DATA" in rep.output and "identities: 3" in rep.output


def test_align_celeba_cli(tmp_path, celeba_root, models_root):
    res = run("align", "--dataset", "celeba", "--root", celeba_root, "--out", tmp_path / "o", "--limit", 12)
    assert res.exit_code == 0, res.output
    assert "12 inputs:" in res.output
    rerun = run("align", "--dataset", "celeba", "--root", celeba_root, "--out", tmp_path / "o", "--limit", 12)
    assert rerun.exit_code == 0 and "12 inputs:" in rerun.output  # resumed: nothing redone, same counts
    other = CliRunner().invoke(cli, ["align", "--dataset", "celeba", "--root", str(celeba_root), "--out",
                                     str(tmp_path / "o"), "--limit", "13"])
    assert other.exit_code == 1 and "different config" in other.output


def test_doctor_and_datasets_and_list(kit):
    res = run("doctor")
    assert res.exit_code == 0 and "torch" in res.output and "yunet" in res.output
    assert "celeba" in res.output and "960 images" in res.output
    res = run("list", "datasets")
    assert res.exit_code == 0 and "masked-photos" in res.output
    bad = CliRunner().invoke(cli, ["list", "nope"])
    assert bad.exit_code == 1 and "Available: all, datasets" in bad.output
