"""Options shared by several commands (one definition each)."""

from __future__ import annotations

import click

from mfrbench.datasets import list_datasets

dataset_opt = click.option("--dataset", "dataset", required=True, metavar="NAME",
                           help=f"Dataset adapter: {', '.join(list_datasets())}.")
root_opt = click.option("--root", type=click.Path(file_okay=False), default=None,
                        help="Dataset folder (default: <data root>/<dataset>; data root from $MFRBENCH_DATA "
                             "or ../shared/data).")
limit_opt = click.option("--limit", type=click.IntRange(min=1), default=None, help="Process only the first N images.")
workers_opt = click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                           help="Parallel worker processes.")
seed_opt = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
shard_opt = click.option("--shard", default=None, metavar="I/N",
                         help="Process only shard I of N (0 <= I < N, by the key's digest) into --out, a shard "
                              "folder; join the N folders with `mfrbench merge` (Slurm: `mfrbench slurm-script`).")
engine_opt = click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                          help="local: a pool of --workers processes; ray: --workers Ray actors on the cluster "
                               "ray.init() finds (pip install 'mfrbench[ray]'). Same output either way.")
