"""--engine ray on a local 2-worker Ray cluster gives the bytes of --engine local (skipped without Ray Data)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mfrbench[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'mfrbench[ray]')")


def tree(out: Path) -> dict[str, str]:
    """Output files by path -> sha1 (images, maps, manifest.csv) and manifest.json without its times."""
    files = {p.relative_to(out).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
             for sub in ("images", "maps") for p in sorted((out / sub).rglob("*")) if p.is_file()}
    files["manifest.csv"] = hashlib.sha1((out / "manifest.csv").read_bytes()).hexdigest()
    meta = json.loads((out / "manifest.json").read_text())
    files["manifest.json"] = json.dumps({k: v for k, v in meta.items() if k not in ("created", "finished")})
    return files


@pytest.fixture(scope="module")
def cluster():
    """A head node with no CPUs and two 1-CPU worker nodes: every task runs on a worker node."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        c.add_node(num_cpus=1)
    ray.init(address=c.address, logging_level="ERROR")
    yield c
    ray.shutdown()
    c.shutdown()


def test_ray_engine_matches_local_engine(cluster, tmp_path):
    from mfrbench.align import AlignConfig, align_dataset
    from mfrbench.datasets import create_dataset
    from mfrbench.generate import GenerateConfig
    from mfrbench.generators.base import generate_dataset
    from mfrbench.merge import merge_shards
    from mfrbench.synthetic import materialize

    assert len([n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")]) == 2
    root, _ = materialize(tmp_path / "s", identities=3, per_identity=4)
    ds = create_dataset("synthetic", root)
    kw = dict(dataset=ds, seed=2, generator_kwargs={"mask_type": "plain", "wearing": "random"}, progress=False,
              cfg=GenerateConfig(ext=".png"), batch_size=3)
    generate_dataset("mtf", tmp_path / "local", **kw)
    generate_dataset("mtf", tmp_path / "ray", engine="ray", workers=2, **kw)
    assert tree(tmp_path / "ray") == tree(tmp_path / "local")
    # Shards on Ray merge to the same bytes too.
    for i in range(2):
        generate_dataset("mtf", tmp_path / f"ray{i}", engine="ray", workers=2, shard=f"{i}/2", **kw)
    merge_shards(tmp_path / "merged", [tmp_path / "ray0", tmp_path / "ray1"])
    assert tree(tmp_path / "merged") == tree(tmp_path / "local")
    cfg = AlignConfig(landmarker="none", ext=".png")
    align_dataset(ds, tmp_path / "al", cfg=cfg, progress=False)
    align_dataset(ds, tmp_path / "ar", cfg=cfg, progress=False, engine="ray", workers=2)
    assert tree(tmp_path / "ar") == tree(tmp_path / "al")
