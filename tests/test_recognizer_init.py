"""``train-fr --init``: pretrained backbones (train-fr runs, arcface_torch state dicts), iresnet100, fine-tuning.

The always-on tests build state dicts with arcface_torch's key/shape layout from
``../shared/reference/arcface_torch_keys.json`` (random tensors). With
``MFRBENCH_ARCFACE_TORCH=/path/to/insightface/recognition/arcface_torch`` set, the last test also
builds arcface_torch's own r50, mbf and r100 networks and compares their embeddings with ours.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch

from mfrbench.errors import MfrbenchError
from mfrbench.recognizers.backbones import create_backbone
from mfrbench.recognizers.config import TrainConfig
from mfrbench.recognizers.pretrained import (
    InitWeights,
    backbone_frozen,
    init_backbone,
    load_backbone_state,
    read_init,
    rename_keys,
)
from mfrbench.recognizers.train import train

sys.path.insert(0, str(Path(__file__).parent))
from test_recognizer_data import write_crops  # noqa: E402

KEYS_JSON = Path(__file__).resolve().parents[2] / "shared" / "reference" / "arcface_torch_keys.json"
OURS = {"r18": "iresnet18", "r50": "iresnet50", "r100": "iresnet100", "mbf": "mobilefacenet"}
TINY = "timm:test_resnet"


@pytest.fixture(scope="module")
def layouts() -> dict:
    if not KEYS_JSON.is_file():
        pytest.skip(f"arcface_torch key table {KEYS_JSON} not found (the shared reference kit is absent)")
    return json.loads(KEYS_JSON.read_text())


def _random_state(layout: list, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in layout:
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(int(torch.randint(0, 1000, (), generator=g)))
        else:
            out[key] = torch.randn(shape, generator=g)
    return out


@pytest.mark.parametrize("at_name", ["r18", "r50", "mbf"])
def test_arcface_torch_layout_loads_strictly(layouts, at_name):
    """Every tensor of an arcface_torch-shaped state dict lands in our backbone, in arcface_torch's order."""
    model = create_backbone(OURS[at_name])
    state = _random_state(layouts[at_name])
    info = load_backbone_state(model, InitWeights(state, "backbone.pth", "state_dict"), backbone=OURS[at_name],
                               embedding_dim=512)
    ours = model.state_dict()
    assert info["tensors"] == len(ours) == len(layouts[at_name])
    assert info["renamed"] == (len(ours) if at_name == "mbf" else 0)
    # arcface_torch's i-th tensor is our i-th: the rename keeps the state-dict order
    for (key, _), (our_key, value) in zip(layouts[at_name], ours.items()):
        assert torch.equal(value, state[key].to(value.dtype)), (key, our_key)


def test_mbf_rename_rule(layouts):
    model = create_backbone("mobilefacenet")
    renamed, n = rename_keys({k: torch.zeros(s) for k, s in layouts["mbf"]}, model)
    assert n == 333 and list(renamed) == list(model.state_dict())
    assert "layers.0.0.weight" in renamed and "features.2.weight" in renamed  # layers.0.layers.0 / features.layers.2


def test_state_dict_file_and_module_prefix(layouts, tmp_path):
    state = _random_state(layouts["mbf"], seed=3)
    path = tmp_path / "backbone.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)   # a DDP-wrapped save
    model = create_backbone("mobilefacenet")
    info = init_backbone(model, path, backbone="mobilefacenet", embedding_dim=512)
    assert info["kind"] == "state_dict" and info["renamed"] == 333 and len(info["digest"]) == 12
    assert torch.equal(model.state_dict()["features.2.weight"], state["features.layers.2.weight"])


def test_mismatch_is_one_line_naming_keys_and_shapes(layouts):
    state = _random_state(layouts["r18"])
    del state["layer1.0.bn1.weight"]
    state["extra.weight"] = torch.zeros(3)
    with pytest.raises(MfrbenchError) as err:
        load_backbone_state(create_backbone("iresnet18"), InitWeights(state, "x.pth", "state_dict"),
                            backbone="iresnet18", embedding_dim=512)
    msg = str(err.value)
    assert "\n" not in msg
    assert "1 missing: layer1.0.bn1.weight" in msg and "1 unexpected: extra.weight" in msg
    # an r50 file into an r18: the extra blocks are named; a 128-d model: the shapes and the hint
    with pytest.raises(MfrbenchError, match=r"does not fit iresnet18 .*unexpected: layer1\.2\.bn1\.weight"):
        load_backbone_state(create_backbone("iresnet18"), InitWeights(_random_state(layouts["r50"]), "r50.pth",
                                                                     "state_dict"), backbone="iresnet18",
                            embedding_dim=512)
    with pytest.raises(MfrbenchError, match=re.escape("fc.weight (512, 25088) vs (128, 25088)") + ".*--embedding-dim"):
        load_backbone_state(create_backbone("iresnet18", embedding_dim=128),
                            InitWeights(_random_state(layouts["r18"]), "r18.pth", "state_dict"),
                            backbone="iresnet18", embedding_dim=128)


