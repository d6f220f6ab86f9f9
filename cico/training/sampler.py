"""A resumable, distributed data order that is a pure function of ``(seed, epoch)``.

Epoch ``e`` visits ``randperm(len, seed=(seed, e))``; iteration ``i`` of the epoch takes the global
batch ``perm[i·B·W : (i+1)·B·W]`` (``B`` clips per process, ``W`` processes) and process ``r`` its slice
``[r·B : (r+1)·B]``. So the global batches do not depend on how they are split over processes, an epoch
has ``⌊len / (B·W)⌋`` iterations (the reference drops the incomplete last batch), and a run resumed at
iteration ``i`` sees exactly the items an uninterrupted run would.

Items are ``(epoch, index)`` pairs and :class:`EpochItems` hands the epoch to the dataset with each item,
so the clip's random draws depend on ``(seed, epoch, index)`` only (:class:`~cico.data.clips.ClipDataset`)
and one ``DataLoader`` with persistent workers serves the whole run.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["RunOrder", "EpochItems", "epoch_permutation", "iterations_per_epoch"]

T_co = TypeVar("T_co", covariant=True)


class EpochDataset(Protocol[T_co]):
    """A map-style dataset whose random draws depend on the epoch it was last told."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> T_co: ...

    def set_epoch(self, epoch: int) -> None: ...


def epoch_permutation(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The item order of an epoch: ``[size]`` int64, identical on every process and every run."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2 ** 63))
    return torch.randperm(size, generator=generator)


def iterations_per_epoch(size: int, batch_size: int, world_size: int = 1) -> int:
    """``⌊size / (B·W)⌋``: full global batches per epoch."""
    return size // (batch_size * world_size)


class RunOrder(Sampler[tuple[int, int]]):
    """This process's ``(epoch, index)`` items for the iterations ``start .. stop - 1`` of a run.

    Args:
        size: number of dataset items.
        batch_size: clips per process per iteration ``B``.
        seed: the run's seed.
        start, stop: the run's iterations to cover (``start`` > 0 when resuming).
        rank, world_size: this process and the number of processes ``W``.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0,
                 world_size: int = 1) -> None:
        self.per_epoch = iterations_per_epoch(size, batch_size, world_size)
        if self.per_epoch < 1:
            raise ValueError(f"{size} training clips cannot fill one batch of {batch_size} clips x "
                             f"{world_size} processes")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        global_batch = self.batch_size * self.world_size
        epoch, perm = -1, torch.empty(0, dtype=torch.long)
        for iteration in range(self.start, self.stop):
            e, step = divmod(iteration, self.per_epoch)
            if e != epoch:
                epoch, perm = e, epoch_permutation(self.size, self.seed, e)
            first = step * global_batch + self.rank * self.batch_size
            for index in perm[first:first + self.batch_size].tolist():
                yield epoch, index


class EpochItems(Dataset[T_co], Generic[T_co]):
    """Wraps an epoch-aware dataset so that it can be indexed by ``(epoch, index)``."""

    def __init__(self, dataset: EpochDataset[T_co]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> T_co:
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]
