"""torchrun / DistributedDataParallel plumbing: one process per device, rank 0 logs and saves.

``torchrun --nproc_per_node N -m mfrbench.cli train-fr ...`` (or the ``mfrbench`` script)
sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``; without them the trainer runs as a
single process. The backend is NCCL when CUDA is used and gloo otherwise (CPU test runs). The
device follows :func:`mfrbench.runs.choose_device`, with ``cuda`` meaning this process's ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mfrbench.runs import choose_device


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the torchrun process group when launched by torchrun; else a single-process env."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = choose_device(device, local_rank=local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistEnv(rank, world, local_rank, dev)


def all_reduce_mean(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Mean of ``t`` over processes (a copy; ``t`` itself is left alone)."""
    t = t.detach().clone()
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= env.world
    return t


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def cleanup(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()
