"""Torch sampler of the target indices of a map-style episode dataset.

An attribute set on a dataset in the main process does not reach DataLoader
workers that were started earlier (``persistent_workers=True``): each worker holds
its own copy of the dataset. :class:`EpisodeSampler` solves this without shared
state: the sampler runs in the main process and yields
:class:`~torchgeo_ssg2.episodes.EpisodeIndex` ``(target, epoch)`` pairs, so the
epoch travels to the worker together with the index, which
:class:`~torchgeo_ssg2.episodes.EpisodeDataset` reads.

Lightning calls ``set_epoch`` on the train dataloader's sampler at the start of
every epoch (before the epoch's iterator is created), and because
:class:`EpisodeSampler` is a :class:`~torch.utils.data.DistributedSampler`,
Lightning does not replace it under DDP.
"""

from collections.abc import Iterator, Sized

import torch.distributed as dist
from torch.utils.data import DistributedSampler

from .protocol import EpisodeIndex

__all__ = ('EpisodeSampler',)


class EpisodeSampler(DistributedSampler[EpisodeIndex]):
    """Splits the targets over DDP ranks and tags every index with the epoch.

    It has :class:`~torch.utils.data.DistributedSampler` semantics: with
    ``shuffle=True`` the order is a permutation seeded by ``seed + epoch``, shared
    by all ranks, and rank ``r`` takes every ``num_replicas``-th target starting at
    ``r``. The shares of the ranks are disjoint, except that with
    ``drop_last=False`` and a dataset size that is not a multiple of
    ``num_replicas`` the first few targets are repeated to even out the shares
    (as in PyTorch).

    Outside DDP (no initialised process group) it defaults to one replica, so the
    same sampler serves single-process training.

    Args:
        dataset: The dataset of targets (only its length is used).
        num_replicas: Number of DDP ranks (defaults to the world size, or 1).
        rank: Rank of this process (defaults to the current rank, or 0).
        shuffle: Whether to shuffle the targets every epoch.
        seed: Seed of the shuffle (not of the supports; those are seeded by the
            support policy).
        drop_last: Drop the tail so that all ranks get equal shares without
            repeats.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )

    def __iter__(self) -> Iterator[EpisodeIndex]:
        """Iterate over this rank's share of the targets for the current epoch.

        Yields:
            ``(target, epoch)`` pairs.
        """
        epoch = int(self.epoch)
        for target in super().__iter__():
            yield EpisodeIndex(int(target), epoch)
