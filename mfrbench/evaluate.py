"""``mfrbench eval``: score a recognizer on a benchmark protocol and append one results row.

Pipeline: build the protocol (:mod:`mfrbench.protocols`, files written to
``<results>/protocols/``) -> align (and mask) its images once, cached per protocol ->
embed every image (cached per model) -> verification (explicit pair lists: k-fold accuracy,
TAR@FAR with bootstrap CIs, AUC, EER; all-pairs sets: exact TAR@FAR from streamed counts) ->
identification (Rank-1/Rank-5 with CIs, CMC) -> breakdowns (pair type, mask type) -> ROC/CMC
plots -> one row in ``<results>/evals.csv`` (:mod:`mfrbench.results`).

Every number states its coverage: the fraction of the protocol's pairs (or probes) whose
images were usable; detection failures use the protocol's fallback (centre crop) and are
counted in ``detect_rate``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mfrbench import __version__
from mfrbench.errors import MfrbenchError
from mfrbench.metrics import roc as R
from mfrbench.metrics.identification import bootstrap_rank_ci, cmc_curve, identification_ranks, rank_k_accuracy
from mfrbench.metrics.verification import pair_scores, verification_accuracy
from mfrbench.results import BREAKDOWN_METRICS, FARS, far_label, tar_col

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    benchmark: str
    root: str | None = None
    seed: int = 0
    flip: bool = True
    gallery_rule: str = "max"          # identification: best gallery image ("max") or mean template ("mean")
    n_boot: int = 1000                 # bootstrap replicates for TAR@FAR and Rank-k CIs
    fallback: str = "center"           # detection failure: centre crop, or "drop"
    exact_limit: int = 5_000_000       # all-pairs sets up to this size keep scores (k-fold acc, bootstrap CI)
    allow_missing: bool = False
    protocol_kwargs: dict = field(default_factory=dict)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MFRBENCH_CACHE", Path.home() / ".cache" / "mfrbench"))


# --------------------------------------------------------------------------- embeddings
def load_embeddings(path: str | os.PathLike, *, model_info: dict, keys: list[str]) -> np.ndarray:
    """Embeddings saved by :func:`embed_images`, checked against the model and the image list."""
    p = Path(path)
    try:
        z = np.load(p, allow_pickle=False)
        emb, stored_keys, meta = z["emb"], list(z["keys"]), json.loads(str(z["meta"]))
    except (OSError, KeyError, ValueError) as err:
        raise MfrbenchError(f"{p} is not an mfrbench embeddings file ({err})") from err
    want = model_info.get("config_hash", "")
    if meta.get("config_hash") != want:
        raise MfrbenchError(f"{p} holds embeddings of another model ({meta.get('model')}, config hash "
                            f"{meta.get('config_hash')}), not of {model_info.get('model')} ({want})")
    dim = int(model_info.get("embedding_dim", emb.shape[1]))
    if emb.ndim != 2 or emb.shape[1] != dim:
        raise MfrbenchError(f"{p} holds {emb.shape[-1]}-d embeddings but the model gives {dim}-d ones")
    if stored_keys != keys:
        raise MfrbenchError(f"{p} holds embeddings of a different image list ({len(stored_keys)} images, "
                            f"expected {len(keys)})")
    return emb


def embed_images(model: Any, paths: list[str], *, flip: bool, cache: Path | None = None, batch: int = 64,
                 progress: bool = True) -> np.ndarray:
    """(N, D) float32 embeddings of the 112x112 crops at ``paths`` (cached in ``cache``)."""
    import cv2
    from tqdm import tqdm

    info = dict(model.info)
    if cache is not None and cache.is_file():
        return load_embeddings(cache, model_info=info, keys=paths)
    out = np.zeros((len(paths), model.embedding_dim), np.float32)
    bar = tqdm(total=len(paths), desc=f"embed ({info.get('model', 'model')})", unit="img", disable=not progress,
               dynamic_ncols=True, mininterval=0.5)
    for i in range(0, len(paths), batch):
        imgs = []
        for p in paths[i:i + batch]:
            bgr = cv2.imread(p, cv2.IMREAD_COLOR)
            if bgr is None:
                raise MfrbenchError(f"cannot read the aligned crop {p}; delete the protocol cache and rerun")
            if bgr.shape[:2] != (112, 112):
                bgr = cv2.resize(bgr, (112, 112), interpolation=cv2.INTER_AREA)
            imgs.append(bgr[..., ::-1])
        e = np.asarray(model.embed(np.ascontiguousarray(np.stack(imgs)), flip=flip), np.float32)
        if e.shape != (len(imgs), model.embedding_dim):
            raise MfrbenchError(f"model returned embeddings of shape {e.shape}, expected ({len(imgs)}, "
                                f"{model.embedding_dim})")
        out[i:i + len(imgs)] = e
        bar.update(len(imgs))
    bar.close()
    if cache is not None:
        from mfrbench.imageio import atomic_write_bytes
        import io

        buf = io.BytesIO()
        meta = {k: info.get(k) for k in ("model", "config_hash", "embedding_dim", "backbone")}
        np.savez(buf, emb=out, keys=np.array(paths), meta=np.array(json.dumps({**meta, "flip": flip})))
        atomic_write_bytes(cache, buf.getvalue())
    return out


# --------------------------------------------------------------------------- metric blocks
def _fmt_far(f: float) -> str:
    return far_label(f)


def _summarise(caught, n_impostor: int) -> list[str]:
    """One short note for all FAR-resolution warnings, the others verbatim."""
    low = [f for f in FARS if n_impostor * f < R.MIN_IMPOSTORS_AT_FAR]
    msgs = sorted({str(w.message) for w in caught if not issubclass(w.category, R.FARResolutionWarning)})
    if low and n_impostor:
        msgs.append(f"TAR@FAR={','.join(_fmt_far(f) for f in low)} rest(s) on < {R.MIN_IMPOSTORS_AT_FAR} impostor "
                    f"pairs ({n_impostor} impostors, smallest non-zero FAR {1 / n_impostor:.2g}): read with the CI")
    return msgs


def _verification_from_scores(scores: np.ndarray, same: np.ndarray, folds: np.ndarray | None, *, balanced: bool,
                              n_boot: int, seed: int) -> dict:
    out: dict[str, Any] = {"n_genuine": int(same.sum()), "n_impostor": int((~same).sum())}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pts = R.operating_points(scores, same, far=FARS)
        if out["n_genuine"] and out["n_impostor"]:
            lo, hi = R.bootstrap_tar_ci(scores, same, far=FARS, n_boot=n_boot, seed=seed)
            out["auc"], out["eer"] = R.roc_auc(scores, same), R.eer(scores, same)
        else:
            lo = hi = np.full(len(FARS), np.nan)
    out["warnings"] = _summarise(caught, out["n_impostor"])
    for f, t, a, b in zip(FARS, pts.tar, lo, hi):
        out[tar_col(f)], out[tar_col(f, "lo")], out[tar_col(f, "hi")] = t, a, b
    if folds is not None and len(np.unique(folds)) >= 2 and out["n_genuine"] and out["n_impostor"]:
        acc = verification_accuracy(scores, same, folds=folds, balanced=balanced)
        out["acc"], out["acc_std"] = acc.mean, acc.std
        out["acc_protocol"] = f"{'balanced ' if balanced else ''}{len(np.unique(folds))}-fold"
    fpr, tpr, _ = R.roc_curve(scores, same) if out["n_genuine"] and out["n_impostor"] else (None, None, None)
    out["roc"] = (fpr, tpr)
    return out


def _allpairs(E: np.ndarray, ok: np.ndarray, images: pd.DataFrame, ap, metric: str, cfg: EvalConfig,
              progress: bool) -> dict:
    probe = np.array([i for i in ap.probe if ok[i]], np.int64)
    gallery = probe if ap.same_set else np.array([i for i in ap.gallery if ok[i]], np.int64)
    n_total = len(ap.probe) * (len(ap.probe) - 1) // 2 if ap.same_set else len(ap.probe) * len(ap.gallery)
    n_pairs = len(probe) * (len(probe) - 1) // 2 if ap.same_set else len(probe) * len(gallery)
    ids = images.identity.to_numpy()
    res: dict[str, Any] = {"coverage": n_pairs / n_total if n_total else float("nan")}
    if n_pairs == 0:
        raise MfrbenchError(f"all-pairs set {ap.name!r} has no usable pairs")
    keep = n_pairs <= cfg.exact_limit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        st = R.streamed_roc(E[probe], None if ap.same_set else E[gallery], ids[probe],
                            None if ap.same_set else ids[gallery], metric=metric, far=FARS, keep_scores=keep,
                            progress=progress and n_pairs > 5e7)
    if st.n_genuine == 0 or st.n_impostor == 0:
        raise MfrbenchError(f"all-pairs set {ap.name!r} has {st.n_genuine} genuine and {st.n_impostor} impostor "
                            "pairs: verification needs both")
    if keep:
        scores, same = st.info["scores"], st.info["is_genuine"]
        fold_of = images["fold"].to_numpy() if "fold" in images else None
        if fold_of is not None:
            if ap.same_set:
                rows, _ = np.triu_indices(len(probe), k=1)
            else:
                rows = np.repeat(np.arange(len(probe)), len(gallery))
            folds = fold_of[probe][rows]
        else:
            folds = None
        # A replicate costs one pass over the distinct scores: cap the total work near 2e8.
        n_boot = int(min(cfg.n_boot, max(100, 2e8 // max(len(scores), 1))))
        res.update(_verification_from_scores(scores, same, folds, balanced=True, n_boot=n_boot, seed=cfg.seed))
        if n_boot < cfg.n_boot:
            res["warnings"].append(f"bootstrap CI from {n_boot} replicates ({len(scores):.3g} pairs)")
        res["warnings"] = sorted(set(res["warnings"]) | set(_summarise(caught, res["n_impostor"])))
    else:
        res.update(n_genuine=st.n_genuine, n_impostor=st.n_impostor, warnings=_summarise(caught, st.n_impostor))
        for f, t in zip(FARS, st.points.tar):
            res[tar_col(f)] = t
        res["auc"], _ = st.auc()
        res["eer"] = st.eer()
        res["acc"], _ = st.best_accuracy(balanced=True)
        res["acc_protocol"] = "balanced, best threshold (streamed; optimistic)"
        fpr, tpr, _ = st.roc()
        res["roc"] = (fpr, tpr)
        res["warnings"].append(f"{n_pairs:.3g} pairs: TAR@FAR exact from streamed counts, no bootstrap CI")
    return res


def _identification(E: np.ndarray, ok: np.ndarray, images: pd.DataFrame, proto, metric: str, cfg: EvalConfig
                    ) -> dict:
    g = np.array([i for i in proto.gallery if ok[i]], np.int64)
    ids = images.identity.to_numpy()
    gal_ids = set(ids[g])
    p_all = np.asarray(proto.probes, np.int64)
    p = np.array([i for i in p_all if ok[i] and ids[i] in gal_ids], np.int64)
    if len(p) == 0 or len(g) == 0:
        return {"n_probes": 0}
    r = identification_ranks(E[p], ids[p], E[g], ids[g], metric=metric, rule=cfg.gallery_rule)
    out = {"n_probes": len(p), "probe_coverage": len(p) / len(p_all), "n_gallery_ids": r.n_gallery_identities,
           "n_distractors": r.n_distractors, "ranks": r.ranks, "probe_ids": p,
           "cmc": cmc_curve(r.ranks, max_rank=min(20, r.n_gallery_identities))}
    for k in (1, 5):
        out[f"rank{k}"] = rank_k_accuracy(r.ranks, k)
        out[f"rank{k}_lo"], out[f"rank{k}_hi"] = bootstrap_rank_ci(r.ranks, k, n_boot=cfg.n_boot, seed=cfg.seed)
    return out


def _plots(out_dir: Path, eval_id: str, title: str, rocs: dict[str, tuple], cmc: np.ndarray | None
           ) -> tuple[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    roc_png = cmc_png = ""
    curves = {k: v for k, v in rocs.items() if v[0] is not None}
    if curves:
        fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
        for name, (fpr, tpr) in curves.items():
            m = fpr > 0
            ax.step(fpr[m], tpr[m], where="post", label=name)
        for f in FARS:
            ax.axvline(f, color="0.8", lw=0.8, zorder=0)
        ax.set_xscale("log")
        ax.set_xlabel("FAR (log scale)")
        ax.set_ylabel("TAR")
        ax.set_ylim(0, 1.01)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path = out_dir / f"{eval_id}-roc.png"
        fig.savefig(path)
        plt.close(fig)
        roc_png = str(path)
    if cmc is not None and len(cmc):
        fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
        ax.plot(np.arange(1, len(cmc) + 1), cmc, marker="o", ms=3)
        ax.set_xlabel("rank")
        ax.set_ylabel("identification rate")
        ax.set_ylim(0, 1.01)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{eval_id}-cmc.png"
        fig.savefig(path)
        plt.close(fig)
        cmc_png = str(path)
    return roc_png, cmc_png


def _breakdown_row(subset: str, v: dict) -> dict:
    return {"subset": subset, **{k: v.get(k) for k in BREAKDOWN_METRICS}}


# --------------------------------------------------------------------------- entry point
def evaluate(model_spec: str | os.PathLike, cfg: EvalConfig, *, results_dir: str | os.PathLike = "results",
             cache_dir: str | os.PathLike | None = None, workers: int = 1, progress: bool = True,
             model: Any = None) -> dict:
    """Evaluate ``model_spec`` on ``cfg.benchmark``; append the row to ``results_dir``; return it.

    ``model`` (optional) is an already loaded embedder (anything with ``embed``, ``info``,
    ``embedding_dim`` and ``metric``), used instead of loading ``model_spec``.
    """
    from mfrbench.embedders import load_model
    from mfrbench.protocols import build_protocol, prepare_images
    from mfrbench.results import append_row, new_eval_id, now_iso

    from mfrbench.results import store_paths

    t0 = time.time()
    store = results_dir
    results_dir = store_paths(store)[0]
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    model = model if model is not None else load_model(model_spec)
    metric = getattr(model, "metric", "cosine")
    info = dict(model.info)
    proto = build_protocol(cfg.benchmark, cfg.root, seed=cfg.seed, allow_missing=cfg.allow_missing or None,
                           **cfg.protocol_kwargs)
    proto.write(results_dir / "protocols")
    images = prepare_images(proto, cache_dir, workers=workers, progress=progress, fallback=cfg.fallback)
    ok = (images.crop_path != "").to_numpy().copy()
    used = np.zeros(len(images), bool)  # embed only the images some pair or split refers to
    if proto.pairs is not None:
        used[proto.pairs.a.to_numpy()] = used[proto.pairs.b.to_numpy()] = True
    for ids in [proto.gallery, proto.probes] + [x for ap in proto.allpairs for x in (ap.probe, ap.gallery)]:
        if ids is not None:
            used[np.asarray(ids, np.int64)] = True
    ok &= used
    if not ok.any():
        raise MfrbenchError(f"no usable image in benchmark {cfg.benchmark!r} (see {cache_dir})")
    work = cache_dir / f"{proto.name}-{proto.id}"
    emb_cache = work / f"emb-{info.get('config_hash', 'model')}-flip{int(cfg.flip)}.npz"
    E = np.zeros((len(images), model.embedding_dim), np.float32)
    E[ok] = embed_images(model, images.crop_path[ok].tolist(), flip=cfg.flip, cache=emb_cache, progress=progress)

    eval_id = new_eval_id()
    row: dict[str, Any] = {"eval_id": eval_id, "kind": "eval", "time": now_iso(), "benchmark": cfg.benchmark,
                           "protocol_id": proto.id, "root": str(proto.root), "metric": metric, "flip": cfg.flip,
                           "gallery_rule": cfg.gallery_rule, "fallback": cfg.fallback, "tool_version": __version__}
    # generator / generator_family / generator_hash: the identity of the model's training data (mfrbench.generate)
    for k in ("model", "model_path", "backbone", "loss", "embedding_dim", "config_hash", "generator",
              "generator_family", "generator_hash"):
        row[k] = info.get(k, "")
    td = info.get("train_data", "")
    row["train_data"] = td if isinstance(td, str) else ";".join(map(str, td))
    orig = images.variant == "orig"
    orig = orig.to_numpy() & used
    row["detect_rate"] = float((images.how[orig] == "detected").mean()) if orig.any() else float("nan")
    notes = list(proto.notes)
    n_orig, n_det = int(orig.sum()), int((images.how[orig] == "detected").sum())
    if n_det < n_orig:
        n_fb = int(images.how[orig].str.startswith("fallback").sum())
        notes.append(f"{n_orig - n_det} of {n_orig} images without a detected face: {n_fb} centre-cropped "
                     f"(fallback {cfg.fallback}), {n_orig - n_det - n_fb} unusable")
    breakdown: list[dict] = []
    rocs: dict[str, tuple] = {}

    # Verification.
    main: dict[str, Any] = {}
    if proto.pairs is not None:
        p = proto.pairs
        valid = ok[p.a.to_numpy()] & ok[p.b.to_numpy()]
        row["coverage"] = float(valid.mean())
        pv = p[valid].reset_index(drop=True)
        if len(pv) == 0:
            raise MfrbenchError(f"benchmark {cfg.benchmark!r}: no pair has two usable images")
        scores = pair_scores(E, pv.a.to_numpy(), pv.b.to_numpy(), metric=metric)
        same = pv.is_same.to_numpy(bool)
        if same.all() or not same.any():
            raise MfrbenchError(f"benchmark {cfg.benchmark!r} has {int(same.sum())} genuine and "
                                f"{int((~same).sum())} impostor pairs: verification needs both")
        folds = pv.fold.to_numpy()
        one_fold = len(np.unique(folds)) < 2
        if one_fold:  # e.g. a one-fold pairs file: 10 contiguous blocks of the file order instead
            folds = (np.arange(len(pv)) * 10) // len(pv)
        main = _verification_from_scores(scores, same, folds, balanced=False, n_boot=cfg.n_boot, seed=cfg.seed)
        if one_fold and "acc_protocol" in main:
            main["acc_protocol"] += " (contiguous blocks: the pair list has one fold)"
        rocs["all pairs"] = main["roc"]
        for pt in sorted(pv.pair_type.unique()) if pv.pair_type.nunique() > 1 else []:
            m = (pv.pair_type == pt).to_numpy()
            sub = _verification_from_scores(scores[m], same[m], folds[m], balanced=False, n_boot=200, seed=cfg.seed)
            breakdown.append(_breakdown_row(f"pair:{pt}", sub))
            rocs[pt] = sub["roc"]
        # By the mask type of the masked side (pairs with one masked side).
        mt = images.mask_type.to_numpy()
        msk = images.is_masked.to_numpy()
        a, b = pv.a.to_numpy(), pv.b.to_numpy()
        side = np.where(msk[a] & ~msk[b], mt[a], np.where(msk[b] & ~msk[a], mt[b], ""))
        for t in sorted(set(side) - {""}):
            m = side == t
            if m.sum() >= 20:
                sub = _verification_from_scores(scores[m], same[m], folds[m], balanced=False, n_boot=200,
                                                seed=cfg.seed)
                breakdown.append(_breakdown_row(f"mask:{t}", sub))
    for i, ap in enumerate(proto.allpairs):
        res = _allpairs(E, ok, images, ap, metric, cfg, progress)
        rocs[ap.name] = res.get("roc", (None, None))
        if i == 0 and not main:
            main = res
            row["coverage"] = res["coverage"]
        else:
            breakdown.append(_breakdown_row(f"pair:{ap.name}", res))
        if i == 0 and proto.pairs is None:
            breakdown.append(_breakdown_row(f"pair:{ap.name}", res))
    for k, v in main.items():
        if k in ("roc", "warnings"):
            continue
        row[k] = v
    notes += main.get("warnings", [])

    # Identification.
    cmc = None
    if proto.gallery is not None and proto.probes is not None and len(proto.probes):
        ident = _identification(E, ok, images, proto, metric, cfg)
        if ident.get("n_probes"):
            for k in ("n_probes", "n_gallery_ids", "n_distractors", "rank1", "rank1_lo", "rank1_hi", "rank5",
                      "rank5_lo", "rank5_hi"):
                row[k] = ident[k]
            cmc = ident["cmc"]
            if ident["probe_coverage"] < 1:
                notes.append(f"identification coverage {ident['probe_coverage']:.3f} of probes")
            pm = images.mask_type.to_numpy()[ident["probe_ids"]]
            for t in sorted(set(pm)):
                m = pm == t
                if len(set(pm)) > 1 and m.sum() >= 10:
                    breakdown.append({"subset": f"probe-mask:{t}", "n_probes": int(m.sum()),
                                      "rank1": rank_k_accuracy(ident["ranks"][m], 1),
                                      "rank5": rank_k_accuracy(ident["ranks"][m], 5)})
    title = f"{cfg.benchmark} | {row.get('model')} ({metric}{', flip' if cfg.flip else ''})"
    row["roc_png"], row["cmc_png"] = _plots(results_dir / "plots", eval_id, title, rocs, cmc)
    row["notes"] = " | ".join(dict.fromkeys(notes))
    row["seconds"] = round(time.time() - t0, 2)
    for b in breakdown:
        b["benchmark"] = cfg.benchmark
    append_row(store, row, breakdown)
    row["breakdown"] = breakdown
    return row

