"""A resumable, distributed data order that is a pure function of ``(seed, epoch)``.

Epoch ``e`` visits ``randperm(len, seed=(seed, e))``; iteration ``i`` of the epoch takes the global
batch ``perm[i·B·W : (i+1)·B·W]`` (``B`` clips per process, ``W`` processes) and process ``r`` its slice
``[r·B : (r+1)·B]``. So the global batches do not depend on how they are split over processes, an epoch
has ``⌊len / (B·W)⌋`` iterations (the reference drops the incomplete last batch), and a run resumed at
iteration ``i`` sees exactly the items an uninterrupted run would. With gradient accumulation over ``N``
micro-batches, process ``r`` plays the processes ``r·N .. r·N + N - 1`` of a run with ``W·N`` processes:
its micro-batch ``k`` of an iteration is the slice of process ``r·N + k``.

Items are ``(epoch, index)`` pairs and :class:`EpochItems` hands the epoch to the dataset with each item,
so the clip's random draws depend on ``(seed, epoch, index)`` only (:class:`~cico.data.clips.ClipDataset`)
and one ``DataLoader`` serves the whole run. A clip whose frame fails to load is replaced by another
item of the same epoch (a fixed stride away, so the replacement is reproducible) and the failure travels
with the batch (:func:`collate_loads`), for the loop to report and count.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar

import torch
from torch.utils.data import Dataset, Sampler

from ..errors import CicoError

__all__ = ["RunOrder", "EpochItems", "collate_loads", "epoch_permutation", "iterations_per_epoch"]

T = TypeVar("T")
B = TypeVar("B")
MAX_REPLACEMENTS = 10

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


def iterations_per_epoch(size: int, batch_size: int, world_size: int = 1, accumulate: int = 1) -> int:
    """``⌊size / (B·W·N)⌋``: full global batches per epoch."""
    return size // (batch_size * world_size * accumulate)


class RunOrder(Sampler[tuple[int, int]]):
    """This process's ``(epoch, index)`` items for the iterations ``start .. stop - 1`` of a run.

    Per iteration it yields ``accumulate`` micro-batches of ``batch_size`` items, one after another.

    Args:
        size: number of dataset items.
        batch_size: clips per process per micro-batch ``B``.
        seed: the run's seed.
        start, stop: the run's iterations to cover (``start`` > 0 when resuming).
        rank, world_size: this process and the number of processes ``W``.
        accumulate: micro-batches per iteration ``N``.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0,
                 world_size: int = 1, accumulate: int = 1) -> None:
        self.per_epoch = iterations_per_epoch(size, batch_size, world_size, accumulate)
        if self.per_epoch < 1:
            raise ValueError(f"{size} training clips cannot fill one batch of {batch_size} clips x "
                             f"{world_size} processes x {accumulate} micro-batches")
        self.size, self.batch_size, self.seed, self.accumulate = size, batch_size, seed, accumulate
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.batch_size * self.accumulate

    def __iter__(self) -> Iterator[tuple[int, int]]:
        global_batch = self.batch_size * self.world_size * self.accumulate
        epoch, perm = -1, torch.empty(0, dtype=torch.long)
        for iteration in range(self.start, self.stop):
            e, step = divmod(iteration, self.per_epoch)
            if e != epoch:
                epoch, perm = e, epoch_permutation(self.size, self.seed, e)
            for k in range(self.accumulate):
                first = step * global_batch + (self.rank * self.accumulate + k) * self.batch_size
                for index in perm[first:first + self.batch_size].tolist():
                    yield epoch, index


class EpochItems(Dataset[tuple[T, list[str]]], Generic[T]):
    """Wraps an epoch-aware dataset so that it can be indexed by ``(epoch, index)``.

    An item is ``(sample, failures)``: a sample that raises :class:`~cico.errors.CicoError` (a frame
    that does not decode) is replaced by the item a fixed stride further on, and ``failures`` holds one
    line per failed load.
    """

    def __init__(self, dataset: EpochDataset[T]) -> None:
        self.dataset = dataset
        self.stride = max(1, round(len(dataset) * 0.618))  # far from the item: probably another video

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[T, list[str]]:
        epoch, index = key
        self.dataset.set_epoch(epoch)
        failures: list[str] = []
        for attempt in range(MAX_REPLACEMENTS):
            try:
                return self.dataset[(index + attempt * self.stride) % len(self.dataset)], failures
            except CicoError as err:
                failures.append(str(err))
        raise CicoError(f"{MAX_REPLACEMENTS} clips in a row failed to load; the last: {failures[-1]}")


def collate_loads(items: Sequence[tuple[T, list[str]]], collate: Callable[[Sequence[T]], B]) -> tuple[B, list[str]]:
    """Collate :class:`EpochItems` items: the batch and every failed load of its clips."""
    return collate([sample for sample, _ in items]), [line for _, failures in items for line in failures]
