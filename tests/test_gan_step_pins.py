"""The training steps of every GAN family, pinned: loss values of the first steps for a fixed seed.

The values were read from the step as it was before MFGAN's step was composed from CycleGAN's
parts (issue 11; ``gan_core.py`` era, commit 4139fb7): the refactor changed no maths, so the same
seed gives the same numbers (bit for bit on the machine that pinned them). Step 1 and later depend
on the updates of the earlier steps, so the pins also cover the gradients. MFGAN runs its three
stages in three steps (``stage_steps=(1, 1, 1)``); the stand-in Det sees the nose on every output,
so lambda_cor = 1 + rho(1) = sqrt(2) and the weighted adversarial terms are exercised.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_mfgan_model import TINY, _domain, _TinyDet, _TinySeg

from mfrbench.generators import mfgan as M
from mfrbench.generators.gan.config import resolve_config
from mfrbench.generators.gan.contract import build_gan
from mfrbench.generators.gan.data import step_batch

#: method, model overrides, {step: {loss: value}} read from the pre-refactor step
PINS = {
    "cyclegan": ({"ngf": 4, "ndf": 4, "n_blocks": 1, "pool_size": 1},
                 {0: {"G_M_gan": 1.3114189, "cyc_F": 5.0970907, "D_M": 0.5355855},
                  1: {"G_M_gan": 0.8636118, "idt_M": 2.6030996, "D_M": 0.5471408, "D_F": 0.8083306}}),
    "iamgan": ({"ngf": 4, "ndf": 4, "n_blocks": 1, "pool_size": 1, "seg_checkpoint": "seg"},
               {0: {"pix": 5.146512, "D_M": 0.5355855},
                1: {"G_M_gan": 0.8625809, "cyc_F": 5.0877242, "pix": 5.0968547, "D_M": 0.5476699}}),
    "mfgan": ({**TINY, "stage_steps": (1, 1, 1), "pool_size": 1, "lambda_identity": 0.5},
              {0: {"G_M_gan": 1.1476518, "lambda_cor": 1.4142135, "D_M": 0.5765628},
               1: {"G_M_gan": 1.1928504, "inv": 2.0834398, "D_M": 0.4008569},
               2: {"G_M_gan": 0.9992093, "cyc_M": 5.198998, "sty": 0.0025171, "D_M": 0.3903756}}),
    "mfgan-no-cor": ({**TINY, "stage_steps": (1, 1, 1), "pool_size": 1},
                     {0: {"G_M_gan": 0.8115124, "D_M": 0.5503475},
                      2: {"G_M_gan": 0.6872183, "inv": 2.0912046, "sty": 0.0024822, "D_M": 0.3734678}}),
    "mfgan/g": ({**TINY, "stage_steps": (1, 1, 1), "pool_size": 1, "cor_apply": "g"},
                {0: {"G_M_gan": 1.1476518, "D_M": 0.5503475},
                 2: {"G_M_gan": 0.9801257, "cyc_F": 5.1870556, "D_M": 0.3728411}}),
}


@pytest.fixture()
def pinned_aux(monkeypatch):
    """Seeded stand-in Seg/Det (Det's nose logit raised: visible on the outputs) for MFGAN and IAMGAN."""
    torch.manual_seed(0)
    seg, det = _TinySeg(), _TinyDet()
    with torch.no_grad():
        det.fc.bias[1] += 0.5

    def from_run(kind, run, device):
        net = seg if kind == "Seg" else det
        return M.FrozenAux(kind, net, size=net.size, parts=getattr(net, "parts", ()), run=run)

    monkeypatch.setattr(M.FrozenAux, "from_run", staticmethod(from_run))

    class _IAMSeg:
        def __init__(self) -> None:
            torch.manual_seed(1)
            self.net = _TinySeg()

        def probs(self, x):
            return torch.sigmoid(self.net(x))

    import mfrbench.generators.seg as seg_module

    monkeypatch.setattr(seg_module, "load_seg", lambda run, device: _IAMSeg())


def _step_losses(method: str, model: dict, steps: int, tmp: Path) -> list[dict[str, float]]:
    train, cfg = resolve_config(method, None, train=dict(size=32, steps=steps, batch_size=2), model=model)
    gan = build_gan(train, cfg)
    faces, masks = _domain("f", 6, 32, 1), _domain("m", 6, 32, 2)
    gan.prepare(faces, masks, tmp)
    getattr(gan, "_prep", {}).pop("run_dir", None)       # no stage read-outs: only the step is pinned
    out = []
    for s in range(steps):
        batch, rng = step_batch(faces, masks, s, train, gan.device)
        out.append(gan.train_step(batch, rng))
        gan.step = s + 1
    return out


@pytest.mark.parametrize("name", list(PINS))
def test_first_steps_give_the_pinned_losses(name, pinned_aux, tmp_path):
    """CycleGAN, IAMGAN and MFGAN (three cor_apply / preset readings) reproduce the pre-refactor losses."""
    model, pins = PINS[name]
    losses = _step_losses(name.split("/")[0], model, max(pins) + 1, tmp_path)
    for step, expected in pins.items():
        got = {k: losses[step][k] for k in expected}
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), (name, step)
