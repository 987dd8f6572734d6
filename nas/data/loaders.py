"""Batches for training and evaluation: ``torch.utils.data.DataLoader`` over a split, with
``workers`` worker processes decoding and cropping in parallel.

Training order is a per-epoch shuffle of the whole split drawn from the run's seed; with several
data-parallel ranks, ``torch.utils.data.DistributedSampler`` deals each rank every
``world_size``-th example of that shuffle, so that batch ``i`` of all ranks together holds exactly
the examples a single process's batch ``i`` would. Each example also carries its epoch's seed,
from which its random crop is drawn: neither the crop nor the order depends on the number of
ranks or loader workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .dataset import Dataset
from .images import collate_batch


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's crops: a function of ``(seed, epoch)`` only."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class EpochSampler(Sampler):
    """This rank's share of a per-epoch shuffle of ``n`` examples (``set_epoch`` before each epoch),
    as training keys ``(index, epoch_seed)``, or plain indices when ``augment`` is off."""

    def __init__(self, n: int, seed: int, *, rank: int = 0, world_size: int = 1, augment: bool = True) -> None:
        shuffle_seed = (
            int(np.random.SeedSequence([seed]).generate_state(1)[0]) >> 1
        )  # DistributedSampler adds the epoch
        self._ranks = DistributedSampler(
            range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=shuffle_seed, drop_last=True
        )
        self.seed = seed
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._ranks.set_epoch(epoch)

    def __iter__(self) -> Iterator:
        if not self.augment:
            yield from self._ranks
            return
        seed = epoch_seed(self.seed, self.epoch)
        for index in self._ranks:
            yield (index, seed)

    def __len__(self) -> int:
        return len(self._ranks)


def _loader(dataset, sampler: Iterable, batch_size: int, drop_last: bool, workers: int, pin_memory: bool) -> DataLoader:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"--data-workers must be an integer >= 0, but got {workers!r}")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        collate_fn=collate_batch,
        num_workers=workers,
        # Workers end with each pass: kept alive, the training loader's would sit idle holding
        # their memory (~30 MB each, private pages of a fork of the trainer) while the end-of-epoch
        # evaluation starts its own; forking anew costs far less than an epoch.
        persistent_workers=False,
        pin_memory=pin_memory,
    )


def train_loader(
    data: Dataset,
    batch_size: int,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
    pin_memory: bool = False,
    augment: bool = True,
    split: str = "train",
) -> DataLoader:
    """Shuffled, augmented ``batch_size`` batches of this rank's share of ``split`` (incomplete
    batches dropped). Call ``loader.sampler.set_epoch(epoch)`` before iterating each epoch."""
    sampler = EpochSampler(data.size(split), seed, rank=rank, world_size=world_size, augment=augment)
    return _loader(data.splits[split], sampler, batch_size, True, workers, pin_memory)


def eval_loader(
    data: Dataset,
    split: str,
    batch_size: int,
    *,
    indices: Sequence[int] | None = None,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """The evaluation crops of ``split`` (or of its ``indices``), in order."""
    order = list(range(data.size(split))) if indices is None else [int(i) for i in indices]
    return _loader(data.splits[split], order, batch_size, False, workers, pin_memory)


def model_input(batches: Iterable[tuple[Tensor, Tensor]], data: Dataset, runtime) -> Iterator[tuple[Tensor, Tensor]]:
    """uint8 batches -> (normalised float images, labels) on ``runtime``'s device and memory format."""
    for x, y in batches:
        yield data.normalise(runtime.to(x), runtime.memory_format), runtime.to(y)
