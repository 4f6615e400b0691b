"""Benchmark protocols: which images, which pairs, which gallery and probes, written to disk.

Each protocol is built from a dataset's real layout and a seed, and written to
``<results>/protocols/<name>-<id>/`` so anyone can rerun it: ``images.csv`` (every image
the protocol uses, with its identity, masked flag, mask type and *variant*: ``orig`` or
``masked`` = made by the protocol's generator), ``pairs.csv`` (explicit pair lists:
``a, b, is_same, fold, pair_type``), ``gallery.csv`` / ``probes.csv`` (identification),
``allpairs.json`` (the image ids of each all-pairs set), ``protocol.json`` (name, seed, source
root, counts, rules). ``<id>`` is a
hash of those files, so a changed dataset or seed is a new protocol.

Duplicates (every protocol, :func:`build_protocol`): image files byte-identical to a file filed
under *another* identity (RMFRD has such copies) are found by content hash (SHA-1; only files
of equal size are read), listed in ``duplicates.csv``, counted (``Protocol.duplicates``, a
note) and kept out of impostor pairs: their impostor pairs are dropped from pair lists, and the
evaluator leaves them out of the impostor side of all-pairs sets. Which of the identities is right
is unknown, so their genuine pairs stay.

========== ===========================================================================================
``lfw``      LFW View 2 ``pairs.txt`` as published; its folds (10, or 3 in the data kit). Verification.
``lfw-masked`` the same pairs, one side of every pair (seeded choice) masked by a generator (default
             ``mtf``, mask types drawn uniformly from the 7 MaskTheFace families, correct wearing,
             seed 0); identification over every person with >= 2 images: one seeded unmasked
             gallery image per person, all their other images masked as probes.
``rmfrd``    people present in both trees. Verification: **all** masked x unmasked pairs (genuine =
             same person), 10 folds by probe identity (seeded) for balanced accuracy, plus the
             masked x masked pairs as a pair-type breakdown. Identification: masked probes against
             the unmasked gallery (closed set).
``mfr2``     its ``pairs.txt`` (848 pairs, no folds: 10 contiguous blocks) for accuracy, pair types
             from ``mfr2_labels.txt``; TAR@FAR from the ``all-pairs`` set (every unordered pair of its
             images, about 35k impostors: pairs.txt's 424 impostor pairs cannot reach FAR=1e-3);
             identification: masked probes vs unmasked gallery.
``folder``   ``<root>/masked/<identity>/*`` and ``<root>/unmasked/<identity>/*``: as ``rmfrd``.
``bin:PATH`` an insightface verification ``.bin`` (:mod:`mfrbench.binsets`): its pairs, arcface_torch's
             10 consecutive folds; the images come aligned, so nothing is detected. Named sets:
             ``lfw-bin``, ``cfp-fp``, ``cfp-ff``, ``agedb-30``, ``calfw``, ``cplfw``, ``vgg2-fp``
             (``--root`` = the folder holding ``<name>.bin``; default: the data root and its subfolders).
========== ===========================================================================================
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mfrbench.datasets import Dataset, FaceRecord, create_dataset, read_mfr2_labels, read_pairs
from mfrbench.errors import DataNotFoundError, MfrbenchError
from mfrbench.registry import Registry

log = logging.getLogger(__name__)

PROTOCOLS: Registry = Registry("benchmark")
IMAGE_COLUMNS = ["image_id", "key", "src_path", "identity", "is_masked", "mask_type", "variant"]


@dataclass
class AllPairs:
    """Every probe x gallery pair (``same_set``: every unordered pair within ``probe``)."""

    name: str
    probe: np.ndarray
    gallery: np.ndarray
    same_set: bool = False


def _no_ids() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass
class Protocol:
    """A benchmark instance. ``images.image_id`` indexes the rows; pairs and splits refer to it."""

    name: str
    root: Path
    seed: int
    images: pd.DataFrame
    pairs: pd.DataFrame | None = None
    allpairs: list[AllPairs] = field(default_factory=list)
    gallery: np.ndarray | None = None
    probes: np.ndarray | None = None
    generator: str | None = None
    generator_kwargs: dict = field(default_factory=dict)
    #: builds the masking generator from (``generator``, ``**generator_kwargs``): a MaskGenerator or a zero-arg
    #: factory. Given by the caller (the core names no generator); ``mfrbench eval`` passes the registry's.
    masker: Any = None
    notes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    id: str = ""
    out_dir: Path | None = None
    #: image ids whose file is byte-identical to a file of another identity (kept out of impostor pairs)
    duplicates: np.ndarray = field(default_factory=_no_ids)
    #: the all-pairs set the row's TAR@FAR is read from (``None``: the pair list, else the first set)
    far_set: str | None = None
    #: images that come aligned (a .bin set): ``crops(folder) -> {key: crop path or ''}`` writes them, and
    #: :func:`prepare_images` neither detects nor aligns (their ``variant`` is ``aligned``)
    crops: Any = None

    @property
    def n_duplicate_files(self) -> int:
        """Distinct image files among :attr:`duplicates` (a masked variant shares its file)."""
        return int(self.images.loc[self.images.image_id.isin(self.duplicates), "src_path"].nunique())

    # ------------------------------------------------------------------ files
    def _files(self) -> dict[str, bytes]:
        files = {"images.csv": self.images[IMAGE_COLUMNS].to_csv(index=False).encode()}
        if self.pairs is not None:
            files["pairs.csv"] = self.pairs[["a", "b", "is_same", "fold", "pair_type"]].to_csv(index=False).encode()
        if self.gallery is not None:
            files["gallery.csv"] = pd.DataFrame({"image_id": self.gallery}).to_csv(index=False).encode()
            files["probes.csv"] = pd.DataFrame({"image_id": self.probes}).to_csv(index=False).encode()
        if len(self.duplicates):
            files["duplicates.csv"] = self.images.loc[self.images.image_id.isin(self.duplicates),
                                                      ["image_id", "key", "identity"]].to_csv(index=False).encode()
        return files

    def write(self, out_root: str | os.PathLike) -> Path:
        """Write the protocol files under ``out_root/<name>-<id>/`` (atomic; idempotent)."""
        from mfrbench.imageio import atomic_write_bytes

        files = self._files()
        spec = {"name": self.name, "seed": self.seed, "generator": self.generator,
                "generator_kwargs": self.generator_kwargs,
                "allpairs": [{"name": a.name, "probe": a.probe.tolist(), "gallery": "probe" if a.same_set
                              else a.gallery.tolist(), "same_set": a.same_set} for a in self.allpairs]}
        if self.far_set is not None:  # only when set: older protocols keep their id
            spec["far_set"] = self.far_set
        h = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode())
        for k in sorted(files):
            h.update(files[k])
        self.id = h.hexdigest()[:10]
        out = Path(out_root) / f"{self.name}-{self.id}"
        out.mkdir(parents=True, exist_ok=True)
        for k, v in files.items():
            if not (out / k).is_file() or (out / k).read_bytes() != v:
                atomic_write_bytes(out / k, v)
        meta = {**{k: v for k, v in spec.items() if k != "allpairs"}, "id": self.id, "root": str(self.root),
                "notes": self.notes, **self.meta,
                "counts": self.counts(),
                "allpairs_rule": {a.name: _allpairs_rule(a) for a in self.allpairs}}
        atomic_write_bytes(out / "protocol.json", json.dumps(meta, indent=2, default=str).encode())
        if self.allpairs:  # image ids of each all-pairs set (probe x gallery, or every pair within probe)
            atomic_write_bytes(out / "allpairs.json", json.dumps(spec["allpairs"]).encode())
        self.out_dir = out
        return out

    def counts(self) -> dict:
        c = {"images": int(len(self.images)), "identities": int(self.images.identity.nunique())}
        if self.pairs is not None:
            c.update(pairs=int(len(self.pairs)), genuine=int(self.pairs.is_same.sum()),
                     impostor=int((~self.pairs.is_same).sum()))
        for a in self.allpairs:
            n = len(a.probe) * (len(a.probe) - 1) // 2 if a.same_set else len(a.probe) * len(a.gallery)
            c[f"allpairs:{a.name}"] = n
        if self.gallery is not None:
            c.update(gallery=int(len(self.gallery)), probes=int(len(self.probes)))
        c["duplicates"] = self.n_duplicate_files
        return c


def _allpairs_rule(a: AllPairs) -> str:
    if a.same_set:
        return f"every unordered pair of the {len(a.probe)} listed images (genuine: same identity)"
    return f"every pair of {len(a.probe)} probe x {len(a.gallery)} gallery images (genuine: same identity)"


# --------------------------------------------------------------------------- helpers
def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=[c for c in IMAGE_COLUMNS if c != "image_id"])
    df.insert(0, "image_id", np.arange(len(df), dtype=np.int64))
    df["identity"] = df["identity"].astype(str)
    df["mask_type"] = df["mask_type"].fillna("")
    return df


def _rec_row(rec: FaceRecord, variant: str = "orig", mask_type: str = "") -> dict:
    return {"key": rec.key, "src_path": rec.path, "identity": rec.identity or "", "is_masked": bool(rec.is_masked),
            "mask_type": mask_type if mask_type else ("unknown" if rec.is_masked else "none"), "variant": variant}


def _check_missing(pairs: pd.DataFrame, where: Path, allow_missing: bool, notes: list[str]) -> pd.DataFrame:
    n = int(pairs["missing"].sum())
    if n == 0:
        return pairs
    first = pairs.loc[pairs["missing"], ["path_a", "path_b"]].head(3).to_numpy().tolist()
    if not allow_missing:
        raise MfrbenchError(f"{n} of {len(pairs)} pairs in {where} name images that do not exist (first: {first}); "
                            "point --root at the full dataset, or pass --allow-missing to evaluate the rest "
                            "(coverage is then reported)")
    notes.append(f"{n} of {len(pairs)} pairs dropped: image missing")
    return pairs[~pairs["missing"]].reset_index(drop=True)


def _file_digest(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cross_identity_duplicates(images: pd.DataFrame) -> np.ndarray:
    """Image ids whose file has the same bytes as a file filed under another identity.

    Only files sharing their size with a file of another identity are hashed, so a benchmark
    without duplicates reads no image. Masked variants share their source file and identity.
    """
    files = images[["src_path", "identity"]].drop_duplicates()
    if files.empty:
        return _no_ids()
    files = files.assign(size=[os.path.getsize(p) if os.path.isfile(p) else -1 for p in files.src_path])
    files = files[files["size"] >= 0]
    files = files[files.groupby("size").identity.transform("nunique") > 1]
    if files.empty:
        return _no_ids()
    files = files.assign(digest=[_file_digest(p) for p in files.src_path])
    dup_paths = files.loc[files.groupby("digest").identity.transform("nunique") > 1, "src_path"]
    return images.image_id[images.src_path.isin(set(dup_paths))].to_numpy(np.int64)


def _keep_duplicates_out_of_impostors(proto: Protocol) -> Protocol:
    """Find cross-identity duplicates, note them, drop their impostor pairs from the pair list."""
    dup = cross_identity_duplicates(proto.images)
    proto.duplicates = dup
    if not len(dup):
        return proto
    n_dropped = 0
    if proto.pairs is not None:
        flagged = proto.pairs.a.isin(dup) | proto.pairs.b.isin(dup)
        drop = flagged & ~proto.pairs.is_same
        n_dropped = int(drop.sum())
        proto.pairs = proto.pairs[~drop].reset_index(drop=True)
    groups = proto.images[proto.images.image_id.isin(dup)].identity.nunique()
    proto.notes.append(f"{proto.n_duplicate_files} image files byte-identical to a file of another identity "
                       f"({groups} identities involved) kept out of impostor pairs"
                       + (f" ({n_dropped} impostor pairs dropped from the pair list)" if n_dropped else ""))
    proto.meta["duplicates"] = {"files": proto.n_duplicate_files, "impostor_pairs_dropped": n_dropped,
                                "rule": "same SHA-1 under different identities; no impostor pair uses such an image"}
    return proto


def _identity_folds(identities: pd.Series, seed: int, n_folds: int = 10) -> dict[str, int]:
    ids = np.array(sorted(identities.unique()))
    perm = np.random.default_rng(seed).permutation(len(ids))
    return {ids[p]: int(i % n_folds) for i, p in enumerate(perm)}


# --------------------------------------------------------------------------- protocols
@PROTOCOLS.register
def lfw(root: str | os.PathLike | None = None, seed: int = 0, pairs: str = "pairs.txt",
        allow_missing: bool = False) -> Protocol:
    """LFW View 2 as published: the pairs file's own folds; verification only."""
    ds = create_dataset("lfw", root)
    pf = ds.root / pairs
    if not pf.is_file():
        raise DataNotFoundError(f"LFW pairs file {pf} not found; LFW View 2 needs pairs.txt next to the images")
    notes: list[str] = []
    p = _check_missing(read_pairs(pf, root=ds.root), pf, allow_missing, notes)
    paths = pd.unique(pd.concat([p.path_a, p.path_b]))
    rows = [{"key": Path(x).relative_to(ds.root).as_posix(), "src_path": str(Path(x).resolve()),
             "identity": Path(x).parent.name, "is_masked": False, "mask_type": "none", "variant": "orig"}
            for x in paths]
    images = _frame(rows)
    idx = {r: i for i, r in enumerate(paths)}
    pairs_df = pd.DataFrame({"a": p.path_a.map(idx).astype(np.int64), "b": p.path_b.map(idx).astype(np.int64),
                             "is_same": p.is_same.astype(bool), "fold": p.fold.astype(int),
                             "pair_type": "unmasked-unmasked"})
    return Protocol("lfw", ds.root, seed, images, pairs_df, notes=notes,
                    meta={"pairs_file": str(pf), "folds": int(pairs_df.fold.nunique()),
                          "accuracy": f"{pairs_df.fold.nunique()}-fold, official folds"})


