"""`mfrbench eval` end to end on small real trees copied from the data kit, and its bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mfrbench.cli import cli
from mfrbench.datasets import read_pairs

pytestmark = pytest.mark.data


def _dlib_available(kit: Path) -> None:
    pytest.importorskip("dlib", reason="dlib-bin not installed")
    if not (kit / "models" / "dlib" / "dlib_face_recognition_resnet_model_v1.dat").is_file():
        pytest.skip("dlib model not in the data kit")


def _mini_lfw(kit: Path, dst: Path, per_fold: int = 3, folds: int = 2) -> Path:
    body = (kit / "lfw" / "pairs.txt").read_text().splitlines()[1:]
    out = [f"{folds}\t{per_fold}"]
    for f in range(folds):
        blk = body[f * 600:(f + 1) * 600]
        out += blk[:per_fold] + blk[300:300 + per_fold]
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "pairs.txt").write_text("\n".join(out) + "\n")
    p = read_pairs(dst / "pairs.txt", root=kit / "lfw")
    for x in sorted(set(p.path_a) | set(p.path_b)):
        x = Path(x)
        (dst / x.parent.name).mkdir(exist_ok=True)
        shutil.copy(x, dst / x.parent.name / x.name)
    return dst


def _mini_folder(kit: Path, dst: Path, people: int = 2, per: int = 2) -> Path:
    r = kit / "rmfrd"
    names = sorted(d.name for d in (r / "AFDB_masked_face_dataset").iterdir())[:people]
    for n in names:
        for sub, tree in (("masked", "AFDB_masked_face_dataset"), ("unmasked", "AFDB_face_dataset")):
            (dst / sub / n).mkdir(parents=True, exist_ok=True)
            for f in sorted((r / tree / n).iterdir())[:per]:
                shutil.copy(f, dst / sub / n / f.name)
    return dst


def _eval(tmp: Path, *args: str):
    res = CliRunner().invoke(cli, ["eval", "--model", "dlib", "--results", str(tmp / "res"), "--cache",
                                   str(tmp / "cache"), "--bootstrap", "50", "--no-flip", *args])
    return res


def test_eval_folder_appends_rows_plots_protocol(kit, rmfrd_root, tmp_path):
    _dlib_available(kit)
    root = _mini_folder(kit, tmp_path / "set")
    r1 = _eval(tmp_path, "--benchmark", "folder", "--root", str(root))
    assert r1.exit_code == 0, r1.output
    r2 = _eval(tmp_path, "--benchmark", "folder", "--root", str(root))
    assert r2.exit_code == 0, r2.output
    df = pd.read_csv(tmp_path / "res" / "evals.csv")
    assert len(df) == 2 and df.eval_id.nunique() == 2  # appended, never overwritten
    row = df.iloc[0]
    assert row.benchmark == "folder" and row.model == "dlib" and row.metric == "euclidean"
    # 2 people x 2 masked probes vs 2 x 2 unmasked: 16 pairs, 8 genuine.
    assert row.n_genuine == 8 and row.n_impostor == 8 and row.coverage == 1.0
    assert 0 <= row.acc <= 1
    assert row.acc_protocol == "balanced accuracy, 2-fold by probe identity, thresholds from the other folds, " \
                               "histogram bins=65536"
    assert row.n_probes == 4 and row.n_gallery_ids == 2 and row.rank5 == 1.0  # only 2 identities
    assert Path(row.roc_png).is_file() and Path(row.cmc_png).is_file()
    from mfrbench.evaluate import curves_path, load_curves

    (fpr, tpr), cmc = load_curves(curves_path(Path(row.roc_png).parent, row.eval_id))  # the report overlays these
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and fpr[-1] == tpr[-1] == 1.0
    assert cmc[0] == pytest.approx(row.rank1, abs=1e-4) and len(cmc) == 2 and np.all(np.diff(cmc) >= 0)
    proto = tmp_path / "res" / "protocols" / f"folder-{row.protocol_id}"
    meta = json.loads((proto / "protocol.json").read_text())
    assert meta["counts"]["allpairs:masked-unmasked"] == 16 and (proto / "probes.csv").is_file()
    assert df.iloc[1].protocol_id == row.protocol_id  # same data + seed -> same protocol
    bd = pd.read_csv(tmp_path / "res" / "breakdown.csv")
    assert {"pair:masked-unmasked", "pair:masked-masked"} <= set(bd.subset)
    # Second run reused the cached embeddings.
    assert list((tmp_path / "cache").glob("folder-*/emb-*.npz"))


def test_eval_lfw_and_lfw_masked_then_report(kit, lfw_root, tmp_path):
    _dlib_available(kit)
    root = _mini_lfw(kit, tmp_path / "lfw")
    r = _eval(tmp_path, "--benchmark", "lfw", "--root", str(root))
    assert r.exit_code == 0, r.output
    r = _eval(tmp_path, "--benchmark", "lfw-masked", "--root", str(root))
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "res" / "evals.csv")
    lfw, masked = df.iloc[0], df.iloc[1]
    assert lfw.acc_protocol == "2-fold (pairs.txt folds), threshold from the other 1"
    assert lfw.n_genuine == 6 and lfw.n_impostor == 6 and lfw.ci_method.startswith("TAR@FAR: identity bootstrap")
    assert masked.benchmark == "lfw-masked" and masked.n_genuine == 6 and masked.coverage == 1.0
    assert masked.n_probes > 0 and pd.notna(masked.rank1)
    assert "TAR@FAR=1e-4,1e-3,1e-2" in masked.notes  # 6 impostor pairs: flagged
    proto = tmp_path / "res" / "protocols" / f"lfw-masked-{masked.protocol_id}"
    pairs = pd.read_csv(proto / "pairs.csv")
    images = pd.read_csv(proto / "images.csv")
    variants = images.set_index("image_id").variant
    assert ((variants[pairs.a].to_numpy() == "masked") ^ (variants[pairs.b].to_numpy() == "masked")).all()
    assert set(pairs.fold) == {0, 1}
    rep = CliRunner().invoke(cli, ["report", "--results", str(tmp_path / "res"), "--benchmark", "lfw-masked",
                                   "--with-paper"])
    assert rep.exit_code == 0, rep.output
    t2 = pd.read_csv(tmp_path / "res" / "table2.csv")
    assert len(t2) == 13 and t2.eval_id.notna().sum() == 1  # 12 paper rows (empty) + the dlib row
    md = (tmp_path / "res" / "table2.md").read_text()
    assert "Missing cells (12)" in md and "paper Acc" in md
    assert (tmp_path / "res" / "table3.tex").read_text().startswith("\\begin{table}")


def test_eval_bad_inputs(kit, lfw_root, rmfrd_root, tmp_path):
    _dlib_available(kit)
    root = _mini_lfw(kit, tmp_path / "lfw", per_fold=1)
    victim = next(p for p in sorted(root.rglob("*.jpg")))
    victim.unlink()
    r = _eval(tmp_path, "--benchmark", "lfw", "--root", str(root))
    assert r.exit_code != 0 and "name images that do not exist" in r.output and "--allow-missing" in r.output
    assert "Traceback" not in r.output
    r = _eval(tmp_path, "--benchmark", "nope")
    names = "agedb-30, calfw, cfp-ff, cfp-fp, cplfw, folder, lfw, lfw-bin, lfw-masked, mfr2, rmfrd, vgg2-fp"
    assert r.exit_code != 0 and f"Available: {names}" in r.output
    r = CliRunner().invoke(cli, ["eval", "--benchmark", "lfw"])
    assert r.exit_code != 0 and "exactly one of --run" in r.output
    one = _mini_folder(kit, tmp_path / "one", people=1, per=2)
    r = _eval(tmp_path, "--benchmark", "folder", "--root", str(one))
    assert r.exit_code != 0 and "0 impostor pairs: verification needs both" in r.output


def test_embeddings_file_from_another_model_is_rejected(tmp_path):
    from mfrbench.errors import MfrbenchError
    from mfrbench.evaluate import load_embeddings

    f = tmp_path / "e.npz"
    np.savez(f, emb=np.zeros((2, 128), np.float32), keys=np.array(["a", "b"]),
             meta=np.array(json.dumps({"model": "other", "config_hash": "abc"})))
    with pytest.raises(MfrbenchError, match="embeddings of another model"):
        load_embeddings(f, model_info={"model": "dlib", "config_hash": "xyz", "embedding_dim": 128}, keys=["a", "b"])
    with pytest.raises(MfrbenchError, match="holds 128-d embeddings but the model gives 512-d"):
        load_embeddings(f, model_info={"model": "m", "config_hash": "abc", "embedding_dim": 512}, keys=["a", "b"])
    with pytest.raises(MfrbenchError, match="different image list"):
        load_embeddings(f, model_info={"config_hash": "abc", "embedding_dim": 128}, keys=["a"])
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(MfrbenchError, match="not an mfrbench embeddings file"):
        load_embeddings(tmp_path / "junk.npz", model_info={}, keys=[])


def test_model_returning_wrong_size_is_an_error(tmp_path):
    from mfrbench.errors import MfrbenchError
    from mfrbench.evaluate import embed_images
    from mfrbench.imageio import save_image

    class Wrong:
        info = {"model": "wrong", "config_hash": "w"}
        embedding_dim = 8

        def embed(self, images, *, flip=False):
            return np.zeros((len(images), 4), np.float32)

    p = tmp_path / "a.png"
    save_image(p, np.zeros((112, 112, 3), np.uint8))
    with pytest.raises(MfrbenchError, match=r"embeddings of shape \(1, 4\), expected \(1, 8\)"):
        embed_images(Wrong(), [str(p)], flip=False, progress=False)


def test_dlib_chip_geometry():
    """The ArcFace->dlib warp puts the ArcFace template points on dlib's template."""
    from mfrbench.align import ARCFACE_TEMPLATE, transform_points, umeyama_similarity
    from mfrbench.embedders import DLIB_TEMPLATE

    M = umeyama_similarity(ARCFACE_TEMPLATE, DLIB_TEMPLATE)
    err = np.linalg.norm(transform_points(M, ARCFACE_TEMPLATE) - DLIB_TEMPLATE, axis=1)
    assert err.max() < 4.0  # two measured mean-face templates: a similarity fits one onto the other to ~3 px
    bottom = transform_points(M, [[56.0, 112.0]])[0, 1]
    assert 130 < bottom < 140  # the crop's last row lands at chip row ~135 (rows below are black)


