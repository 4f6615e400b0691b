"""Dataset-level reports: which datasets are where, and what a manifest holds."""

from __future__ import annotations

import os
from pathlib import Path

from mfrbench.datasets import create_dataset, list_datasets
from mfrbench.errors import MfrbenchError
from mfrbench.paths import ENV_DATA, data_root

#: folder name under the data root for each adapter (when it differs from the name)
DEFAULT_FOLDERS = {"masked-photos": "masked-faces"}


def find_datasets(explicit_root: str | os.PathLike | None = None) -> list[str]:
    """One line per adapter: found where, with image and identity counts, or a fix hint."""
    root = data_root(explicit_root)
    lines = [f"data root: {root if root else f'NOT FOUND (set {ENV_DATA} or pass --root)'}"]
    for name in list_datasets():
        if name == "synthetic":
            lines.append("  synthetic      built in (procedurally drawn faces; no data needed)")
            continue
        folder = (root / DEFAULT_FOLDERS.get(name, name)) if root else None
        if folder is None or not folder.exists():
            lines.append(f"  {name:<14} not found (pass --root PATH to its folder)")
            continue
        try:
            ds = create_dataset(name, folder)
            n, ids, masked = 0, set(), 0
            for rec in ds.records():
                n += 1
                masked += rec.is_masked
                if rec.identity:
                    ids.add(rec.identity)
            extra = f", pairs: {ds.pairs_file.name}" if ds.pairs_file else ""
            lines.append(f"  {name:<14} {folder}: {n} images, {len(ids)} identities, {masked} masked{extra}")
        except MfrbenchError as err:
            lines.append(f"  {name:<14} {folder}: unusable ({err})")
    return lines


def manifest_report(path: str | os.PathLike) -> str:
    """Markdown summary of a manifest: counts, skip reasons, identity statistics."""
    from mfrbench.manifest import read_manifest, read_manifest_meta

    df = read_manifest(path)
    meta = read_manifest_meta(path)
    ok = df[df.status == "ok"]
    lines = [f"# Manifest report: {Path(path)}", ""]
    if meta.get("synthetic"):
        lines += ["**SYNTHETIC DATA** (procedurally drawn faces, not real people)", ""]
    lines += [f"- kind: {meta.get('kind')}, dataset: {meta.get('dataset', meta.get('config', {}).get('dataset'))}, "
              f"mfrbench {meta.get('tool_version')}, schema v{meta.get('schema_version')}",
              f"- inputs: {len(df)}, ok: {len(ok)}, skipped: {len(df) - len(ok)}"]
    if len(df) - len(ok):
        lines.append("- skip reasons: " + ", ".join(f"{k}={v}" for k, v in meta.get("skip_reasons", {}).items()))
    with_id = ok[ok.identity != ""]
    if len(with_id):
        per = with_id.groupby("identity").size()
        lines.append(f"- identities: {per.size}; images per identity: min {per.min()}, median {per.median():g}, "
                     f"max {per.max()}; identities with >= 2 images: {(per >= 2).sum()}")
    else:
        lines.append("- identities: none (unlabelled dataset)")
    if "is_masked" in ok.columns:
        lines.append(f"- masked inputs: {int(ok.is_masked.sum())}")
    if "score" in ok.columns:
        sc = ok.score.replace("", float("nan")).astype(float)
        if sc.notna().any():
            lines.append(f"- detector score: median {sc.median():.3f}, min {sc.min():.3f}")
    if "n_faces" in df.columns:
        nf = df.n_faces.replace("", float("nan")).astype(float)
        lines.append(f"- images with more than one face (largest central one kept): {int((nf > 1).sum())}")
    return "\n".join(lines)