@PROTOCOLS.register
def lfw_masked(root: str | os.PathLike | None = None, seed: int = 0, pairs: str = "pairs.txt",
               allow_missing: bool = False, generator: str = "mtf", mask_type: str = "random",
               generator_kwargs: dict | None = None, masker: Any = None) -> Protocol:
    """LFW View 2 pairs with one side masked, plus masked-probe identification.

    ``generator`` / ``generator_kwargs`` choose the masking generator (a registered name and its
    options, e.g. ``mfgan`` with ``checkpoint=RUN``); the default is ``mtf`` with ``mask_type``.
    ``masker(generator, **generator_kwargs)`` builds it (a MaskGenerator or a zero-arg factory), e.g.
    ``mfrbench.generators.base.generator_factory``; without one, :func:`prepare_images` refuses.
    """
    base = lfw(root, seed, pairs, allow_missing)
    ds = create_dataset("lfw", base.root)
    rng = np.random.default_rng(seed)
    recs = list(ds.records())
    known = {k: i for i, k in enumerate(base.images.key)}
    orig_rows = base.images.drop(columns="image_id").to_dict("records")
    for rec in recs:  # every LFW image (identification uses people with >= 2 images)
        if rec.key not in known:
            known[rec.key] = len(orig_rows)
            orig_rows.append(_rec_row(rec))
    n = len(orig_rows)
    masked_rows = [{**r, "is_masked": True, "mask_type": "", "variant": "masked"} for r in orig_rows]
    images = _frame(orig_rows + masked_rows)  # image i (orig) <-> image n + i (masked)
    # One side of every pair masked, chosen by the seed.
    pairs_df = base.pairs.copy()
    side = rng.integers(0, 2, len(pairs_df)).astype(bool)
    pairs_df.loc[side, "a"] += n
    pairs_df.loc[~side, "b"] += n
    pairs_df["pair_type"] = "masked-unmasked"
    # Identification: one unmasked gallery image per person with >= 2 images, the rest masked probes.
    by_id = images.iloc[:n].groupby("identity")["image_id"].apply(list)
    gallery, probes = [], []
    for ident, ids in by_id.items():
        if len(ids) < 2:
            continue
        g = ids[int(rng.integers(len(ids)))]
        gallery.append(g)
        probes += [i + n for i in ids if i != g]
    gen_kw = dict(generator_kwargs) if generator_kwargs else ({"mask_type": mask_type} if generator == "mtf" else {})
    return Protocol("lfw-masked", base.root, seed, images, pairs_df, gallery=np.array(gallery, np.int64),
                    probes=np.array(probes, np.int64), generator=generator, generator_kwargs=gen_kw, masker=masker,
                    notes=base.notes + [f"masked side of each pair and probes masked by {generator} {gen_kw} "
                                        f"seed {seed}"],
                    meta={**base.meta, "identification": "persons with >= 2 images: 1 unmasked gallery image "
                                                          "(seeded), other images masked probes; no distractors"})


