"""``Det``: which facial parts are visible, and is the mask worn correctly (MFGAN paper Sec. III-B).

The paper fine-tunes YOLOv3 on a detection version of RMFRD to find face, eyes, nose, mouth,
ears and forehead, and compares the detections on ``f`` and ``G_M(f)``. That data (boxes per
part) does not exist here, and the loss only ever uses *whether* each part is found. So ``Det`` is
a small multi-label CNN that answers exactly that question:

* a visibility logit per part in :data:`~mfrbench.generators.seg.PARTS` (``face, eyes, nose,
  mouth, chin``); ears and forehead are left out because mtf's labels do not cover them, and
  ``face`` is always visible in the training data (kept so the output vector matches the
  paper's ``[D_face, D_eye, D_mouth, ...]``);
* a 3-way ``wearing`` head: ``correct`` (nose and mouth covered), ``incorrect`` (any of mtf's
  ``nose-out``, ``mouth-nose-out``, ``chin``), ``none`` (no mask: unmasked aligned crops).

Labels come from ``mfrbench generate --method mtf`` rows (``covers_<part>``, ``wearing``), which
are known by construction; real photos (``train-aux --real-masked / --real-faces``, issue 14) add only
the labels they have: a real masked photo's wearing target is the set {correct, incorrect}
(:func:`wearing_nll`) and its nose / mouth / chin visibility is left out of the loss, a real unmasked
face is ``none`` with every part visible. Training, the held-out split and the loop are shared with ``Seg``
(:func:`mfrbench.generators.seg.train_aux`). Network: 5 stride-2 conv-BN-ReLU stages (``base`` ..
``8*base`` channels), global average pooling, two linear heads.

Use: :func:`load_det` -> :class:`Det`; ``Det.visibility(x)`` gives differentiable
probabilities (B, P) for MFGAN's correction factor; :func:`detect_parts_folder` is the
``mfrbench detect-parts`` command.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mfrbench.errors import MfrbenchError
from mfrbench.generators._blocks import ConvNormAct, norm_layer
from mfrbench.generators.seg import (
    AUX_MODULES,
    PARTS,
    PRESENT,
    WEARING,
    AuxBatch,
    AuxConfig,
    AuxData,
    AuxModule,
    load_aux,
    predict_folder,
    to_float,
)
from mfrbench.runs import choose_device


class PartsNet(nn.Module):
    """(B, 3, S, S) in [-1, 1] -> (part logits (B, P), wearing logits (B, 3))."""

    def __init__(self, base: int = 16, n_parts: int = len(PARTS), n_wearing: int = len(WEARING)) -> None:
        super().__init__()
        nf = norm_layer("batch")
        ch = [base, base * 2, base * 4, base * 8, base * 8]
        layers, prev = [], 3
        for c in ch:
            layers += [ConvNormAct(prev, c, nf, stride=2), ConvNormAct(c, c, nf)]
            prev = c
        self.features = nn.Sequential(*layers)
        self.parts = nn.Linear(prev, n_parts)
        self.wearing = nn.Linear(prev, n_wearing)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x).mean((2, 3))  # (B, C)
        return self.parts(h), self.wearing(h)


def _det_build(cfg: AuxConfig) -> nn.Module:
    return PartsNet(base=cfg.base)


def wearing_nll(logits: torch.Tensor, wear: torch.Tensor) -> torch.Tensor:
    """Per-row negative log-likelihood of the wearing label; a :data:`~mfrbench.generators.seg.PRESENT`
    row (a real masked photo) scores the set {correct, incorrect}: ``-log(p_correct + p_incorrect)``,
    the label it has, rather than a guess at how the mask is worn."""
    lse = torch.logsumexp(logits, 1)
    present = wear == PRESENT
    exact = lse - logits.gather(1, torch.where(present, 0, wear)[:, None])[:, 0]
    worn = lse - torch.logsumexp(logits[:, [WEARING.index("correct"), WEARING.index("incorrect")]], 1)
    return torch.where(present, worn, exact)


def _det_loss(net: nn.Module, x: torch.Tensor, b: AuxBatch, cfg: AuxConfig) -> dict[str, torch.Tensor]:
    """Visibility BCE over the known labels only (``part_known``) + the wearing NLL (:func:`wearing_nll`)."""
    pl, wl = net(x)
    known = b.part_known.float()
    bce = F.binary_cross_entropy_with_logits(pl, b.parts, reduction="none")
    return {"parts_bce": (bce * known).sum() / known.sum().clamp_min(1.0),
            "wearing_ce": wearing_nll(wl, b.wearing).mean()}


@torch.no_grad()
def _det_eval(net: nn.Module, data: AuxData, device: torch.device, batch: int = 64) -> dict[str, float]:
    """Held-out per-part accuracy, wearing accuracy (overall and per true class) and the confusion matrix."""
    net.eval()
    pp, pw = [], []
    for i in range(0, len(data), batch):
        pl, wl = net(to_float(data.images[i:i + batch], device))
        pp.append((pl > 0).cpu().numpy())
        pw.append(wl.argmax(1).cpu().numpy())
    net.train()
    pred_parts, pred_w = np.concatenate(pp), np.concatenate(pw)
    true_parts, true_w = data.parts.numpy() > 0.5, data.wearing.numpy()
    out = {f"acc_{p}": float((pred_parts[:, j] == true_parts[:, j]).mean()) for j, p in enumerate(PARTS)}
    out["acc_wearing"] = float((pred_w == true_w).mean())
    for k, name in enumerate(WEARING):
        sel = true_w == k
        out[f"acc_wearing_{name}"] = float((pred_w[sel] == k).mean()) if sel.any() else float("nan")
        out[f"n_{name}"] = int(sel.sum())
    out["confusion"] = [[int(((true_w == a) & (pred_w == b)).sum()) for b in range(len(WEARING))]
                        for a in range(len(WEARING))]
    return out


AUX_MODULES.register(lambda: AuxModule("det", _det_build, _det_loss, _det_eval, "acc_wearing"), name="det")


class Det:
    """A trained part-visibility / wearing classifier."""

    def __init__(self, net: PartsNet, size: int, device: torch.device) -> None:
        self.net, self.size, self.device = net.eval(), size, device

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [-1, 1] -> (part logits (B, P), wearing logits (B, 3)); differentiable."""
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.net(x.to(self.device))

    def visibility(self, x: torch.Tensor) -> torch.Tensor:
        """Probability that each part in ``PARTS`` is visible, (B, P)."""
        return torch.sigmoid(self.logits(x)[0])

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """-> (part probabilities (B, P), wearing probabilities (B, 3)) as numpy."""
        pl, wl = self.logits(x)
        return torch.sigmoid(pl).cpu().numpy(), torch.softmax(wl, 1).cpu().numpy()


