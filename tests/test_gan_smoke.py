"""End-to-end on the real data kit: train-gen smoke runs (cyclegan, iamgan), generation, Seg/Det, CLIs.

CelebA photos are the Face domain, the real masked photos (RMFD) the Mask domain; Seg/Det are
trained on mtf output made from the same aligned crops. Everything uses the ``smoke`` profiles.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mfrbench.cli import cli
from mfrbench.errors import MfrbenchError
from mfrbench.generators.base import create_generator
from mfrbench.imageio import load_rgb

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def work(tmp_path_factory, celeba_root, masked_photos_root, models_root):
    """Aligned CelebA crops (with 68 points), their mtf version, and a smoke-trained Seg."""
    from mfrbench.align import AlignConfig, align_dataset
    from mfrbench.datasets import create_dataset
    from mfrbench.generators.base import generate_dataset
    from mfrbench.generators.seg import train_aux

    d = tmp_path_factory.mktemp("gan")
    align_dataset(create_dataset("celeba", celeba_root), d / "aligned", limit=24, cfg=AlignConfig(landmarker="pfld"),
                  progress=False)
    generate_dataset("mtf", d / "mtf", manifest=d / "aligned", seed=0, progress=False,
                     generator_kwargs={"mask_type": "random", "wearing": "random"})
    train_aux("seg", [str(d / "mtf")], d / "seg", unmasked=[str(d / "aligned")], profile="smoke", progress=False)
    return {"dir": d, "faces": celeba_root / "img_celeba", "masks": masked_photos_root}


def _train(work, method: str, out: Path, *extra: str):
    args = ["train-gen", "--method", method, "--profile", "smoke", "--faces", str(work["faces"]), "--masks",
            str(work["masks"]), "--max-faces", "8", "--max-masks", "14", "--threads", "1", "--out", str(out), *extra]
    return CliRunner().invoke(cli, args)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cyclegan_smoke_trains_generates_and_refuses_overwrite(work, tmp_path):
    run = tmp_path / "cg"
    res = _train(work, "cyclegan", run)
    assert res.exit_code == 0, res.output
    assert "4 steps" in res.output and (run / "checkpoints" / "last.pt").is_file() and (run / "config.json").is_file()
    grid = load_rgb(run / "samples" / "step_0000004.png", min_side=1)
    assert grid.shape[0] > 4 * 64                                 # 4 rows: faces, fakes, masks, unmasked masks
    log = _rows(run / "losses.csv")
    assert [int(r["step"]) for r in log] == [1, 2, 3, 4] and {"G_M_gan", "cyc_F", "D_M"} <= set(log[0])
    assert all(np.isfinite(float(r["cyc_F"])) for r in log)
    masks_cache = pd.read_csv(run / "data" / "masks" / "manifest.csv")
    assert len(masks_cache) == 14 and set(masks_cache["status"]) <= {"ok", "skipped"}  # every photo has a row

    again = _train(work, "cyclegan", run)
    assert again.exit_code != 0 and "pass --resume" in again.output and "Traceback" not in again.output

    gen = create_generator("cyclegan", checkpoint=str(run), seg_checkpoint=str(work["dir"] / "seg"))
    crops = np.stack([load_rgb(p, min_side=1) for p in sorted((work["dir"] / "aligned" / "images").rglob("*.jpg"))[:3]])
    out = gen.generate(crops, None, rng=np.random.default_rng(0))
    assert out.images.shape == crops.shape and out.images.dtype == np.uint8
    assert out.mask_maps.shape == crops.shape[:3] and set(np.unique(out.mask_maps)) <= {0, 1}
    assert not np.array_equal(out.images, crops) and out.info[0]["mask_map_source"] == "seg"


def test_gan_generator_needs_a_checkpoint():
    with pytest.raises(MfrbenchError, match="needs --checkpoint RUN_DIR"):
        create_generator("cyclegan")


def test_iamgan_smoke_uses_seg_and_generates_through_the_driver(work, tmp_path):
    run = tmp_path / "iam"
    res = _train(work, "iamgan", run, "--set", f"seg_checkpoint={work['dir'] / 'seg'}")
    assert res.exit_code == 0, res.output
    log = _rows(run / "losses.csv")
    assert "pix" in log[0] and all(float(r["pix"]) > 0 for r in log)

    missing = _train(work, "iamgan", tmp_path / "iam2")
    assert missing.exit_code != 0 and "seg_checkpoint" in missing.output

    from mfrbench.generators.base import generate_dataset

    meta = generate_dataset("iamgan", tmp_path / "gen", manifest=work["dir"] / "aligned", limit=5, progress=False,
                            generator_kwargs={"checkpoint": str(run)})
    assert meta["ok"] == 5
    df = pd.read_csv(tmp_path / "gen" / "manifest.csv")
    assert set(df["mask_map_source"]) == {"seg"} and set(df["generator"]) == {"iamgan"}


def test_seg_and_det_train_and_their_clis(work, tmp_path):
    from mfrbench.generators.seg import train_aux

    d = work["dir"]
    m = train_aux("det", [str(d / "mtf")], tmp_path / "det", unmasked=[str(d / "aligned")], profile="smoke",
                  progress=False)
    held = m["heldout"]
    assert {"acc_eyes", "acc_nose", "acc_mouth", "acc_chin", "acc_wearing"} <= set(held)
    assert sum(map(sum, held["confusion"])) == m["heldout_images"] > 0

    crops = tmp_path / "crops"
    crops.mkdir()
    for p in sorted((d / "mtf" / "images").rglob("*.jpg"))[:3]:
        shutil.copy(p, crops / p.name)
    res = CliRunner().invoke(cli, ["segment", "--checkpoint", str(d / "seg"), "--input", str(crops), "--out",
                                   str(tmp_path / "maps"), "--no-align"])
    assert res.exit_code == 0, res.output
    for p in crops.iterdir():
        m = load_rgb(tmp_path / "maps" / (p.name + ".png"), min_side=1)  # a.jpg -> a.jpg.png (output_rel)
        assert m.shape[:2] == load_rgb(p, min_side=1).shape[:2] and set(np.unique(m)) <= {0, 1}

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(work["masks"].rglob("*.jpg"))[:3]:
        shutil.copy(p, photos / p.name)
    res = CliRunner().invoke(cli, ["segment", "--checkpoint", str(d / "seg"), "--input", str(photos), "--out",
                                   str(tmp_path / "pmaps")])
    assert res.exit_code == 0, res.output
    for p in photos.iterdir():
        assert load_rgb(tmp_path / "pmaps" / (p.name + ".png"), min_side=1).shape[:2] == load_rgb(p).shape[:2]

    res = CliRunner().invoke(cli, ["detect-parts", "--checkpoint", str(tmp_path / "det"), "--input", str(photos),
                                   "--out", str(tmp_path / "parts.csv")])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "parts.csv")
    assert len(df) == 3 and {"file", "p_eyes", "p_nose", "p_mouth", "p_chin", "wearing"} <= set(df.columns)
    assert set(df["wearing"]) <= {"correct", "incorrect", "none"}
    assert df[["p_eyes", "p_nose", "p_mouth", "p_chin"]].apply(lambda c: c.between(0, 1).all()).all()

    bad = CliRunner().invoke(cli, ["segment", "--checkpoint", str(tmp_path / "det"), "--input", str(photos),
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "holds a det model, not seg" in bad.output


def test_train_aux_with_real_photos_reads_them_out_apart(work, tmp_path):
    """`train-aux --real-masked` on the kit's masked photos: a smoke run writes the held-out real read-out."""
    import json

    d, run = work["dir"], tmp_path / "det-real"
    res = CliRunner().invoke(cli, ["train-aux", "--module", "det", "--data", str(d / "mtf"), "--faces",
                                   str(d / "aligned"), "--real-masked", str(work["masks"]), "--max-images", "16",
                                   "--set", "real_min_face_px=0", "--profile", "smoke", "--threads", "1",
                                   "--no-progress", "--out", str(run)])
    assert res.exit_code == 0, res.output
    assert "held-out real photos: n_masked=" in res.output
    m = json.loads((run / "metrics.json").read_text())
    split = json.loads((run / "real_split.json").read_text())["inputs"]["real_masked"][str(work["masks"].resolve())]
    assert m["real"]["n_masked"] == len(split["heldout"]) == m["heldout_real_masked"] > 0
    assert m["train_real_masked"] == len(split["train"]) > 0 and not set(split["train"]) & set(split["heldout"])
    assert m["real"]["n_faces"] == m["heldout"]["n_none"] > 0        # the --faces rows of the mtf validation
    assert {"det_present_masked", "det_wearing_masked", "det_wearing_faces"} <= set(m["real"])
    assert "acc_wearing" in m["heldout"]                              # the mtf validation, as before