def _masked_unmasked(name: str, root: Path, masked: list[FaceRecord], unmasked: list[FaceRecord], seed: int,
                     notes: list[str]) -> Protocol:
    m_ids = {r.identity for r in masked}
    u_ids = {r.identity for r in unmasked}
    both = m_ids & u_ids
    only = sorted((m_ids | u_ids) - both)
    if only:
        notes.append(f"{len(only)} identities not in both trees left out (first: {only[:5]})")
    if not both:
        raise MfrbenchError(f"{root}: no identity has both masked and unmasked images")
    rows = [_rec_row(r) for r in masked if r.identity in both] + [_rec_row(r) for r in unmasked if r.identity in both]
    images = _frame(rows)
    probe = images.image_id[images.is_masked].to_numpy()
    gallery = images.image_id[~images.is_masked].to_numpy()
    folds = _identity_folds(images.identity, seed)
    images["fold"] = images.identity.map(folds)
    return Protocol(name, root, seed, images, None,
                    allpairs=[AllPairs("masked-unmasked", probe, gallery),
                              AllPairs("masked-masked", probe, probe, True)],
                    gallery=gallery, probes=probe, notes=notes,
                    meta={"accuracy": "balanced accuracy, 10 folds by probe identity (seeded)",
                          "identification": "masked probes vs unmasked gallery (all images), closed set",
                          "identities": len(both)})


