"""``mfrbench eval``: score a recognizer on a benchmark protocol and append one results row.

Steps of :func:`evaluate`, one function each:

1. :func:`prepare`: build the protocol (:mod:`mfrbench.protocols`, files written to
   ``<results>/protocols/``), align (and mask) its images once, cached per protocol;
2. :func:`embed`: embed every used image (cached per model); NaN/inf embeddings are an error
   naming the images;
3. :func:`verify`: pair lists give k-fold accuracy (thresholds from the other folds), TAR@FAR,
   AUC, EER; all-pairs sets are streamed (block-wise matrix products into per-fold histograms):
   exact TAR@FAR, held-out k-fold accuracy by probe identity, and, up to ``exact_limit`` pairs,
   exact AUC/EER; breakdowns by pair type and mask type;
4. :func:`identify`: Rank-1/Rank-5 and the CMC (masked probes vs the gallery);
5. :func:`write`: ROC/CMC plots and one row in ``<results>/evals.csv`` (:mod:`mfrbench.results`).

Confidence intervals resample identities (:mod:`mfrbench.metrics.bootstrap`), never pairs or
probes; the row's ``ci_method`` says what was resampled and ``acc_protocol`` how accuracy was
measured. Every number states its coverage: the fraction of the protocol's pairs (or probes)
whose images were usable; detection failures use the protocol's fallback (centre crop) and are
counted in ``detect_rate``. Images byte-identical to an image of another identity
(``n_duplicates``) are kept out of impostor pairs.
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
from mfrbench.errors import DamagedFileError, MfrbenchError
from mfrbench.metrics import roc as R
from mfrbench.metrics.bootstrap import bootstrap_rank_ci, bootstrap_tar_ci, ci_method
from mfrbench.metrics.identification import cmc_curve, identification_ranks, rank_k_accuracy
from mfrbench.metrics.verification import kfold_accuracy_from_histograms, pair_scores, verification_accuracy
from mfrbench.results import BREAKDOWN_METRICS, FARS, far_label, tar_col

log = logging.getLogger(__name__)

#: Score bins of the streamed all-pairs histograms; held-out accuracy thresholds are their edges.
HIST_BINS = 1 << 16


@dataclass(frozen=True)
class EvalConfig:
    benchmark: str
    root: str | None = None
    seed: int = 0
    flip: bool = True
    gallery_rule: str = "max"          # identification: best gallery image ("max") or mean template ("mean")
    n_boot: int = 1000                 # identity-bootstrap replicates for the TAR@FAR and Rank-k CIs
    fallback: str = "center"           # detection failure: centre crop, or "drop"
    exact_limit: int = 5_000_000       # all-pairs sets up to this size keep scores (exact AUC/EER, bootstrap CI)
    allow_missing: bool = False
    protocol_kwargs: dict = field(default_factory=dict)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MFRBENCH_CACHE", Path.home() / ".cache" / "mfrbench"))


# --------------------------------------------------------------------------- embeddings
def check_finite_embeddings(emb: np.ndarray, paths: list[str], *, what: str = "the model") -> None:
    """Refuse NaN/inf embeddings, naming the images: a NaN score compares False with every other
    score, which made an all-NaN gallery a Rank-1 hit for every probe (Rank-1 = 100 %)."""
    bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
    if len(bad):
        first = ", ".join(paths[i] for i in bad[:3])
        raise MfrbenchError(f"{what} gives NaN or inf embeddings for {len(bad)} of {len(emb)} images (first: "
                            f"{first}); check the model and these crops")


def load_embeddings(path: str | os.PathLike, *, model_info: dict, keys: list[str]) -> np.ndarray:
    """Embeddings saved by :func:`embed_images`, checked against the model and the image list."""
    p = Path(path)
    try:
        z = np.load(p, allow_pickle=False)
        emb, stored_keys, meta = z["emb"], list(z["keys"]), json.loads(str(z["meta"]))
    except Exception as err:  # truncated zip, foreign file, missing arrays: a cache is rebuilt, never fatal
        raise DamagedFileError(f"{p} is not an mfrbench embeddings file ({type(err).__name__}: {err})") from err
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


def model_key(info: dict) -> str:
    """What names a model's weights in the embedding caches: its config hash and, for trained runs,
    the training step (``--max-steps``/``--time-budget`` are run control, outside the config hash: a
    resumed run keeps its hash but has new weights, and must not read the old run's embeddings)."""
    key = str(info.get("config_hash") or "model")
    step = info.get("global_step")
    return key if step is None else f"{key}-step{int(step)}"


def _crop_digests(paths: list[str]) -> list[str]:
    from mfrbench.imageio import content_hash

    out = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                out.append(content_hash(f.read()))
        except OSError as err:
            raise MfrbenchError(f"cannot read the aligned crop {p} ({err}); delete the protocol cache and "
                                "rerun") from err
    return out


def _load_store(path: Path, info: dict, flip: bool) -> dict[str, np.ndarray]:
    """The content-keyed embeddings of one model (:func:`embed_images` ``shared=``); empty when absent,
    damaged or of another model (it is rebuilt: a cache, never a source of truth)."""
    if not path.is_file():
        return {}
    try:
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        if meta.get("model_key") != model_key(info) or meta.get("flip") != flip:
            return {}
        return dict(zip(z["keys"].tolist(), z["emb"]))
    except Exception as err:  # truncated or foreign file: start afresh
        log.warning("%s is not a readable embeddings store (%s: %s); rebuilding it", path, type(err).__name__, err)
        return {}


def _save_store(path: Path, store: dict[str, np.ndarray], info: dict, flip: bool) -> None:
    import io

    from mfrbench.imageio import atomic_write_bytes

    buf = io.BytesIO()
    keys = sorted(store)
    meta = {"model_key": model_key(info), "model": info.get("model"), "flip": flip}
    np.savez(buf, emb=np.stack([store[k] for k in keys]).astype(np.float32), keys=np.array(keys),
             meta=np.array(json.dumps(meta)))
    atomic_write_bytes(path, buf.getvalue())


def embed_images(model: Any, paths: list[str], *, flip: bool, cache: Path | None = None, batch: int = 64,
                 progress: bool = True, shared: Path | None = None) -> np.ndarray:
    """(N, D) float32 embeddings of the 112x112 crops at ``paths`` (cached in ``cache``).

    ``shared``: an embeddings store of this model keyed by the crops' content (SHA-1), shared by
    every protocol of a cache folder: LFW-masked's unmasked side is LFW's crops, so after ``eval
    --benchmark lfw`` only its masked crops are embedded. Concurrent evals may drop each other's
    new entries (the last writer wins); they never mix up two crops or two models.
    """
    import cv2
    from tqdm import tqdm

    info = dict(model.info)
    if cache is not None and cache.is_file():
        try:
            emb = load_embeddings(cache, model_info=info, keys=paths)
        except DamagedFileError as err:  # a run killed while the cache was copied in, a truncated disk: rebuild it
            log.warning("%s; computing the embeddings again", err)
        else:
            check_finite_embeddings(emb, paths, what=f"{info.get('model', 'the model')} (cached in {cache})")
            return emb
    out = np.zeros((len(paths), model.embedding_dim), np.float32)
    todo = list(range(len(paths)))
    store: dict[str, np.ndarray] = {}
    if shared is not None:
        digests = _crop_digests(paths)
        store = _load_store(shared, info, flip)
        hit = [i for i, d in enumerate(digests) if d in store and store[d].shape == (model.embedding_dim,)]
        if hit:
            out[hit] = np.stack([store[digests[i]] for i in hit])
            hit_set = set(hit)
            todo = [i for i in todo if i not in hit_set]
            log.info("%d of %d embeddings from %s", len(hit), len(paths), shared)
    bar = tqdm(total=len(todo), desc=f"embed ({info.get('model', 'model')})", unit="img", disable=not progress,
               dynamic_ncols=True, mininterval=0.5)
    for s in range(0, len(todo), batch):
        idx = todo[s:s + batch]
        imgs = []
        for p in (paths[i] for i in idx):
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
        out[idx] = e
        bar.update(len(imgs))
    bar.close()
    check_finite_embeddings(out, paths, what=str(info.get("model", "the model")))  # before a cache is written
    if cache is not None:
        save_embeddings(cache, out, paths, info, flip=flip)
    if shared is not None and todo:
        store.update((digests[i], out[i]) for i in todo)
        _save_store(shared, store, info, flip)
    return out


def save_embeddings(path: Path, emb: np.ndarray, paths: list[str], info: dict, *, flip: bool) -> None:
    """Write the embeddings file :func:`load_embeddings` reads (atomically)."""
    import io

    from mfrbench.imageio import atomic_write_bytes

    buf = io.BytesIO()
    meta = {k: info.get(k) for k in ("model", "config_hash", "embedding_dim", "backbone")}
    np.savez(buf, emb=emb, keys=np.array(paths), meta=np.array(json.dumps({**meta, "flip": flip})))
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- step 1: prepare
@dataclass
class Prepared:
    """The protocol and its images, aligned (and masked), with what is usable."""

    proto: Any                 # mfrbench.protocols.Protocol
    images: pd.DataFrame       # proto.images + crop_path, how
    ok: np.ndarray             # per image: has a crop and some pair or split uses it
    used: np.ndarray           # per image: some pair or split uses it
    work: Path                 # the protocol's cache folder
    detect_rate: float
    notes: list[str]


def _used_images(proto, n: int) -> np.ndarray:
    """Images some pair or split refers to: only those are embedded."""
    used = np.zeros(n, bool)
    if proto.pairs is not None:
        used[proto.pairs.a.to_numpy()] = used[proto.pairs.b.to_numpy()] = True
    for ids in [proto.gallery, proto.probes] + [x for ap in proto.allpairs for x in (ap.probe, ap.gallery)]:
        if ids is not None:
            used[np.asarray(ids, np.int64)] = True
    return used


def _detection(images: pd.DataFrame, used: np.ndarray, fallback: str) -> tuple[float, list[str]]:
    """(detect_rate, notes) over the used original (not protocol-masked) images."""
    orig = (images.variant == "orig").to_numpy() & used
    how = images.how[orig]
    n_orig, n_det = int(orig.sum()), int((how == "detected").sum())
    rate = n_det / n_orig if n_orig else float("nan")
    if n_det == n_orig:
        return rate, []
    n_fb = int(how.str.startswith("fallback").sum())
    return rate, [f"{n_orig - n_det} of {n_orig} images without a detected face: {n_fb} centre-cropped "
                  f"(fallback {fallback}), {n_orig - n_det - n_fb} unusable"]


def prepare(cfg: EvalConfig, results_dir: Path, cache_dir: Path, *, workers: int = 1, progress: bool = True
            ) -> Prepared:
    """Build and write the protocol, then align (and mask) the images it uses."""
    from mfrbench.protocols import build_protocol, prepare_images

    proto = build_protocol(cfg.benchmark, cfg.root, seed=cfg.seed, allow_missing=cfg.allow_missing or None,
                           **cfg.protocol_kwargs)
    proto.write(results_dir / "protocols")
    images = prepare_images(proto, cache_dir, workers=workers, progress=progress, fallback=cfg.fallback)
    used = _used_images(proto, len(images))
    ok = (images.crop_path != "").to_numpy() & used
    if not ok.any():
        raise MfrbenchError(f"no usable image in benchmark {cfg.benchmark!r} (see {cache_dir})")
    rate, notes = _detection(images, used, cfg.fallback)
    return Prepared(proto, images, ok, used, cache_dir / f"{proto.name}-{proto.id}", rate, list(proto.notes) + notes)


# --------------------------------------------------------------------------- step 2: embed
def embed(model: Any, prep: Prepared, cfg: EvalConfig, *, progress: bool = True, shard: Any = None
          ) -> np.ndarray | None:
    """(n_images, D) embeddings; rows of unusable images stay zero and are never scored.

    ``shard`` (a :class:`~mfrbench.shards.Shard`): embed only that shard's images into their own file
    next to the cache and return ``None``; a later call without ``shard`` assembles the shard files
    (:func:`mfrbench.merge.assemble_embeddings`: every image exactly once, or a one-line error).
    """
    from mfrbench.merge import assemble_embeddings, shard_embeddings_path

    info = dict(model.info)
    cache = prep.work / f"emb-{model_key(info)}-flip{int(cfg.flip)}.npz"
    shared = prep.work.parent / "embeddings" / f"{model_key(info)}-flip{int(cfg.flip)}.npz"
    paths = prep.images.crop_path[prep.ok].tolist()
    if shard is not None:
        embed_images(model, [p for p in paths if shard.owns(p)], flip=cfg.flip,
                     cache=shard_embeddings_path(cache, shard), progress=progress)
        return None
    if not cache.is_file():
        assemble_embeddings(cache, paths, info, flip=cfg.flip)
    E = np.zeros((len(prep.images), model.embedding_dim), np.float32)
    E[prep.ok] = embed_images(model, paths, flip=cfg.flip, cache=cache, progress=progress, shared=shared)
    return E


# --------------------------------------------------------------------------- step 3: verify
def _summarise(caught, n_impostor: int) -> list[str]:
    """One short note for all FAR-resolution warnings, the others verbatim."""
    low = [f for f in FARS if n_impostor * f < R.MIN_IMPOSTORS_AT_FAR]
    msgs = sorted({str(w.message) for w in caught if not issubclass(w.category, R.FARResolutionWarning)})
    if low and n_impostor:
        msgs.append(f"TAR@FAR={','.join(far_label(f) for f in low)} rest(s) on < {R.MIN_IMPOSTORS_AT_FAR} impostor "
                    f"pairs ({n_impostor} impostors, smallest non-zero FAR {1 / n_impostor:.2g}): read with the CI")
    return msgs


def _tar_fields(tar: np.ndarray, lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> dict:
    nan = np.full(len(FARS), np.nan)
    lo, hi = (nan, nan) if lo is None else (lo, hi)
    out = {}
    for f, t, a, b in zip(FARS, tar, lo, hi):
        out[tar_col(f)], out[tar_col(f, "lo")], out[tar_col(f, "hi")] = float(t), float(a), float(b)
    return out


def _tar_ci_note(n_boot: int, id_a: np.ndarray, id_b: np.ndarray) -> str:
    return f"TAR@FAR: {ci_method(n_boot, what=f'{len(np.unique(np.r_[id_a, id_b]))} identities')}"


def _verification_from_scores(scores: np.ndarray, same: np.ndarray, id_a: np.ndarray, id_b: np.ndarray,
                              folds: np.ndarray | None, *, balanced: bool, n_boot: int, seed: int,
                              acc_protocol: str) -> dict:
    """Metrics of one explicit list of scored pairs; ``n_boot=0``: no CI (breakdown subsets)."""
    out: dict[str, Any] = {"n_genuine": int(same.sum()), "n_impostor": int((~same).sum())}
    both = out["n_genuine"] > 0 and out["n_impostor"] > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pts = R.operating_points(scores, same, far=FARS)
        lo = hi = None
        if both:
            if n_boot:
                lo, hi = bootstrap_tar_ci(scores, same, id_a, id_b, far=FARS, n_boot=n_boot, seed=seed)
                out["ci_method"] = _tar_ci_note(n_boot, id_a, id_b)
            out["auc"], out["eer"] = R.roc_auc(scores, same), R.eer(scores, same)
    out["warnings"] = _summarise(caught, out["n_impostor"])
    out.update(_tar_fields(pts.tar, lo, hi))
    if folds is not None and len(np.unique(folds)) >= 2 and both:
        acc = verification_accuracy(scores, same, folds=folds, balanced=balanced)
        out["acc"], out["acc_std"], out["acc_protocol"] = acc.mean, acc.std, acc_protocol
    out["roc"] = R.roc_curve(scores, same)[:2] if both else (None, None)
    return out


def _pair_list_folds(pairs: pd.DataFrame, proto) -> tuple[np.ndarray, str]:
    """The pair list's own folds, or 10 contiguous blocks of its order when it has one fold."""
    src = Path(str(proto.meta.get("pairs_file", "pairs.txt"))).name
    folds = pairs.fold.to_numpy()
    if len(np.unique(folds)) >= 2 and proto.meta.get("pair_folds") == "contiguous blocks":  # set by the protocol
        n = len(np.unique(folds))
        return folds, f"{n}-fold (contiguous blocks of {src}, which has no folds), threshold from the other {n - 1}"
    if len(np.unique(folds)) >= 2:
        n = len(np.unique(folds))
        return folds, f"{n}-fold ({src} folds), threshold from the other {n - 1}"
    folds = (np.arange(len(pairs)) * 10) // len(pairs)
    n = len(np.unique(folds))
    return folds, f"{n}-fold (contiguous blocks of {src}, which has no folds), threshold from the other {n - 1}"


def _pair_subsets(pv: pd.DataFrame, images: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """Breakdown subsets of a pair list: by pair type, and by the mask type of the one masked side."""
    out = [(f"pair:{pt}", (pv.pair_type == pt).to_numpy()) for pt in sorted(pv.pair_type.unique())
           if pv.pair_type.nunique() > 1]
    mt, msk = images.mask_type.to_numpy(), images.is_masked.to_numpy()
    a, b = pv.a.to_numpy(), pv.b.to_numpy()
    side = np.where(msk[a] & ~msk[b], mt[a], np.where(msk[b] & ~msk[a], mt[b], ""))
    out += [(f"mask:{t}", side == t) for t in sorted(set(side) - {""}) if (side == t).sum() >= 20]
    return out


def _verify_pair_list(E: np.ndarray, prep: Prepared, metric: str, cfg: EvalConfig
                      ) -> tuple[dict, list[dict], dict[str, tuple]]:
    """(main metrics, breakdown rows, ROC curves) of the protocol's explicit pair list."""
    p, ids = prep.proto.pairs, prep.images.identity.to_numpy()
    valid = prep.ok[p.a.to_numpy()] & prep.ok[p.b.to_numpy()]
    pv = p[valid].reset_index(drop=True)
    if len(pv) == 0:
        raise MfrbenchError(f"benchmark {cfg.benchmark!r}: no pair has two usable images")
    scores = pair_scores(E, pv.a.to_numpy(), pv.b.to_numpy(), metric=metric)
    same = pv.is_same.to_numpy(bool)
    if same.all() or not same.any():
        raise MfrbenchError(f"benchmark {cfg.benchmark!r} has {int(same.sum())} genuine and "
                            f"{int((~same).sum())} impostor pairs: verification needs both")
    id_a, id_b = ids[pv.a.to_numpy()], ids[pv.b.to_numpy()]
    folds, protocol = _pair_list_folds(pv, prep.proto)
    main = _verification_from_scores(scores, same, id_a, id_b, folds, balanced=False, n_boot=cfg.n_boot,
                                     seed=cfg.seed, acc_protocol=protocol)
    main["coverage"] = float(valid.mean())
    rocs, breakdown = {"pair list": main["roc"]}, []
    for name, m in _pair_subsets(pv, prep.images):
        sub = _verification_from_scores(scores[m], same[m], id_a[m], id_b[m], folds[m], balanced=False, n_boot=0,
                                        seed=cfg.seed, acc_protocol=protocol)
        breakdown.append(_breakdown_row(name, sub))
        if name.startswith("pair:"):
            rocs[name[5:]] = sub["roc"]
    return main, breakdown, rocs


def _allpairs_accuracy(st: R.StreamedROC) -> dict:
    """Held-out balanced accuracy from the per-fold histograms (folds by probe identity)."""
    if st.gen_fold_hist is None or len(st.gen_fold_hist) < 2:
        return {}
    acc = kfold_accuracy_from_histograms(st.gen_fold_hist, st.imp_fold_hist, edges=st.edges, balanced=True)
    return {"acc": acc.mean, "acc_std": acc.std,
            "acc_protocol": f"balanced accuracy, {len(st.gen_fold_hist)}-fold by probe identity, thresholds from "
                            f"the other folds, histogram bins={len(st.gen_hist)}"}


def _verify_allpairs(E: np.ndarray, prep: Prepared, ap, metric: str, cfg: EvalConfig, progress: bool) -> dict:
    """Metrics of one all-pairs set, streamed; sets up to ``exact_limit`` pairs also keep their scores
    for exact AUC/EER and the identity-bootstrap CI."""
    images, ok = prep.images, prep.ok
    probe = np.array([i for i in ap.probe if ok[i]], np.int64)
    gallery = probe if ap.same_set else np.array([i for i in ap.gallery if ok[i]], np.int64)
    n_total = len(ap.probe) * (len(ap.probe) - 1) // 2 if ap.same_set else len(ap.probe) * len(ap.gallery)
    n_pairs = len(probe) * (len(probe) - 1) // 2 if ap.same_set else len(probe) * len(gallery)
    if n_pairs == 0:
        raise MfrbenchError(f"all-pairs set {ap.name!r} has no usable pairs")
    ids = images.identity.to_numpy()
    dup = np.isin(images.image_id.to_numpy(), prep.proto.duplicates)
    folds = images["fold"].to_numpy()[probe] if "fold" in images else None
    keep = n_pairs <= cfg.exact_limit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        st = R.streamed_roc(E[probe], None if ap.same_set else E[gallery], ids[probe],
                            None if ap.same_set else ids[gallery], metric=metric, far=FARS, n_bins=HIST_BINS,
                            keep_scores=keep, progress=progress and n_pairs > 5e7, folds_a=folds,
                            no_impostor_a=dup[probe], no_impostor_b=None if ap.same_set else dup[gallery])
    if st.n_genuine == 0 or st.n_impostor == 0:
        raise MfrbenchError(f"all-pairs set {ap.name!r} has {st.n_genuine} genuine and {st.n_impostor} impostor "
                            "pairs: verification needs both")
    res: dict[str, Any] = {"coverage": n_pairs / n_total if n_total else float("nan"), "n_genuine": st.n_genuine,
                           "n_impostor": st.n_impostor, **_allpairs_accuracy(st)}
    notes = _summarise(caught, st.n_impostor)
    if keep:
        s, g = st.info["scores"], st.info["is_genuine"]
        id_a, id_b = ids[probe][st.info["rows"]], ids[gallery][st.info["cols"]]
        lo, hi = bootstrap_tar_ci(s, g, id_a, id_b, far=FARS, n_boot=cfg.n_boot, seed=cfg.seed)
        res.update(_tar_fields(st.points.tar, lo, hi), auc=R.roc_auc(s, g), eer=R.eer(s, g),
                   roc=R.roc_curve(s, g)[:2], ci_method=_tar_ci_note(cfg.n_boot, id_a, id_b))
    else:
        res.update(_tar_fields(st.points.tar), auc=st.auc()[0], eer=st.eer(), roc=st.roc()[:2],
                   ci_method=f"TAR@FAR: no CI ({n_pairs:.3g} pairs, streamed)")
        notes.append(f"{n_pairs:.3g} pairs: TAR@FAR exact from streamed counts, no bootstrap CI")
    res["warnings"] = notes
    return res


#: what an all-pairs set named by ``Protocol.far_set`` contributes to a row whose accuracy is the pair list's
_FAR_KEYS = ("n_genuine", "n_impostor", "auc", "eer", "ci_method",
             *(tar_col(f, b) for f in FARS for b in ("", "lo", "hi")))


@dataclass
class Verification:
    fields: dict               # row columns
    breakdown: list[dict]
    rocs: dict[str, tuple]
    notes: list[str]
    main_roc: str = ""         # the curve that carries the row's TAR@FAR (the report overlays it across cells)


def verify(E: np.ndarray, prep: Prepared, metric: str, cfg: EvalConfig, *, progress: bool = True) -> Verification:
    """Pair list and all-pairs sets; the row takes the pair list's numbers, TAR@FAR from
    ``proto.far_set`` when the protocol names one (MFR2), else the first all-pairs set's."""
    proto = prep.proto
    main, breakdown, rocs = _verify_pair_list(E, prep, metric, cfg) if proto.pairs is not None else ({}, [], {})
    sets = {ap.name: _verify_allpairs(E, prep, ap, metric, cfg, progress) for ap in proto.allpairs}
    for name, res in sets.items():
        rocs[name] = res["roc"]
        breakdown.append(_breakdown_row(f"pair:{name}", res))
    notes: list[str] = []
    if not main and sets:
        main = dict(next(iter(sets.values())))
    if proto.pairs is not None and proto.far_set:
        res = sets[proto.far_set]
        main.update({k: res[k] for k in _FAR_KEYS if k in res})
        main["warnings"] = res["warnings"]  # the pair list's few impostors no longer carry TAR@FAR
        notes.append(f"TAR@FAR, AUC, EER from the {proto.far_set!r} set ({res['n_impostor']} impostor pairs); "
                     "accuracy from the pair list")
    fields = {k: v for k, v in main.items() if k not in ("roc", "warnings")}
    main_roc = (proto.far_set if proto.far_set else "pair list") if proto.pairs is not None else next(iter(sets), "")
    return Verification(fields, breakdown, rocs, notes + main.get("warnings", []), main_roc)


def _breakdown_row(subset: str, v: dict) -> dict:
    return {"subset": subset, **{k: v.get(k) for k in BREAKDOWN_METRICS}}


# --------------------------------------------------------------------------- step 4: identify
@dataclass
class Identification:
    fields: dict
    breakdown: list[dict]
    cmc: np.ndarray | None
    notes: list[str]


def identify(E: np.ndarray, prep: Prepared, metric: str, cfg: EvalConfig) -> Identification:
    """Rank-1/Rank-5 (identity-bootstrap CIs over probe identities, gallery fixed), CMC, and
    Rank-k by probe mask type."""
    proto, images, ok = prep.proto, prep.images, prep.ok
    none = Identification({}, [], None, [])
    if proto.gallery is None or proto.probes is None or not len(proto.probes):
        return none
    g = np.array([i for i in proto.gallery if ok[i]], np.int64)
    ids = images.identity.to_numpy()
    gal_ids = set(ids[g])
    p_all = np.asarray(proto.probes, np.int64)
    p = np.array([i for i in p_all if ok[i] and ids[i] in gal_ids], np.int64)
    if len(p) == 0 or len(g) == 0:
        return none
    r = identification_ranks(E[p], ids[p], E[g], ids[g], metric=metric, rule=cfg.gallery_rule)
    fields: dict[str, Any] = {"n_probes": len(p), "n_gallery_ids": r.n_gallery_identities,
                              "n_distractors": r.n_distractors}
    for k in (1, 5):
        fields[f"rank{k}"] = rank_k_accuracy(r.ranks, k)
        fields[f"rank{k}_lo"], fields[f"rank{k}_hi"] = bootstrap_rank_ci(r.ranks, ids[p], k, n_boot=cfg.n_boot,
                                                                         seed=cfg.seed)
    fields["ci_method"] = (f"Rank-k: {ci_method(cfg.n_boot, what=f'{len(np.unique(ids[p]))} probe identities')}"
                           " (gallery fixed)")
    notes = [f"identification coverage {len(p) / len(p_all):.3f} of probes"] if len(p) < len(p_all) else []
    pm = images.mask_type.to_numpy()[p]
    breakdown = [{"subset": f"probe-mask:{t}", "n_probes": int((pm == t).sum()),
                  "rank1": rank_k_accuracy(r.ranks[pm == t], 1), "rank5": rank_k_accuracy(r.ranks[pm == t], 5)}
                 for t in sorted(set(pm)) if len(set(pm)) > 1 and (pm == t).sum() >= 10]
    return Identification(fields, breakdown, cmc_curve(r.ranks, max_rank=min(20, r.n_gallery_identities)), notes)


# --------------------------------------------------------------------------- step 5: plot and write
def _plots(out_dir: Path, eval_id: str, title: str, rocs: dict[str, tuple], cmc: np.ndarray | None
           ) -> tuple[str, str]:
    from mfrbench.viz import curve_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    roc_png = cmc_png = ""
    curves = {k: v for k, v in rocs.items() if v[0] is not None}
    if curves:
        roc_png = str(out_dir / f"{eval_id}-roc.png")
        curve_figure("roc", curves, title, roc_png, fars=FARS)
    if cmc is not None and len(cmc):
        cmc_png = str(out_dir / f"{eval_id}-cmc.png")
        curve_figure("cmc", {"": cmc}, title, cmc_png, legend=None)
    return roc_png, cmc_png


def curves_path(plots_dir: Path, eval_id: str) -> Path:
    """Where an evaluation's curves are kept (beside its ROC/CMC images in the store's ``plots/``)."""
    return Path(plots_dir) / f"{eval_id}-curves.npz"


def save_curves(path: Path, rocs: dict[str, tuple], main_roc: str, cmc: np.ndarray | None) -> None:
    """The ROC and CMC arrays as a plain ``.npz`` (no pickles), so a report can draw several cells on
    one figure: ``names`` / ``main`` (strings), ``fpr<i>`` / ``tpr<i>`` per curve, ``cmc``."""
    import io

    from mfrbench.imageio import atomic_write_bytes

    curves = {k: v for k, v in rocs.items() if v[0] is not None}
    arrays: dict[str, np.ndarray] = {"names": np.array(list(curves), dtype=str), "main": np.array(main_roc)}
    for i, (fpr, tpr) in enumerate(curves.values()):
        arrays[f"fpr{i}"], arrays[f"tpr{i}"] = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    if cmc is not None and len(cmc):
        arrays["cmc"] = np.asarray(cmc, np.float64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_curves(path: Path) -> tuple[tuple[np.ndarray, np.ndarray] | None, np.ndarray | None]:
    """(main ROC as (fpr, tpr) or None, CMC or None) of a :func:`save_curves` file."""
    with np.load(path, allow_pickle=False) as z:
        names = [str(n) for n in z["names"]]
        main = str(z["main"])
        i = names.index(main) if main in names else (0 if names else -1)
        roc = (z[f"fpr{i}"], z[f"tpr{i}"]) if i >= 0 else None
        return roc, (z["cmc"] if "cmc" in z.files else None)


def _model_fields(info: dict) -> dict:
    """The model's columns of a row (its training data's generator identity included)."""
    row: dict[str, Any] = {}
    # generator / generator_family / generator_hash: the identity of the model's training data (mfrbench.generate)
    for k in ("model", "model_path", "backbone", "loss", "embedding_dim", "config_hash", "generator",
              "generator_family", "generator_hash"):
        row[k] = info.get(k, "")
    td = info.get("train_data", "")
    row["train_data"] = td if isinstance(td, str) else ";".join(map(str, td))
    return row


def _row(info: dict, metric: str, cfg: EvalConfig, prep: Prepared, ver: Verification, ident: Identification
         ) -> dict:
    """One evals.csv row from the steps' results (``ci_method`` joins what each CI resampled)."""
    from mfrbench.results import new_eval_id, now_iso

    row: dict[str, Any] = {"eval_id": new_eval_id(), "kind": "eval", "time": now_iso(), "benchmark": cfg.benchmark,
                           "protocol_id": prep.proto.id, "root": str(prep.proto.root), "metric": metric,
                           "flip": cfg.flip, "gallery_rule": cfg.gallery_rule, "fallback": cfg.fallback,
                           "tool_version": __version__, **_model_fields(info), "detect_rate": prep.detect_rate,
                           "n_duplicates": prep.proto.n_duplicate_files}
    row.update(ver.fields)
    row.update({k: v for k, v in ident.fields.items() if k != "ci_method"})
    cis = [x for x in (ver.fields.get("ci_method"), ident.fields.get("ci_method")) if x]
    row["ci_method"] = "; ".join(cis) if cis else ""
    row["notes"] = " | ".join(dict.fromkeys(prep.notes + ver.notes + ident.notes))
    return row


def write(store: str | os.PathLike, row: dict, ver: Verification, ident: Identification, cfg: EvalConfig,
          t0: float) -> dict:
    """Plots, then the row and its breakdown rows appended to the store; the row is returned."""
    from mfrbench.results import append_row, store_paths

    title = f"{cfg.benchmark} | {row.get('model')} ({row['metric']}{', flip' if cfg.flip else ''})"
    plots = store_paths(store)[0] / "plots"
    row["roc_png"], row["cmc_png"] = _plots(plots, row["eval_id"], title, ver.rocs, ident.cmc)
    save_curves(curves_path(plots, row["eval_id"]), ver.rocs, ver.main_roc, ident.cmc)
    row["seconds"] = round(time.time() - t0, 2)
    breakdown = [{**b, "benchmark": cfg.benchmark} for b in ver.breakdown + ident.breakdown]
    append_row(store, row, breakdown)
    row["breakdown"] = breakdown
    return row


# --------------------------------------------------------------------------- entry point
def evaluate(model_spec: str | os.PathLike, cfg: EvalConfig, *, results_dir: str | os.PathLike = "results",
             cache_dir: str | os.PathLike | None = None, workers: int = 1, progress: bool = True,
             model: Any = None, shard: Any = None) -> dict:
    """Evaluate ``model_spec`` on ``cfg.benchmark``; append the row to ``results_dir``; return it.

    ``model`` (optional) is an already loaded embedder (anything with ``embed``, ``info``,
    ``embedding_dim`` and ``metric``), used instead of loading ``model_spec``. ``shard`` (``"i/N"``):
    only embed that shard's images (into the cache) and return ``{"shard", "images", "embeddings"}``; the
    same call without ``shard`` then assembles the N shards' embeddings and scores them.
    """
    from mfrbench.embedders import load_model
    from mfrbench.results import check_store, store_paths

    check_store(results_dir)  # a damaged store or a --results file fails now, not after the evaluation
    if shard is not None:
        from mfrbench.shards import Shard

        shard = Shard.parse(shard)  # a bad --shard fails before any work
    t0 = time.time()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    model = model if model is not None else load_model(model_spec)
    metric = getattr(model, "metric", "cosine")
    if shard is not None:  # issue 15: the embedding step only, for one shard
        from mfrbench.merge import shard_embeddings_path
        from mfrbench.shards import exclusive

        sh = shard
        with exclusive(cache / f".prepare-{cfg.benchmark}.lock"):  # the first shard prepares, the others reuse it
            prep = prepare(cfg, store_paths(results_dir)[0], cache, workers=workers, progress=progress)
        embed(model, prep, cfg, progress=progress, shard=sh)
        cache_file = prep.work / f"emb-{model.info.get('config_hash', 'model')}-flip{int(cfg.flip)}.npz"
        return {"shard": str(sh), "images": sum(sh.owns(p) for p in prep.images.crop_path[prep.ok]),
                "of": int(prep.ok.sum()), "embeddings": str(shard_embeddings_path(cache_file, sh))}
    prep = prepare(cfg, store_paths(results_dir)[0], cache, workers=workers, progress=progress)
    E = embed(model, prep, cfg, progress=progress)
    ver = verify(E, prep, metric, cfg, progress=progress)
    ident = identify(E, prep, metric, cfg)
    return write(results_dir, _row(dict(model.info), metric, cfg, prep, ver, ident), ver, ident, cfg, t0)
