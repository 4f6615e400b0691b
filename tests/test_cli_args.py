"""What `train-fr` and `train-aux --module seg|det` hand to the library, option by option.

Each command is invoked through click's CliRunner with the library function replaced by a recorder,
every option set to a non-default value. A test fails when an option is parsed but dropped (as
`train-gen --threads` was: parsed, never passed on, and the suite stayed green), and when a new
option is added to a command without a line here (the tables must cover every parameter).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mfrbench.cli import cli

# option name (click's parameter name) -> (argv, TrainConfig field, expected value)
TRAIN_FR = {
    "data": (["--data", "a", "--data", "b"], "data", ("a", "b")),
    "backbone": (["--backbone", "iresnet50"], "backbone", "iresnet50"),
    "head": (["--loss", "cosface"], "head", "cosface"),
    "head_arg": (["--head-arg", "s=16", "--head-arg", "m=0.3"], "head_args", {"s": 16.0, "m": 0.3}),
    "embedding_dim": (["--embedding-dim", "128"], "embedding_dim", 128),
    "epochs": (["--epochs", "3"], "epochs", 3),
    "batch_size": (["--batch-size", "32"], "batch_size", 32),
    "lr": (["--lr", "0.05"], "lr", 0.05),
    "optimizer": (["--optimizer", "adamw"], "optimizer", "adamw"),
    "weight_decay": (["--weight-decay", "0.01"], "weight_decay", 0.01),
    "schedule": (["--schedule", "step"], "schedule", "step"),
    "warmup_epochs": (["--warmup-epochs", "0.5"], "warmup_epochs", 0.5),
    "milestones": (["--milestones", "1,2"], "milestones", (1.0, 2.0)),
    "mask_ratio": (["--mask-ratio", "0.5"], "mask_ratio", 0.5),
    "val_identities": (["--val-identities", "3"], "val_identities", 3.0),
    "images_per_identity": (["--images-per-identity", "3"], "images_per_identity", 3),
    "amp": (["--no-amp"], "amp", False),
    "channels_last": (["--no-channels-last"], "channels_last", False),
    "workers": (["--workers", "0"], "workers", 0),
    "device": (["--device", "cpu"], "device", "cpu"),
    "seed": (["--seed", "7"], "seed", 7),
    "max_steps": (["--max-steps", "5"], "max_steps", 5),
    "time_budget": (["--time-budget", "5m"], "time_budget_s", 300.0),
    "log_every": (["--log-every", "2"], "log_every", 2),
    "ckpt_every": (["--ckpt-every", "4"], "ckpt_every", 4),
    "out": (["--out", "RUN"], "out", "RUN"),
    "init": (["--init", "backbone.pth"], "init", "backbone.pth"),          # read when training starts (issue 16)
    "backbone_lr_mult": (["--backbone-lr-mult", "0.1"], "backbone_lr_mult", 0.1),
    "freeze_backbone_epochs": (["--freeze-backbone-epochs", "2"], "freeze_backbone_epochs", 2.0),
    "gray": (["--gray", "0.5"], "gray", 0.5),
    "input_size": (["--input-size", "96"], "input_size", 96),
    "profile": (["--profile", "cpu"], "profile", "cpu"),                    # its recipe sits under the options
    "mask_aug": (["--mask-aug", "mtf:p=0.5"], "mask_aug", "mtf:p=0.5"),   # built by the CLI's factory (issue 16)
    "config_path": (["--config", "CONFIG"], "gamma", 0.5),               # the file says gamma: 0.5
    "sets": (["--set", "color_jitter=0.25", "--set", "clip_grad=none"], "color_jitter", 0.25),
    "no_progress": (["--no-progress"], "progress", False),
    "resume": (["--resume"], None, None),                                  # checked on the call itself
}


def _argv(table: dict, tmp_path: Path, config_text: str) -> list[str]:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config_text)
    subs = {"RUN": str(tmp_path / "run"), "CONFIG": str(cfg)}
    return [subs.get(a, a) for argv, *_ in table.values() for a in argv]


def _params(command: str) -> set[str]:
    return {p.name for p in cli.commands[command].params}


def test_train_fr_table_covers_every_option():
    assert _params("train-fr") == set(TRAIN_FR)


def test_train_fr_passes_every_option_to_train(monkeypatch, tmp_path):
    import mfrbench.recognizers.train as train_mod

    calls = []

    def fake_train(cfg, *, resume=False, given=None, augment_factory=None):
        from mfrbench.generators.augment import parse_mask_aug

        assert augment_factory is parse_mask_aug  # recognizers/ never imports generators/: the CLI hands it over
        calls.append((cfg, resume, set(given)))
        return {"stopped": "finished", "epoch": 1, "global_step": 1, "images_per_s": 1.0, "checkpoint": "x",
                "world_size": 1}

    monkeypatch.setattr(train_mod, "train", fake_train)
    r = CliRunner().invoke(cli, ["train-fr", *_argv(TRAIN_FR, tmp_path, "gamma: 0.5\n")])
    assert r.exit_code == 0, r.output
    (cfg, resume, given), = calls
    assert resume is True
    for name, (_, fld, expected) in TRAIN_FR.items():
        if fld is not None:
            value = getattr(cfg, fld)
            expected = str(tmp_path / "run") if expected == "RUN" else expected
            assert value == expected, f"{name}: {fld}={value!r}, expected {expected!r}"
            assert fld in given, f"{name}: {fld} not marked as given (a resume would drop it)"
    assert cfg.clip_grad is None
    # what the user did not set is not "given": on --resume the saved value is kept
    assert "flip" not in given and "momentum" not in given


def test_train_fr_without_options_gives_nothing(monkeypatch, tmp_path):
    import mfrbench.recognizers.train as train_mod

    calls = []
    monkeypatch.setattr(train_mod, "train", lambda cfg, *, resume=False, given=None, **kw: calls.append(given) or
                        {"stopped": "finished", "epoch": 1, "global_step": 1, "images_per_s": 1.0, "checkpoint": "x"})
    r = CliRunner().invoke(cli, ["train-fr", "--out", str(tmp_path / "r"), "--resume"])
    assert r.exit_code == 0, r.output
    assert calls == [frozenset({"out"})]


# option name -> (argv, where the value must arrive: ("kw", name) for a train_aux argument, ("cfg", field) for
# the resolved AuxConfig, expected value)
TRAIN_AUX = {
    "module": (["--module", "MODULE"], ("kw", "module"), "MODULE"),
    "masked": (["--data", "m1", "--data", "m2"], ("kw", "masked"), ["m1", "m2"]),
    "unmasked": (["--faces", "f1"], ("kw", "unmasked"), ["f1"]),
    "real_masked": (["--real-masked", "r1", "--real-masked", "r2"], ("kw", "real_masked"), ["r1", "r2"]),
    "real_faces": (["--real-faces", "u1"], ("kw", "real_faces"), ["u1"]),
    "out": (["--out", "RUN"], ("kw", "out"), "RUN"),
    "profile": (["--profile", "cpu"], ("kw", "profile"), "cpu"),         # its keys are all overridden below
    "config_file": (["--config", "CONFIG"], ("cfg", "weight_decay"), 0.5),  # the file says weight_decay: 0.5
    "sets": (["--set", "lr=5e-4", "--set", "base=8"], ("cfg", "lr"), 5e-4),
    "steps": (["--steps", "7"], ("cfg", "steps"), 7),
    "batch_size": (["--batch-size", "3"], ("cfg", "batch_size"), 3),
    "size": (["--size", "48"], ("cfg", "size"), 48),
    "max_images": (["--max-images", "9"], ("cfg", "max_images"), 9),
    "eval_every": (["--eval-every", "2"], ("cfg", "eval_every"), 2),    # overrides the profile's 250
    "seed": (["--seed", "5"], ("cfg", "seed"), 5),
    "device": (["--device", "cpu"], ("kw", "device"), "cpu"),
    "threads": (["--threads", "1"], ("kw", "threads"), 1),
    "resume": (["--resume"], ("kw", "resume"), True),
    "no_progress": (["--no-progress"], ("kw", "progress"), False),
}


def test_train_aux_table_covers_every_option():
    assert _params("train-aux") == set(TRAIN_AUX)


@pytest.mark.parametrize("module", ["seg", "det"])
def test_train_aux_passes_every_option_to_train_aux(monkeypatch, tmp_path, module):
    """The arguments train_aux receives, and the config they resolve to (its own resolver, unmocked)."""
    import mfrbench.generators.seg as seg_mod

    calls = []

    def fake_train_aux(module, masked=(), out="runs/aux", **kw):
        cfg = seg_mod.resolve_aux_config(module, profile=kw["profile"], config_file=kw["config_file"],
                                         sets=kw["sets"], overrides=kw["overrides"]).config
        calls.append(({"module": module, "masked": masked, "out": out, **kw}, cfg))
        return {"train_images": 1, "heldout_images": 1, "seconds": 0.0, "heldout": {}, "checkpoint": "x"}

    monkeypatch.setattr(seg_mod, "train_aux", fake_train_aux)
    table = {k: ([module if a == "MODULE" else a for a in argv], where, module if exp == "MODULE" else exp)
             for k, (argv, where, exp) in TRAIN_AUX.items()}
    r = CliRunner().invoke(cli, ["train-aux", *_argv(table, tmp_path, "weight_decay: 0.5\n")])
    assert r.exit_code == 0, r.output
    (kw, cfg), = calls
    assert cfg.module == module and cfg.base == 8
    for name, (_, (kind, key), expected) in table.items():
        expected = str(tmp_path / "run") if expected == "RUN" else expected
        value = kw[key] if kind == "kw" else getattr(cfg, key)
        assert value == expected, f"{name}: {key}={value!r}, expected {expected!r}"
