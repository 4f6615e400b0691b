"""MFGAN end to end on real shared data: tiny Seg/Det runs trained here, then every preset through
``mfrbench train-gen --profile smoke`` (all three stages), resume across a stage boundary, and
reference-guided ``mfrbench generate``.

The session fixture aligns 24 CelebA photos (YuNet + 68 points), masks them with ``mtf``
(random wearing, so Det sees correct and incorrect examples), trains ``Seg`` and ``Det`` with
their ``smoke`` profiles, and aligns 24 real masked photos once for every GAN run.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from mfrbench.cli import cli

pytestmark = pytest.mark.data


@pytest.fixture(scope="session")
def mfgan_kit(tmp_path_factory, celeba_root, masked_photos_root, models_root):
    from mfrbench.align import AlignConfig, align_dataset
    from mfrbench.datasets import create_dataset
    from mfrbench.generators.base import generate_dataset
    from mfrbench.generators.seg import train_aux

    base = tmp_path_factory.mktemp("mfgan_kit")
    faces = base / "faces"
    align_dataset(create_dataset("celeba", celeba_root), faces, limit=24, cfg=AlignConfig(size=112), progress=False)
    masks = base / "masks"
    align_dataset(create_dataset("masked-photos", masked_photos_root), masks, limit=40,
                  cfg=AlignConfig(landmarker="none", size=112, ext=".png"), progress=False)
    mtf = base / "mtf"
    generate_dataset("mtf", mtf, manifest=faces, seed=0, progress=False,
                     generator_kwargs={"mask_type": "random", "wearing": "random"})
    seg, det = base / "seg", base / "det"
    train_aux("seg", [str(mtf)], seg, unmasked=[str(faces)], profile="smoke", progress=False)
    train_aux("det", [str(mtf)], det, unmasked=[str(faces)], profile="smoke", progress=False)
    return {"faces": faces, "masks": masks, "seg": seg, "det": det, "base": base}


def _train(kit, method: str, out: Path, *extra: str):
    args = ["train-gen", "--method", method, "--profile", "smoke", "--faces", str(kit["faces"]), "--masks",
            str(kit["masks"]), "--det", str(kit["det"]), "--seg", str(kit["seg"]), "--out", str(out), *extra]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def _rows(run: Path) -> list[dict]:
    with open(run / "losses.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method", ["mfgan", "mfgan-no-inv", "mfgan-no-cor", "mfgan-no-sty"])
def test_train_gen_smoke_every_preset(mfgan_kit, tmp_path, method):
    from mfrbench.generators import mfgan as M
    from mfrbench.generators.gan.checkpoint import load_gan

    run = tmp_path / method
    _train(mfgan_kit, method, run, "--stage-steps", "1,1,1")
    gan = load_gan(run)
    assert gan.train_cfg.method == method and gan.step == 3 and gan.stages == (1, 1, 1)
    rows = _rows(run)
    for r in rows:
        stage = int(float(r["stage"]))
        logged = sorted(k for k, v in r.items() if v not in ("", None) and k not in ("step", "lr"))
        assert logged == sorted(M.active_terms(gan.cfg, stage))
    for s in (1, 2, 3):
        rep = json.loads((run / "stages" / f"stage{s}.json").read_text())
        # a 6-step Seg may call everything mask: then SSIM is undefined (NaN), never a made-up 0
        assert rep["stage"] == s and 0 <= rep["nose_cov"] <= 1
        assert math.isnan(rep["ssim_nonmask"]) or -1 <= rep["ssim_nonmask"] <= 1
        assert ("correct_wearing" in rep) == (gan.det is not None)
        assert (run / "stages" / f"stage{s}_grid.png").is_file()
    assert bool(gan.domains.fitted)


def test_resume_across_stage_boundary_and_generate(mfgan_kit, tmp_path):
    """Interrupted after step 2 (end of stage 2) and resumed with `train-gen --resume` == one 3-step run."""
    import torch

    from mfrbench.generators.gan.checkpoint import load_checkpoint, load_gan
    from mfrbench.generators.gan.config import data_spec, resolve_config, run_config
    from mfrbench.generators.gan.contract import build_gan
    from mfrbench.generators.gan.data import load_domain
    from mfrbench.generators.gan.fit import fit
    from mfrbench.manifest import read_manifest

    full, part = tmp_path / "full", tmp_path / "part"
    _train(mfgan_kit, "mfgan", full, "--stage-steps", "1,1,1")
    model = {"det_checkpoint": str(mfgan_kit["det"]), "seg_checkpoint": str(mfgan_kit["seg"]), "stage_steps": [1, 1, 1]}
    train, cfg = resolve_config("mfgan", "smoke", train={"steps": 3}, model=model)
    config = run_config(train, cfg, profile="smoke", faces=data_spec(mfgan_kit["faces"]),
                        masks=data_spec(mfgan_kit["masks"]))
    faces = load_domain("faces", mfgan_kit["faces"], part / "data" / "faces", size=train.size,
                        limit=train.max_faces, progress=False)
    masks = load_domain("masks", mfgan_kit["masks"], part / "data" / "masks", size=train.size,
                        limit=train.max_masks, masked=True, min_face_px=train.min_face_px, progress=False)
    gan = build_gan(train, cfg)

    def stop(step, **_):
        if step == 3:                           # smoke checkpoints every 2 steps: the last one is step 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(gan, faces, masks, part, config=config, progress=False, callbacks=[stop])
    assert load_checkpoint(part)["state"]["step"] == 2
    res = _train(mfgan_kit, "mfgan", part, "--resume")
    assert "3 steps (1 this run" in res.output
    a, b = load_gan(full), load_gan(part)
    for name, net in a.networks().items():
        for (k, x), y in zip(net.state_dict().items(), b.networks()[name].state_dict().values()):
            assert torch.equal(x, y), (name, k)
    # reference-guided generation on the aligned faces, twice with the same seed
    outs = []
    for tag in ("g1", "g2"):
        out = tmp_path / tag
        r = CliRunner().invoke(cli, ["generate", "--method", "mfgan", "--checkpoint", str(full), "--manifest",
                                     str(mfgan_kit["faces"]), "--reference", str(mfgan_kit["masks"]),
                                     "--reference-mode", "random", "--seed", "3", "--out", str(out), "--limit", "6",
                                     "--format", "png"])
        assert r.exit_code == 0, r.output + repr(r.exception)
        outs.append(read_manifest(out, status="ok"))
    df1, df2 = outs
    assert len(df1) >= 4 and {"reference", "style_domain", "reference_mode"} <= set(df1.columns)
    assert list(df1["reference"]) == list(df2["reference"])
    for p1, p2 in zip(df1["abs_out_path"], df2["abs_out_path"]):
        assert Path(p1).read_bytes() == Path(p2).read_bytes()
