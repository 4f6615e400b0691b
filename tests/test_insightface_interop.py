"""insightface interop: our norm_crop equals insightface's at 112/128/224/256; model-zoo recognizers and
SCRFD packs through insightface.model_zoo (those skipped when insightface is not installed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mfrbench.align import AlignConfig, estimate_norm, norm_crop, template_for
from mfrbench.errors import MfrbenchError

#: Five points (ArcFace order) of a face in a 512x512 photo.
LMK = np.array([[101.3, 118.9], [158.2, 121.4], [128.7, 152.6], [106.1, 181.0], [152.9, 183.3]], np.float32)

#: ``estimate_norm(LMK, size)`` of insightface's own python-package/insightface/utils/face_align.py
#: (deepinsight/insightface at commit 7fadd420; the same file as the insightface 2.1 wheel), computed outside this
#: repository with scikit-image 0.26, rounded to 6 decimals. Not copied code: the numbers it gives.
INSIGHTFACE_M = {
    112: [[0.640733, 0.016902, -29.469938], [-0.016902, 0.640733, -22.94399]],
    128: [[0.640733, 0.016902, -21.469938], [-0.016902, 0.640733, -22.94399]],
    224: [[1.281466, 0.033804, -58.939876], [-0.033804, 1.281466, -45.88798]],
    256: [[1.281466, 0.033804, -42.939876], [-0.033804, 1.281466, -45.88798]],
}


@pytest.mark.parametrize("size", sorted(INSIGHTFACE_M))
def test_norm_crop_matrix_is_insightfaces(size):
    np.testing.assert_allclose(estimate_norm(LMK, size), INSIGHTFACE_M[size], atol=5e-5)


def test_templates_at_128_and_256_are_shifted_not_stretched():
    np.testing.assert_allclose(template_for(128) - template_for(112), [[8.0, 0.0]] * 5, atol=1e-5)
    np.testing.assert_allclose(template_for(256), template_for(128) * 2, atol=1e-4)
    np.testing.assert_allclose(template_for(224), template_for(112) * 2, atol=1e-4)
    np.testing.assert_allclose(template_for(160), template_for(112) * 160 / 112, atol=1e-4)  # insightface: refused


@pytest.mark.parametrize("size", sorted(INSIGHTFACE_M))
def test_norm_crop_pixels_are_insightfaces(size):
    """insightface's norm_crop is cv2.warpAffine(img, M, (size, size), borderValue=0) with its M."""
    import cv2

    img = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 3)  # smooth, so one ulp of M never moves a pixel by more than 1 level
    ours, _ = norm_crop(img, LMK, size)
    theirs = cv2.warpAffine(img, np.array(INSIGHTFACE_M[size], np.float64), (size, size), borderValue=0.0)
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert ours.shape == (size, size, 3) and diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_norm_crop_equals_installed_insightface():
    fa = pytest.importorskip("insightface.utils.face_align", reason="insightface not installed")
    pytest.importorskip("skimage")
    img = np.random.default_rng(1).integers(0, 256, (400, 300, 3), dtype=np.uint8)
    for size in (112, 128, 224, 256):
        np.testing.assert_allclose(estimate_norm(LMK, size), fa.estimate_norm(LMK, size), atol=5e-5)
        diff = np.abs(norm_crop(img, LMK, size)[0].astype(int) - fa.norm_crop(img, LMK, size).astype(int))
        assert (diff == 0).mean() > 0.99, size


def _onnx_recognizer(path: Path) -> Path:
    """A small recognizer exported to ONNX (static 112x112 input, dynamic batch), as `mfrbench export` writes."""
    import torch

    from mfrbench.recognizers.backbones import create_backbone

    torch.manual_seed(0)
    model = create_backbone("mobilefacenet", embedding_dim=128).eval()
    torch.onnx.export(model, (torch.zeros(2, 3, 112, 112),), str(path), dynamo=False, input_names=["input"],
                      output_names=["embedding"], dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                      opset_version=17)
    return path


def test_model_zoo_recognizer_equals_our_onnx_path(tmp_path):
    pytest.importorskip("insightface.model_zoo", reason="pip install 'mfrbench[insightface]'")
    pytest.importorskip("onnxruntime")
    from mfrbench.embedders import InsightFaceEmbedder, load_model
    from mfrbench.recognizers.embed import load_embedder

    path = _onnx_recognizer(tmp_path / "rec.onnx")
    faces = np.random.default_rng(2).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    ours = load_embedder(path, device="cpu").embed(faces, flip=True)
    theirs = load_model(f"insightface:{path}", device="cpu")
    assert isinstance(theirs, InsightFaceEmbedder) and theirs.embedding_dim == 128
    got = theirs.embed(faces, flip=True)
    np.testing.assert_allclose(got, ours, rtol=1e-4, atol=1e-4)
    cos = (got * ours).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ours, axis=1)
    assert cos.min() > 0.99999
    assert theirs.info["model"] == "insightface:rec.onnx" and len(theirs.info["config_hash"]) == 12