@PROTOCOLS.register
def rmfrd(root: str | os.PathLike | None = None, seed: int = 0) -> Protocol:
    """RMFRD: all masked x unmasked pairs; masked probes vs unmasked gallery."""
    ds = create_dataset("rmfrd", root)
    recs = list(ds.records())
    return _masked_unmasked("rmfrd", ds.root, [r for r in recs if r.is_masked], [r for r in recs if not r.is_masked],
                            seed, [])


@PROTOCOLS.register
def folder(root: str | os.PathLike | None = None, seed: int = 0) -> Protocol:
    """A user's set: ``<root>/masked/<identity>/*`` and ``<root>/unmasked/<identity>/*`` (as rmfrd)."""
    if root is None:
        raise MfrbenchError("the folder benchmark needs --root DIR holding masked/ and unmasked/ identity folders")
    r = Path(root)
    if not (r / "masked").is_dir() or not (r / "unmasked").is_dir():
        raise DataNotFoundError(f"{r} must hold masked/<identity>/ and unmasked/<identity>/ folders")
    masked = list(create_dataset("folder", r / "masked", masked=True).records())
    unmasked = list(create_dataset("folder", r / "unmasked").records())
    masked = [FaceRecord(x.path, x.identity, True, "folder", "masked/" + x.key) for x in masked]
    unmasked = [FaceRecord(x.path, x.identity, False, "folder", "unmasked/" + x.key) for x in unmasked]
    return _masked_unmasked("folder", r, masked, unmasked, seed, [])


