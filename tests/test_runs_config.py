"""The config resolver (mfrbench.config) and the run folder (mfrbench.runs): layers, typing, resume policy,
atomic checkpoints, device choice."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field

import pytest
import torch

from mfrbench.config import coerce, config_hash, from_dict, pick_profile, resolve, to_dict
from mfrbench.errors import MfrbenchError
from mfrbench.runs import RunDir, atomic_torch_save, choose_device, load_checkpoint


@dataclass(frozen=True)
class Loop:
    lr: float = 0.1
    steps: int = 10
    log_every: int = 5
    data: tuple[str, ...] = ()
    head_args: dict[str, float] = field(default_factory=dict)
    clip: float | None = 5.0
    flip: bool = True
    name: str = "x"


@dataclass(frozen=True)
class Model:
    ngf: int = 64
    stage_steps: tuple[int, int, int] | None = None


# ------------------------------------------------------------------------------------ resolver


def test_layers_apply_in_order_and_given_lists_what_was_set(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lr: 1e-3\nsteps: 7\nlog_every: 3\n")    # PyYAML reads 1e-3 as a string
    r = resolve(Loop, profile={"steps": 5, "name": "prof"}, file=cfg_file, sets=["steps=8", "log_every=2"],
                options={"log_every": 1, "flip": None})
    assert r.config == Loop(lr=0.001, steps=8, log_every=1, name="prof")
    assert r.given == {"steps", "name", "lr", "log_every"}           # flip=None is "not given"
    assert resolve(Loop).given == frozenset() and resolve(Loop).config == Loop()


def test_values_are_typed_from_the_field_types():
    r = resolve(Loop, sets=["data=a,b", "head_args=s:16,m:0.5", "clip=none", "flip=no", "steps=1_000"])
    assert r.config.data == ("a", "b") and r.config.head_args == {"s": 16.0, "m": 0.5}
    assert r.config.clip is None and r.config.flip is False and r.config.steps == 1000
    assert resolve(Model, sets=["stage_steps=[1, 2, 3]"]).config.stage_steps == (1, 2, 3)
    assert resolve(Model, file={"stage_steps": [1, 2, 3]}).config.stage_steps == (1, 2, 3)   # JSON list -> tuple
    assert coerce("7", int | None) == 7 and coerce(3, float) == 3.0 and isinstance(coerce(3, float), float)


@pytest.mark.parametrize("sets, msg", [
    (["lx=1"], "unknown Loop (--set) keys ['lx']; valid keys: clip, data, flip, head_args, log_every, lr, name, steps"),
    (["lr=fast"], "Loop: lr: expected a number, got 'fast'"),
    (["steps=1.5"], "Loop: steps: expected an integer, got '1.5'"),
    (["flip=maybe"], "Loop: flip: expected true or false, got 'maybe'"),
    (["lr"], "--set: expected KEY=VALUE, got 'lr'"),
])
def test_bad_keys_and_values_are_one_line_errors(sets, msg):
    with pytest.raises(MfrbenchError, match=re.escape(msg)):
        resolve(Loop, sets=sets)


def test_unknown_profile_and_lenient_profile():
    with pytest.raises(MfrbenchError, match=re.escape("Unknown profile 'fast'. Available: smoke, cpu")):
        pick_profile({"smoke": {}, "cpu": {}}, "fast")
    with pytest.raises(MfrbenchError, match="unknown Model \\(profile\\) keys \\['pool_size'\\]"):
        resolve(Model, profile={"ngf": 8, "pool_size": 4})
    assert resolve(Model, profile={"ngf": 8, "pool_size": 4}, lenient_profile=True).config.ngf == 8


def test_fixed_values_are_not_counted_as_given():
    r = resolve(Loop, fixed={"name": "method"}, options={"lr": 0.2})
    assert r.config.name == "method" and r.given == {"lr"}


def test_to_dict_from_dict_round_trip_and_stable_hash():
    cfg = Loop(data=("a",), head_args={"s": 1.0}, clip=None)
    d = to_dict(cfg)
    assert d["data"] == ["a"] and from_dict(Loop, json.loads(json.dumps(d))) == cfg
    assert config_hash(cfg) == config_hash(Loop(clip=None, head_args={"s": 1.0}, data=("a",)))
    assert re.fullmatch(r"[0-9a-f]{12}", config_hash(cfg))
    assert config_hash(cfg, exclude={"log_every"}) == config_hash(dataclasses.replace(cfg, log_every=99),
                                                                  exclude={"log_every"})
    nested = {"train": cfg, "model": Model()}
    assert config_hash(nested, exclude={"train.log_every"}) == config_hash(
        {"train": dataclasses.replace(cfg, log_every=1), "model": Model()}, exclude={"train.log_every"})
    assert config_hash(nested) != config_hash({"train": cfg, "model": Model(ngf=8)})


# -------------------------------------------------------------------------------------- RunDir


def _run(tmp_path, **kw) -> RunDir:
    return RunDir(tmp_path / "run", kind="toy", run_control={"log_every"}, extendable={"steps"}, **kw)


def test_new_run_writes_config_and_refuses_to_overwrite_a_trained_run(tmp_path):
    run = _run(tmp_path)
    cfg = run.begin(Loop(lr=0.2))
    record = json.loads(run.config_path.read_text())
    assert record == {"kind": "toy", "config_hash": run.config_hash, "run_control": ["log_every"],
                      "config": to_dict(Loop(lr=0.2))}
    assert run.config_hash == config_hash(cfg, exclude={"log_every"})
    run.save_checkpoint({"w": torch.ones(2), "step": 3}, info={"note": "a"})
    with pytest.raises(MfrbenchError, match="already holds a trained run; pass --resume"):
        _run(tmp_path).begin(Loop())


def test_resume_refuses_a_changed_training_option_naming_both_values(tmp_path):
    _run(tmp_path).begin(Loop(lr=0.2))
    msg = f"--resume: {tmp_path / 'run'} was trained with lr=0.2; this command asks for lr=0.5 (a training option)"
    with pytest.raises(MfrbenchError, match=re.escape(msg)):
        _run(tmp_path).begin(Loop(lr=0.5), resume=True, given={"lr"})
    with pytest.raises(MfrbenchError, match=re.escape("was trained with lr=0.2")):
        _run(tmp_path).begin(Loop(lr=0.5), resume=True)            # given=None: the whole config is the request


def test_resume_honours_run_control_and_keeps_what_was_not_given(tmp_path):
    first = _run(tmp_path)
    first.begin(Loop(lr=0.2, steps=10, log_every=5))
    run = _run(tmp_path)
    # lr left at its default (not given): the saved 0.2 is kept, not the default 0.1
    cfg = run.begin(Loop(steps=30, log_every=1), resume=True, given={"steps", "log_every"})
    assert cfg == Loop(lr=0.2, steps=30, log_every=1)
    assert json.loads(run.config_path.read_text())["config"]["steps"] == 30
    # steps is extendable: hashed (an extended run is not the 10-step run); log_every is run control: not hashed
    assert run.config_hash == config_hash(cfg, exclude={"log_every"}) != first.config_hash
    assert config_hash(dataclasses.replace(cfg, steps=10), exclude={"log_every"}) == first.config_hash


def test_resume_without_a_run_and_of_another_kind(tmp_path):
    with pytest.raises(MfrbenchError, match=re.escape(f"--resume: no run in {tmp_path / 'run'} (no config.json)")):
        _run(tmp_path).begin(Loop(), resume=True)
    RunDir(tmp_path / "run", kind="gan").begin(Loop())
    with pytest.raises(MfrbenchError, match="holds a gan run, not a toy run"):
        _run(tmp_path).begin(Loop(), resume=True)


def test_sections_compare_by_dotted_key(tmp_path):
    run = RunDir(tmp_path / "gan", kind="gan", run_control={"train.log_every"}, extendable={"train.steps"})
    run.begin({"train": Loop(), "model": Model(ngf=8), "faces": "f"})
    again = RunDir(tmp_path / "gan", kind="gan", run_control={"train.log_every"}, extendable={"train.steps"})
    cfg = again.begin({"train": Loop(steps=20), "model": Model(), "faces": "g"}, resume=True, given={"train.steps"})
    assert cfg == {"train": Loop(steps=20), "model": Model(ngf=8), "faces": "f"}
    with pytest.raises(MfrbenchError, match=re.escape("was trained with model.ngf=8; this command asks for "
                                                      "model.ngf=64")):
        again.begin({"train": Loop(), "model": Model(), "faces": "f"}, resume=True, given={"model.ngf"})


def test_checkpoint_round_trip_sidecar_and_weights_only(tmp_path):
    run = _run(tmp_path)
    run.begin(Loop())
    path = run.save_checkpoint({"net": {"w": torch.arange(3.0)}, "step": 7}, info={"val": 0.5})
    assert path == tmp_path / "run" / "checkpoints" / "last.pt" == run.last_checkpoint()
    ck = load_checkpoint(tmp_path / "run")
    assert torch.equal(ck["net"]["w"], torch.arange(3.0)) and ck["step"] == 7 and ck["info"] == {"val": 0.5}
    assert ck["config"] == to_dict(Loop()) and ck["kind"] == "toy" and ck["config_hash"] == run.config_hash
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["step"] == 7 and side["info"] == {"val": 0.5} and "net" not in side
    atomic_torch_save({"obj": Loop()}, tmp_path / "evil.pt")      # a pickled class: refused by weights_only
    with pytest.raises(MfrbenchError, match="cannot read checkpoint .*evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(MfrbenchError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nowhere")


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path):
    run = _run(tmp_path)
    run.begin(Loop())
    run.save_checkpoint({"step": 1})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        run.save_checkpoint({"step": 2, "bad": Boom()})
    assert load_checkpoint(run.path)["step"] == 1
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == ["last.json", "last.pt"]   # no temp files


# -------------------------------------------------------------------------------------- device


def test_choose_device():
    assert choose_device("cpu") == torch.device("cpu") and choose_device(None).type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        assert choose_device("auto") == torch.device("cpu")
        for spec in ("cuda", "cuda:1"):
            with pytest.raises(MfrbenchError, match=re.escape(f"--device {spec}: CUDA is not available")):
                choose_device(spec)
    else:
        assert choose_device("cuda") == torch.device("cuda:0")
        n = torch.cuda.device_count()
        with pytest.raises(MfrbenchError, match=f"this machine has {n} CUDA device"):
            choose_device(f"cuda:{n}")
    with pytest.raises(MfrbenchError, match=re.escape("--device gpu: expected auto, cpu, cuda or cuda:N")):
        choose_device("gpu")