def test_insightface_needs_a_pack_and_a_model(tmp_path):
    with pytest.raises(MfrbenchError, match="--detector insightface needs --model-pack DIR"):
        AlignConfig(detector="insightface")
    from mfrbench.faces import InsightFaceDetector

    with pytest.raises(MfrbenchError, match="no detector in the model pack"):
        InsightFaceDetector(model_pack=str(tmp_path))
    pytest.importorskip("insightface.model_zoo", reason="insightface not installed")
    from mfrbench.embedders import load_model

    with pytest.raises(MfrbenchError, match="no insightface model at"):
        load_model(f"insightface:{tmp_path / 'nope.onnx'}")


def scrfd_stub_pack(folder: Path) -> Path:
    """A model pack whose det_stub.onnx has SCRFD's 9-output layout (strides 8/16/32 x score, box, 5 points;
    2 anchors) with constant outputs: one face, anchor centre (320, 256) of the 640 px input, box
    (256, 192)-(384, 352), eyes at y 240. insightface's own SCRFD decoding turns it into a detection."""
    from onnx import TensorProto, helper, numpy_helper, save

    arrays = {(k, s): np.zeros((n, w), np.float32) for s in (8, 16, 32) for k, w in (("score", 1), ("bbox", 4),
              ("kps", 10)) for n in [(640 // s) ** 2 * 2]}
    i = (8 * 20 + 10) * 2  # stride 32: grid x=10, y=8, first anchor
    arrays["score", 32][i] = 0.9
    arrays["bbox", 32][i] = [2, 2, 2, 3]  # left, top, right, bottom distances in strides
    arrays["kps", 32][i] = [-1, -0.5, 1, -0.5, 0, 0.5, -0.8, 1.5, 0.8, 1.5]
    nodes, outs = [], []
    for kind in ("score", "bbox", "kps"):  # SCRFD's output order: all scores, all boxes, all points
        for s in (8, 16, 32):
            a, name = arrays[kind, s], f"{kind}_{s}"
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(a, name + "_v")))
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(a.shape)))
    graph = helper.make_graph(nodes, "scrfd_stub", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                                                  [1, 3, 640, 640])], outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    save(model, str(folder / "det_stub.onnx"))
    return folder


def test_insightface_detector_decodes_a_scrfd_pack(tmp_path):
    pytest.importorskip("insightface.model_zoo", reason="pip install 'mfrbench[insightface]'")
    from mfrbench.faces import DETECTORS

    det = DETECTORS.create("insightface", model_pack=str(scrfd_stub_pack(tmp_path / "pack")), score_threshold=0.5)
    want5 = [[288, 240], [352, 240], [320, 272], [294.4, 304], [345.6, 304]]
    (face,) = det.detect(np.full((640, 640, 3), 128, np.uint8))
    np.testing.assert_allclose(face.bbox, [256, 192, 384, 352], atol=1e-3)
    np.testing.assert_allclose(face.lmk5, want5, atol=1e-3)
    assert abs(face.score - 0.9) < 1e-6
    (half,) = det.detect(np.full((320, 320, 3), 128, np.uint8))  # letterboxed into 640: coordinates halved
    np.testing.assert_allclose(half.lmk5, np.array(want5) / 2, atol=1e-3)


def test_align_cli_with_an_insightface_pack(tmp_path):
    pytest.importorskip("insightface.model_zoo", reason="pip install 'mfrbench[insightface]'")
    from click.testing import CliRunner

    from mfrbench.cli import cli
    from mfrbench.imageio import save_image
    from mfrbench.manifest import read_manifest

    save_image(tmp_path / "faces" / "id0" / "a.png", np.full((640, 640, 3), 128, np.uint8))
    pack = scrfd_stub_pack(tmp_path / "pack")
    res = CliRunner().invoke(cli, ["align", "--dataset", "folder", "--root", str(tmp_path / "faces"), "--out",
                                   str(tmp_path / "out"), "--detector", "insightface", "--model-pack", str(pack),
                                   "--landmarker", "none", "--no-grid", "--size", "128"])
    assert res.exit_code == 0, res.output
    (row,) = read_manifest(tmp_path / "out").to_dict("records")
    assert row["status"] == "ok" and row["lmk_source"] == "detector:insightface"
    np.testing.assert_allclose(np.reshape(row["lmk5_crop"], (5, 2)), template_for(128), atol=6.0)
    res = CliRunner().invoke(cli, ["align", "--dataset", "folder", "--root", str(tmp_path / "faces"), "--out",
                                   str(tmp_path / "o2"), "--detector", "insightface"])
    assert res.exit_code != 0 and "--detector insightface needs --model-pack DIR" in res.output


@pytest.mark.skipif(not os.environ.get("MFRBENCH_INSIGHTFACE_PACK"),
                    reason="set MFRBENCH_INSIGHTFACE_PACK to an insightface model pack folder (e.g. buffalo_l)")
def test_align_with_a_users_scrfd_pack(tmp_path):
    pytest.importorskip("insightface.model_zoo")
    skimage_data = pytest.importorskip("skimage.data")
    from mfrbench.faces import DETECTORS

    det = DETECTORS.create("insightface", model_pack=os.environ["MFRBENCH_INSIGHTFACE_PACK"], score_threshold=0.5)
    faces = det.detect(skimage_data.astronaut())
    assert len(faces) >= 1 and faces[0].lmk5.shape == (5, 2)