@PROTOCOLS.register
def mfr2(root: str | os.PathLike | None = None, seed: int = 0, allow_missing: bool = False) -> Protocol:
    """MFR2: its pairs.txt (10 contiguous folds), pair types and mask types from mfr2_labels.txt."""
    ds = create_dataset("mfr2", root)
    if ds.pairs_file is None:
        raise DataNotFoundError(f"MFR2 pairs.txt not found in {ds.root}")
    notes: list[str] = []
    p = _check_missing(read_pairs(ds.pairs_file, root=ds.root, ext=".png"), ds.pairs_file, allow_missing, notes)
    labels_file = ds.root / "mfr2_labels.txt"
    labels = read_mfr2_labels(labels_file) if labels_file.is_file() else {}
    if not labels:
        notes.append("mfr2_labels.txt missing: mask types and pair types unknown")
    rows = []
    for rec in ds.records():
        stem = Path(rec.path).stem.rsplit("_", 1)[-1]
        mt = labels.get((rec.identity, int(stem))) if stem.isdigit() else None
        rows.append({**_rec_row(rec), "mask_type": mt or "unknown", "is_masked": bool(mt and mt != "no-mask")})
    images = _frame(rows)
    idx = {str(Path(x).resolve()): i for i, x in zip(images.image_id, images.src_path)}
    a = p.path_a.map(lambda x: idx.get(str(Path(x).resolve())))
    b = p.path_b.map(lambda x: idx.get(str(Path(x).resolve())))
    masked = images.set_index("image_id")["is_masked"]

    def ptype(i, j):
        if not labels:
            return "unknown"
        k = int(masked[i]) + int(masked[j])
        return ["unmasked-unmasked", "masked-unmasked", "masked-masked"][k]

    pairs_df = pd.DataFrame({"a": a.astype(np.int64), "b": b.astype(np.int64), "is_same": p.is_same.astype(bool),
                             "fold": p.fold.astype(int)})
    pairs_df["pair_type"] = [ptype(i, j) for i, j in zip(pairs_df.a, pairs_df.b)]
    gallery = probes = None
    if labels:
        m = images[images.is_masked]
        u = images[~images.is_masked & images.identity.isin(m.identity)]
        m = m[m.identity.isin(u.identity)]
        gallery, probes = u.image_id.to_numpy(), m.image_id.to_numpy()
    images["fold"] = images.identity.map(_identity_folds(images.identity, seed))  # accuracy of the all-pairs set
    allpairs = [AllPairs("all-pairs", images.image_id.to_numpy(), images.image_id.to_numpy(), same_set=True)]
    return Protocol("mfr2", ds.root, seed, images, pairs_df, allpairs=allpairs, gallery=gallery, probes=probes,
                    notes=notes, far_set="all-pairs",
                    meta={"accuracy": "10-fold over contiguous blocks of pairs.txt (no official folds)",
                          "pairs_file": str(ds.pairs_file), "pair_folds": "contiguous blocks",
                          "tar_at_far": "every unordered pair of the images (all-pairs set): pairs.txt has only "
                                        f"{int((~pairs_df.is_same).sum())} impostor pairs"})