def load_det(run_dir: str | os.PathLike, device: torch.device | str = "cpu") -> Det:
    """A trained ``Det`` from its run folder (``mfrbench train-aux --module det``)."""
    net, cfg = load_aux(run_dir, "det", device)
    for p in net.parameters():
        p.requires_grad_(False)
    return Det(net, cfg.size, torch.device(device))


def detect_parts_folder(checkpoint: str, inputs: str, out_csv: str, *, align: bool = True, device: str | None = None,
                        progress: bool = True) -> dict:
    """``mfrbench detect-parts``: one CSV row per image (visibility probability per part + wearing)."""
    import pandas as pd

    from mfrbench.imageio import atomic_write_bytes

    dev = choose_device(device)
    det = load_det(checkpoint, dev)

    def fn(crop: np.ndarray, p: Path):
        x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
        parts, wear = det.predict(x)
        return parts[0], wear[0]

    _, rows = predict_folder(inputs, None, fn, align=align, size=112, progress=progress)
    table = []
    for r in rows:
        row = {"file": r["file"], "status": r["status"], "reason": r["reason"], "aligned": r["aligned"]}
        if r["status"] == "ok":
            parts, wear = r["result"]
            row.update({f"p_{name}": round(float(v), 4) for name, v in zip(PARTS, parts)})
            row.update({f"p_{name}": round(float(v), 4) for name, v in zip(WEARING, wear)})
            row["wearing"] = WEARING[int(np.argmax(wear))]
        table.append(row)
    if not table:
        raise MfrbenchError(f"no images under {inputs}")
    df = pd.DataFrame(table)
    atomic_write_bytes(out_csv, df.to_csv(index=False).encode())
    ok = df[df["status"] == "ok"]
    counts = ok["wearing"].value_counts().to_dict() if len(ok) else {}
    return {"images": len(df), "ok": len(ok), "wearing_counts": counts,
            "out": str(out_csv)}