@pytest.mark.slow
def test_eval_a_trained_run(kit, lfw_root, tmp_path):
    """train-fr (one step on synthetic faces) -> mfrbench eval --run on lfw-masked: the run's info lands in the row."""
    runner = CliRunner()
    assert runner.invoke(cli, ["synth", "--out", str(tmp_path / "syn"), "--identities", "6",
                               "--per-identity", "3"]).exit_code == 0
    assert runner.invoke(cli, ["align", "--dataset", "synthetic", "--root", str(tmp_path / "syn"), "--out",
                               str(tmp_path / "al"), "--landmarker", "none"]).exit_code == 0
    r = runner.invoke(cli, ["train-fr", "--data", str(tmp_path / "al"), "--embedding-dim", "32", "--epochs", "1",
                            "--batch-size", "8", "--workers", "0", "--max-steps", "1", "--out", str(tmp_path / "run"),
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    root = _mini_lfw(kit, tmp_path / "lfw", per_fold=2)
    r = runner.invoke(cli, ["eval", "--run", str(tmp_path / "run"), "--benchmark", "lfw-masked", "--root", str(root),
                            "--results", str(tmp_path / "res"), "--cache", str(tmp_path / "cache"),
                            "--bootstrap", "20"])
    assert r.exit_code == 0, r.output
    row = pd.read_csv(tmp_path / "res" / "evals.csv").iloc[0]
    assert row.backbone == "iresnet18" and row.loss == "arcface" and row.embedding_dim == 32
    assert row.metric == "cosine" and row.generator == "none" and isinstance(row.config_hash, str)