# --------------------------------------------------------------------------- insightface .bin sets (issue 16)
def _bin_protocol(name: str, path: Path, seed: int) -> Protocol:
    from mfrbench.binsets import kfold_folds, pair_groups, read_bin, write_crops

    vb = read_bin(path)
    groups = pair_groups(vb)
    keys = [f"{i:05d}-{d}" for i, d in enumerate(vb.digests())]  # content in the key: a changed file, a new id
    images = _frame([{"key": k, "src_path": f"{vb.path}#{i}", "identity": f"g{groups[i]}", "is_masked": False,
                      "mask_type": "none", "variant": "aligned"} for i, k in enumerate(keys)])
    n = vb.n_pairs
    pairs_df = pd.DataFrame({"a": np.arange(n, dtype=np.int64) * 2, "b": np.arange(n, dtype=np.int64) * 2 + 1,
                             "is_same": vb.issame, "fold": kfold_folds(n), "pair_type": "unknown"})
    same_group = groups[pairs_df.a] == groups[pairs_df.b]
    notes = [f"{Path(vb.path).name}: images come aligned (no detection); identities unknown: "
             f"{len(np.unique(groups))} groups linked by genuine pairs and identical images stand in for them"]
    if int((same_group & ~vb.issame).sum()):
        notes.append(f"{int((same_group & ~vb.issame).sum())} impostor pairs join images of one group "
                     "(an image byte-identical to one of a genuine pair)")
    return Protocol(name, Path(vb.path), seed, images, pairs_df, notes=notes,
                    crops=lambda folder: write_crops(vb, folder, keys),
                    meta={"pairs_file": vb.path, "pair_folds": "contiguous blocks",
                          "accuracy": "arcface_torch: 10 consecutive folds (KFold, no shuffle), threshold from the "
                                      "other 9, flip test (embeddings of image and mirror summed); thresholds from "
                                      "the unique training scores, not its 0.01 grid",
                          "identities": "groups of images linked by genuine pairs or identical bytes"})


