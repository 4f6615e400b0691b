"""Dataset adapters: each turns a dataset's real on-disk layout into a stream of records.

A record (:class:`FaceRecord`) is ``path, identity, is_masked, source`` plus a unique ``key``
(the path relative to the dataset root) and, where the dataset ships them, annotated
landmarks. Adapters *stream*: they walk directories one at a time in sorted order
(deterministic across machines) and never load pixels.

Layouts (see ``README.md`` and ``../shared/reference/metrics.md``):

========== ==================================================================================
``lfw``     ``<Name>/<Name>_NNNN.jpg`` + ``pairs.txt`` (View 2: header ``folds\\tn``)
``celeba``  ``img_celeba/`` or ``img_align_celeba/`` + ``identity_CelebA.txt``
            (+ optional ``list_landmarks[_align]_celeba.txt``)
``ffhq``    flat (or thousand-bucketed) folder of PNGs, no identities
``folder``  ``<identity>/<image>``, one folder per identity
``rmfrd``   ``AFDB_face_dataset/<person>/`` (unmasked) + ``AFDB_masked_face_dataset/<person>/``
            (masked), optionally wrapped in ``self-built-masked-face-recognition-dataset/``
``mfr2``    ``<Name>/<Name>_NNNN.png`` + ``pairs.txt`` (+ optional ``mfr2_labels.txt``)
``masked-photos``  any tree of masked photos, no identities
``synthetic``      procedurally drawn faces with known landmarks (see :mod:`mfrbench.synthetic`)
========== ==================================================================================
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from mfrbench.errors import DataNotFoundError, MfrbenchError
from mfrbench.imageio import file_problem, is_image_name, printable_name
from mfrbench.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceRecord:
    """One input image. ``identity`` is ``None`` for datasets without labels."""

    path: str
    identity: str | None
    is_masked: bool
    source: str
    key: str
    lmk5: tuple[float, ...] | None = None   # (x1, y1, ..., x5, y5), ArcFace order, image coords
    lmk68: tuple[float, ...] | None = None  # iBUG 68 order, image coords
    #: Why this input cannot be read, found while listing it (a FIFO, a symlink loop, an image outside an
    #: identity folder): it becomes a ``skipped`` row with this reason and is never opened. "" = readable.
    skip: str = ""

    def __post_init__(self) -> None:
        # A file name that is not UTF-8 (a latin-1 name from an old archive) reaches Python as a string with
        # surrogates, which no UTF-8 manifest can hold: it becomes a skipped row under a printable name.
        try:
            "".join((self.path, self.key, self.identity or "")).encode("utf-8")
        except UnicodeEncodeError:
            shown = {f: printable_name(getattr(self, f)) for f in ("path", "key", "identity") if getattr(self, f)}
            for f, v in shown.items():
                object.__setattr__(self, f, v)
            object.__setattr__(self, "skip", self.skip or f"bad_name: {shown['key']} is not a UTF-8 file name; "
                                                           "rename it")


@dataclass
class Dataset:
    """A named dataset rooted at ``root``; ``records()`` streams :class:`FaceRecord` s."""

    name: str
    root: Path
    _records: Callable[[], Iterator[FaceRecord]]
    pairs_file: Path | None = None
    info: dict = field(default_factory=dict)

    def records(self, limit: int | None = None) -> Iterator[FaceRecord]:
        for i, rec in enumerate(self._records()):
            if limit is not None and i >= limit:
                return
            yield rec

    def count(self) -> int:
        return sum(1 for _ in self._records())


DATASETS: Registry[Dataset] = Registry("dataset")
register_dataset = DATASETS.register
list_datasets = DATASETS.names


def create_dataset(name: str, root: str | os.PathLike | None = None, **kwargs) -> Dataset:
    """Build the adapter ``name`` for the folder ``root`` (default: ``<data root>/<name>``)."""
    from mfrbench.paths import dataset_dir

    factory = DATASETS.get(name)
    if name == "synthetic":
        return factory(root=Path(root) if root else None, **kwargs)
    default_sub = {"masked-photos": "masked-faces"}.get(name, name)
    return factory(root=dataset_dir(default_sub, root), **kwargs)


# --------------------------------------------------------------------------- helpers
def _sorted_entries(d: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(d) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as err:
        raise DataNotFoundError(f"cannot list {d}: {err.strerror or err}") from err


def walk_images(root: Path, *, recursive: bool = True, within: Path | None = None,
                _seen: set | None = None) -> Iterator[Path]:
    """Yield image files under ``root`` in sorted order, one directory listing at a time.

    Hidden files/folders are ignored; non-image names are ignored here (a folder of photos
    routinely holds ``.txt``/``Thumbs.db``), while entries with an image name that cannot be read
    (a FIFO, a symlink loop or dangling link, a corrupt file) are yielded and become ``skipped``
    rows later (:func:`input_record`). A symlinked folder is followed only when it leads outside
    ``within`` (default ``root``: inside, its images are listed under their own path) and only once,
    so a link to a parent folder neither loops nor lists an image twice.
    """
    seen = _seen if _seen is not None else set()
    base = os.path.realpath(within if within is not None else root)
    try:
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
    except OSError:
        pass  # _sorted_entries names the problem
    for e in _sorted_entries(root):
        if e.name.startswith("."):
            continue
        try:
            is_dir = e.is_dir(follow_symlinks=True)
        except OSError:  # a symlink loop: not a folder; an image name makes it a skipped row
            is_dir = False
        if is_dir:
            target = os.path.realpath(e.path)
            if e.is_symlink() and (target == base or target.startswith(base.rstrip("/") + "/")):
                log.debug("%s links inside %s: its images are listed under their own path", e.path, base)
                continue
            if recursive:
                yield from walk_images(Path(e.path), recursive=True, within=base, _seen=seen)
        elif is_image_name(e.name):
            yield Path(e.path)


def input_record(p: Path, identity: str | None, is_masked: bool, source: str, key: str, **kw) -> FaceRecord:
    """The record of the listed image ``p``: its resolved path, and ``skip`` set when it is no regular file."""
    problem = file_problem(p)
    try:
        path = str(p.resolve())
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        path = str(p.absolute())
    return FaceRecord(path, identity, is_masked, source, key, skip=problem.reason if problem else "", **kw)


def _rel(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix()


def _require(path: Path, what: str) -> None:
    if not path.exists():
        raise DataNotFoundError(f"{what} not found at {path}; check --root (layouts: README 'Data layouts')")


def _identity_folders(root: Path, source: str, *, is_masked: bool, key_root: Path | None = None
                      ) -> Iterator[FaceRecord]:
    key_root = key_root or root
    seen: set = set()
    for e in _sorted_entries(root):
        if e.name.startswith("."):
            continue
        try:
            is_dir = e.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            for p in walk_images(Path(e.path), within=root, _seen=seen):
                yield input_record(p, e.name, is_masked, source, _rel(p, key_root))
        elif is_image_name(e.name):  # outside any identity folder: listed, so it is accounted for, but not read
            p = Path(e.path)
            rec = input_record(p, None, is_masked, source, _rel(p, key_root))
            yield replace(rec, skip=rec.skip or f"no_identity: {e.name} is not inside an <identity>/ folder")


def _require_identity_folders(root: Path, what: str) -> None:
    """A folder without ``<identity>/`` subfolders given where ``<identity>/<image>`` is expected: say so first."""
    entries = [e for e in _sorted_entries(root) if not e.name.startswith(".")]
    for e in entries:
        try:
            if e.is_dir():
                return
        except OSError:
            continue
    n = sum(is_image_name(e.name) for e in entries)
    raise MfrbenchError(f"{what} {root} has no <identity>/ subfolders ({n} images directly inside): it wants "
                        "<identity>/<image>, one folder per person; for images without identities use --dataset "
                        "masked-photos or ffhq")


# --------------------------------------------------------------------------- adapters
@register_dataset
def lfw(root: Path, pairs: str = "pairs.txt") -> Dataset:
    """LFW (or LFW-a / deep-funneled): ``<Name>/<Name>_NNNN.jpg`` + View 2 ``pairs.txt``."""
    _require(root, "LFW folder")
    pf = root / pairs
    return Dataset("lfw", root, lambda: _identity_folders(root, "lfw", is_masked=False),
                   pairs_file=pf if pf.exists() else None)


def _read_celeba_table(path: Path) -> dict[str, tuple[float, ...]]:
    """``list_landmarks_celeba.txt``: count line, header line, then ``file x1 y1 ... x5 y5``."""
    out: dict[str, tuple[float, ...]] = {}
    with open(path) as f:
        lines = iter(f)
        next(lines, None)
        next(lines, None)
        for line in lines:
            parts = line.split()
            if len(parts) == 11:
                out[parts[0]] = tuple(float(v) for v in parts[1:])
    return out


@register_dataset
def celeba(root: Path, aligned: bool | None = None) -> Dataset:
    """CelebA: ``img_celeba/`` (in the wild) or ``img_align_celeba/`` + ``identity_CelebA.txt``.

    ``aligned=None`` picks ``img_celeba`` when present, else ``img_align_celeba``. Annotated
    5-point landmarks are attached when the matching ``list_landmarks*`` file is present.
    """
    _require(root, "CelebA folder")
    wild, align = root / "img_celeba", root / "img_align_celeba"
    use_aligned = aligned if aligned is not None else not wild.is_dir()
    img_dir = align if use_aligned else wild
    _require(img_dir, f"CelebA image folder ({img_dir.name}/)")
    id_file = root / "identity_CelebA.txt"
    _require(id_file, "CelebA identity_CelebA.txt")
    lmk_file = root / ("list_landmarks_align_celeba.txt" if use_aligned else "list_landmarks_celeba.txt")

    def gen() -> Iterator[FaceRecord]:
        ids: dict[str, str] = {}
        with open(id_file) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():  # tolerate an "image identity" header
                    ids[parts[0]] = parts[1]
        lmks = _read_celeba_table(lmk_file) if lmk_file.is_file() else {}
        for p in walk_images(img_dir, recursive=False):
            yield input_record(p, ids.get(p.name), False, "celeba", _rel(p, root), lmk5=lmks.get(p.name))

    return Dataset("celeba", root, gen, info={"images": img_dir.name, "landmarks": lmk_file.is_file()})


@register_dataset
def ffhq(root: Path) -> Dataset:
    """FFHQ: flat or thousand-bucketed folders of PNGs; no identities."""
    _require(root, "FFHQ folder")
    return Dataset("ffhq", root, lambda: (input_record(p, None, False, "ffhq", _rel(p, root))
                                          for p in walk_images(root)))


@register_dataset
def folder(root: Path, masked: bool = False) -> Dataset:
    """Any ``<identity>/<image>`` tree; ``masked`` says whether its faces wear masks."""
    _require(root, "folder")
    _require_identity_folders(root, "folder")
    return Dataset("folder", root, lambda: _identity_folders(root, "folder", is_masked=masked))


@register_dataset
def rmfrd(root: Path) -> Dataset:
    """RMFRD: ``AFDB_face_dataset/<person>/`` + ``AFDB_masked_face_dataset/<person>/``."""
    _require(root, "RMFRD folder")
    wrapped = root / "self-built-masked-face-recognition-dataset"
    base = wrapped if wrapped.is_dir() else root
    faces, masked = base / "AFDB_face_dataset", base / "AFDB_masked_face_dataset"
    if not faces.is_dir() and not masked.is_dir():
        raise DataNotFoundError(f"{root} has neither AFDB_face_dataset/ nor AFDB_masked_face_dataset/; "
                                "point --root at the RMFRD folder")

    def gen() -> Iterator[FaceRecord]:
        if faces.is_dir():
            yield from _identity_folders(faces, "rmfrd", is_masked=False, key_root=root)
        if masked.is_dir():
            yield from _identity_folders(masked, "rmfrd", is_masked=True, key_root=root)

    return Dataset("rmfrd", root, gen)


def read_mfr2_labels(path: Path) -> dict[tuple[str, int], str]:
    """``mfr2_labels.txt`` lines ``Name, n, mask_type`` -> {(name, n): mask_type}."""
    out = {}
    with open(path) as f:
        for line in f:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3 and parts[1].isdigit():
                out[(parts[0], int(parts[1]))] = parts[2]
    return out


@register_dataset
def mfr2(root: Path) -> Dataset:
    """MFR2: ``<Name>/<Name>_NNNN.png`` + ``pairs.txt``; masks from ``mfr2_labels.txt``.

    Without the labels file, ``is_masked`` is unknown and recorded as False.
    """
    _require(root, "MFR2 folder")
    labels_file = root / "mfr2_labels.txt"

    def gen() -> Iterator[FaceRecord]:
        labels = read_mfr2_labels(labels_file) if labels_file.is_file() else {}
        for rec in _identity_folders(root, "mfr2", is_masked=False):
            stem = Path(rec.path).stem
            n = stem.rsplit("_", 1)[-1]
            mask_type = labels.get((rec.identity, int(n))) if n.isdigit() else None
            yield replace(rec, is_masked=bool(mask_type and mask_type != "no-mask"), source="mfr2")

    pf = root / "pairs.txt"
    return Dataset("mfr2", root, gen, pairs_file=pf if pf.exists() else None)


@register_dataset(name="masked-photos")
def masked_photos(root: Path) -> Dataset:
    """Real masked photos without identity labels (e.g. RMFD's ``RWMFD_part_1/``)."""
    _require(root, "masked photos folder")
    return Dataset("masked-photos", root, lambda: (
        input_record(p, None, True, "masked-photos", _rel(p, root)) for p in walk_images(root)))


@register_dataset
def synthetic(root: Path | None = None, identities: int = 20, per_identity: int = 5, size: int = 160,
              seed: int = 0) -> Dataset:
    """Procedurally drawn faces with known landmarks (no data needed); always labelled synthetic.

    ``root`` holding a set written by ``mfrbench synth`` is read as it is; otherwise the set is
    drawn (once, cached) from the parameters.
    """
    from mfrbench.synthetic import load_table, materialize

    table = load_table(root) if root is not None else None
    if table is not None:
        folder_ = Path(root)
    else:
        folder_, table = materialize(root, identities=identities, per_identity=per_identity, size=size, seed=seed)

    def gen() -> Iterator[FaceRecord]:
        for row in table.itertuples(index=False):
            yield FaceRecord(str((folder_ / row.key).resolve()), row.identity, False, "synthetic", row.key,
                             lmk5=tuple(row.lmk5), lmk68=tuple(row.lmk68))

    return Dataset("synthetic", folder_, gen, info={"synthetic": True})


# --------------------------------------------------------------------------- pair lists
def _lfw_name(root: Path, name: str, n: str, ext: str) -> Path:
    return root / name / f"{name}_{int(n):04d}{ext}"


def read_pairs(path: str | os.PathLike, *, root: str | os.PathLike | None = None, ext: str = ".jpg",
               fmt: str = "auto") -> pd.DataFrame:
    """Parse an LFW View 2 or MFR2 ``pairs.txt``.

    LFW: first line ``folds\\tpairs_per_class``; then per fold ``n`` matched lines
    ``name i j`` and ``n`` mismatched lines ``name1 i name2 j``. MFR2: no header, space
    separated, interleaved; folds are then 10 contiguous blocks of the file order.

    Returns:
        DataFrame with ``path_a``, ``path_b``, ``is_same`` (bool), ``fold`` (int) and
        ``missing`` (True when either image is absent under ``root``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"pairs file {path} not found")
    root = Path(root) if root is not None else path.parent
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    header = lines[0] if lines and len(lines[0]) == 2 and all(t.isdigit() for t in lines[0]) else None
    body = lines[1:] if header else lines
    rows = []
    for i, t in enumerate(body):
        if len(t) == 3:
            a, b, same = _lfw_name(root, t[0], t[1], ext), _lfw_name(root, t[0], t[2], ext), True
        elif len(t) == 4:
            a, b, same = _lfw_name(root, t[0], t[1], ext), _lfw_name(root, t[2], t[3], ext), False
        else:
            raise MfrbenchError(f"{path}:{i + 1 + bool(header)}: expected 3 or 4 fields, got {len(t)}")
        rows.append((str(a), str(b), same))
    df = pd.DataFrame(rows, columns=["path_a", "path_b", "is_same"])
    if header:
        n_folds, per = int(header[0]), int(header[1])
        if n_folds * 2 * per != len(df):
            raise MfrbenchError(f"{path}: header says {n_folds} folds x {2 * per} pairs but the file has {len(df)}")
        df["fold"] = df.index // (2 * per)
    else:
        df["fold"] = (df.index * 10) // max(len(df), 1)
    df["missing"] = [not (os.path.exists(a) and os.path.exists(b)) for a, b in zip(df.path_a, df.path_b)]
    return df