def test_unreadable_and_unsafe_files_are_refused(tmp_path):
    with pytest.raises(MfrbenchError, match="no such file or run folder"):
        read_init(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(MfrbenchError, match="cannot read it as a PyTorch state dict"):
        read_init(tmp_path / "junk.pth")
    torch.save({"model": object.__new__(_Evil)}, tmp_path / "code.pth")  # needs a global: weights_only refuses
    with pytest.raises(MfrbenchError, match="cannot read it as a PyTorch state dict"):
        read_init(tmp_path / "code.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(MfrbenchError, match="expected a state dict"):
        read_init(tmp_path / "list.pth")


class _Evil:
    pass


def test_iresnet100_is_arcface_torch_r100():
    model = create_backbone("iresnet100")
    sd = model.state_dict()
    assert len(sd) == 925  # arcface_torch r100 (formats.md)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 13, 30, 3]
    assert 65.0e6 < sum(p.numel() for p in model.parameters()) < 65.3e6


def test_backbone_frozen_schedule():
    assert not backbone_frozen(0, 0, 10)
    assert backbone_frozen(1.5, 14, 10) and not backbone_frozen(1.5, 15, 10)


# ------------------------------------------------------------------------------ through train()
@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    return write_crops(tmp_path_factory.mktemp("rec_init"), identities=6, per_identity=6)


@pytest.fixture(scope="module")
def base_run(crops, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("base") / "run"
    train(_cfg(crops, out))
    return out


def _cfg(crops: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=(str(crops),), out=str(out), backbone=TINY, embedding_dim=32, head="arcface",
                head_args={"s": 16.0, "m": 0.3}, epochs=1, batch_size=8, lr=0.05, warmup_epochs=0.5, workers=0,
                log_every=1, progress=False, val_identities=2, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def _ckpt(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def test_frozen_backbone_keeps_the_init_weights_and_statistics(crops, base_run, tmp_path):
    """--init RUN with the backbone frozen for the whole run: the backbone (BatchNorm statistics included) is
    the base run's, bit for bit; the head is new and trained; the run records where it started."""
    out = tmp_path / "ft"
    summary = train(_cfg(crops, out, init=str(base_run), freeze_backbone_epochs=1.0, seed=2))
    base, ft = _ckpt(base_run), _ckpt(out)
    assert ft["backbone"].keys() == base["backbone"].keys()
    assert all(torch.equal(ft["backbone"][k], base["backbone"][k]) for k in base["backbone"])
    assert not torch.equal(ft["head"]["weight"], base["head"]["weight"])
    assert summary["init"]["kind"] == "run" and summary["init"]["path"].endswith("last.pt")


def test_backbone_lr_mult_scales_only_the_backbone_group(crops, base_run, tmp_path):
    out = tmp_path / "mult"
    train(_cfg(crops, out, init=str(base_run / "checkpoints" / "last.pt"), backbone_lr_mult=0.1, max_steps=2))
    groups = {g["name"]: g for g in _ckpt(out)["optimizer"]["param_groups"]}
    assert groups["backbone"]["lr"] == pytest.approx(0.1 * groups["head"]["lr"]) and groups["head"]["lr"] > 0
    # the init is read once: a resumed run does not need the file any more
    moved = tmp_path / "moved.pt"
    (base_run / "checkpoints" / "last.pt").rename(moved)
    try:
        summary = train(_cfg(crops, out, init=str(base_run / "checkpoints" / "last.pt"), backbone_lr_mult=0.1),
                        resume=True)
    finally:
        moved.rename(base_run / "checkpoints" / "last.pt")
    assert summary["stopped"] == "finished"


def test_init_from_a_run_of_another_backbone_is_refused(crops, base_run, tmp_path):
    with pytest.raises(MfrbenchError, match=re.escape(f"is a {TINY} run, but this run trains mobilefacenet")):
        train(_cfg(crops, tmp_path / "x", backbone="mobilefacenet", init=str(base_run)))


# ------------------------------------------------------------------ against arcface_torch's own code
def _arcface_torch() -> Path:
    path = os.environ.get("MFRBENCH_ARCFACE_TORCH")
    if not path:
        pytest.skip("set MFRBENCH_ARCFACE_TORCH=/path/to/insightface/recognition/arcface_torch to compare with "
                    "arcface_torch's own r50 and mbf networks")
    p = Path(path)
    if not (p / "backbones" / "__init__.py").is_file():
        pytest.fail(f"MFRBENCH_ARCFACE_TORCH={p} has no backbones/__init__.py (point it at recognition/arcface_torch)")
    return p


def _randomise(net: torch.nn.Module, seed: int) -> None:
    """Random affine/PReLU weights and realistic BatchNorm statistics (cumulative over random batches)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                if m.weight.requires_grad:
                    m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.reset_running_stats()
                m.momentum = None
            elif isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(0.0, 0.5, generator=g)
        net.train()
        for _ in range(2):
            net(torch.rand(8, 3, 112, 112, generator=g) * 2 - 1)
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.momentum = 0.1
    net.eval()


@pytest.mark.parametrize("at_name", ["r50", "mbf", "r100"])
def test_same_embeddings_as_arcface_torch(at_name, tmp_path):
    root = _arcface_torch()
    sys.path.insert(0, str(root))
    try:
        from backbones import get_model
    finally:
        sys.path.remove(str(root))
    torch.manual_seed(0)
    theirs = get_model(at_name, fp16=False, num_features=512)
    _randomise(theirs, seed=1)
    path = tmp_path / "backbone.pth"
    torch.save(theirs.state_dict(), path)
    ours = create_backbone(OURS[at_name])
    init_backbone(ours, path, backbone=OURS[at_name], embedding_dim=512)
    ours.eval()
    x = torch.rand(4, 3, 112, 112, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        a, b = theirs(x), ours(x)
    diff = float((a - b).abs().max())
    print(f"{at_name}: max |arcface_torch - ours| = {diff:.3g} (|embedding| max {float(a.abs().max()):.3g})")
    assert diff < 1e-5