def _find_bin(file_name: str, root: str | os.PathLike | None) -> Path:
    from mfrbench.paths import data_root

    if root is not None:
        r = Path(root)
        cand = [r] if r.suffix == ".bin" else [r / file_name]
    else:
        base = data_root()
        cand = [] if base is None else [base / file_name, *sorted(base.glob(f"*/{file_name}"))]
    for c in cand:
        if c.is_file():
            return c
    where = f"{root}" if root is not None else "the data root and its subfolders"
    raise DataNotFoundError(f"{file_name} not found in {where}; pass --root DIR holding it (insightface's "
                            f"faces_emore/ and faces_webface_112x112/ ship one) or --benchmark bin:PATH")


def _bin_factory(bench: str, file_name: str):
    def factory(root: str | os.PathLike | None = None, seed: int = 0, allow_missing: bool = False) -> Protocol:
        return _bin_protocol(bench, _find_bin(file_name, root), seed)

    factory.__doc__ = f"insightface's {file_name}: its pairs, arcface_torch's 10 consecutive folds, flip test."
    factory.__name__ = bench.replace("-", "_")
    return factory


def _register_bin_sets() -> None:
    from mfrbench.binsets import BIN_SETS

    for bench, file_name in BIN_SETS.items():
        PROTOCOLS.register(_bin_factory(bench, file_name), name=bench)


_register_bin_sets()


def build_protocol(name: str, root: str | os.PathLike | None = None, *, seed: int = 0, **kw) -> Protocol:
    """Build the benchmark ``name`` (see :data:`PROTOCOLS`) for the dataset at ``root``.

    ``bin:PATH`` is the insightface verification set at ``PATH`` (any ``.bin`` file).
    """
    if name.startswith("bin:"):
        path = Path(name[4:]).expanduser()
        if not path.is_file():
            raise DataNotFoundError(f"--benchmark {name}: no file {path}")
        return _bin_protocol(f"bin-{path.stem}", path, seed)
    factory = PROTOCOLS.get(name)
    kw = {k: v for k, v in kw.items() if v is not None}
    return _keep_duplicates_out_of_impostors(factory(root=root, seed=seed, **kw))


# --------------------------------------------------------------------------- image preparation
def _center_crop(path: str, size: int = 112) -> np.ndarray:
    import cv2

    from mfrbench.imageio import load_rgb

    rgb = load_rgb(path, min_side=1)
    h, w = rgb.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return cv2.resize(rgb[y0:y0 + s, x0:x0 + s], (size, size), interpolation=cv2.INTER_AREA)


