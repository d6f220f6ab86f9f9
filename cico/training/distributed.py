"""This process's place in a ``torchrun`` run, and the process group's set-up.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; one plain process is rank 0 of 1. The
process group uses nccl between GPUs and gloo on CPU.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Distributed", "process_group"]


@dataclass(frozen=True)
class Distributed:
    """This process's rank, the number of processes, and its GPU index on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


@contextlib.contextmanager
def process_group(env: Distributed, device: torch.device) -> Iterator[None]:
    """Join the run's process group for the block (nothing to do for one process).

    A group that is already initialised (a caller's) is used and left open.
    """
    created = env.world_size > 1 and not dist.is_initialized()
    if created:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()