def prepare_images(proto: Protocol, cache_dir: str | os.PathLike, *, workers: int = 1, progress: bool = True,
                   fallback: str = "center") -> pd.DataFrame:
    """Align every protocol image once (and mask the ``masked`` variants); cached per protocol.

    Returns ``proto.images`` plus ``crop_path`` (empty when unusable), ``how`` (``detected``,
    ``fallback:center``, ``masked``, or ``missing: <reason>``) and, for masked variants, the
    generator's ``mask_type``. Detection failures fall back to a centre crop of the image
    (``fallback='center'``; the photos of these benchmarks are face crops) or are dropped
    (``fallback='drop'``); either way the evaluation reports the coverage.
    """
    from mfrbench.align import AlignConfig, align_dataset
    from mfrbench.imageio import save_image
    from mfrbench.manifest import read_manifest

    if fallback not in ("center", "drop"):
        raise MfrbenchError(f"Expected fallback 'center' or 'drop', but got {fallback!r}")
    work = Path(cache_dir) / f"{proto.name}-{proto.id or 'adhoc'}"
    if proto.crops is not None:  # images that come aligned (.bin sets): written once, never detected
        crop = proto.crops(work / "crops")
        df = proto.images.copy()
        df["crop_path"] = df.key.map(crop).fillna("")
        df["how"] = np.where(df.crop_path != "", "aligned", "missing: does not decode")
        return df
    src = proto.images.drop_duplicates("key")
    records = [FaceRecord(r.src_path, r.identity, bool(r.is_masked), proto.name, r.key)
               for r in src.itertuples(index=False)]
    ds = Dataset(proto.name, proto.root, lambda: iter(records))
    needs_68 = (proto.images.variant == "masked").any()
    align_dataset(ds, work / "aligned", workers=workers, dedupe=False, progress=progress,
                  cfg=AlignConfig(landmarker="auto" if needs_68 else "none"))
    man = read_manifest(work / "aligned")
    crop, how = {}, {}
    for r in man.itertuples(index=False):
        if r.status == "ok":
            crop[r.key], how[r.key] = r.abs_out_path, "detected"
        elif str(r.reason).startswith("no_face") and fallback == "center":
            out = work / "fallback" / Path(r.key).with_suffix(".png")
            if not out.is_file():
                save_image(out, _center_crop(r.src_path))
            crop[r.key], how[r.key] = str(out), "fallback:center"
        else:
            crop[r.key], how[r.key] = "", f"missing: {r.reason}"
    df = proto.images.copy()
    df["crop_path"] = df.key.map(crop).fillna("")
    df["how"] = df.key.map(how).fillna("missing: not aligned")
    if needs_68:
        from mfrbench.generate import generate_dataset

        if proto.masker is None:
            raise MfrbenchError(f"benchmark {proto.name!r} masks images with {proto.generator or 'mtf'}: build it with "
                                "masker=mfrbench.generators.base.generator_factory (`mfrbench eval` does)")
        generate_dataset(proto.masker(proto.generator or "mtf", **proto.generator_kwargs), work / "masked",
                         manifest=work / "aligned", seed=proto.seed, workers=workers, progress=progress, dedupe=False)
        gm = read_manifest(work / "masked")
        ok = gm[gm.status == "ok"].set_index("key")
        bad = gm[gm.status != "ok"].set_index("key")["reason"].to_dict()
        mv = df.variant == "masked"
        keys = df.loc[mv, "key"]
        df.loc[mv, "crop_path"] = keys.map(ok["abs_out_path"]).fillna("").to_numpy()
        df.loc[mv, "mask_type"] = keys.map(ok["mask_type"] if "mask_type" in ok else {}).fillna("").to_numpy()
        df.loc[mv, "how"] = [("masked" if k in ok.index else f"missing: mask: {bad.get(k, 'not aligned')}")
                             for k in keys]
    return df
