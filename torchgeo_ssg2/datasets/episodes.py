"""Episode datasets: a target sample plus its T support samples.

An *episode* is what SSG2 trains on: one target ``image``/``mask`` and a sequence
of T support images/masks drawn by a support sampler.

How the epoch reaches the DataLoader workers (training draws change every epoch):

1. Preferred: iterate the dataset with
   :class:`~torchgeo_ssg2.samplers.EpisodeSampler`. It yields
   ``(target, epoch)`` indices in the main process, so the epoch travels with the
   index to every worker, persistent or not, on every DDP rank. Lightning calls
   its ``set_epoch`` automatically at the start of every training epoch.
2. Also supported: plain integer indices with :meth:`EpisodeDataset.set_epoch`.
   The epoch is held in a shared-memory tensor, so a call in the main process is
   seen by workers that are already running (``persistent_workers=True``),
   provided it happens before the epoch's iterator is created.
   :class:`EpisodeEpochCallback` makes that call in ``on_train_epoch_start``,
   which Lightning runs before it creates the iterator of every epoch after the
   first.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..samplers.episode import EpisodeIndex
from ..samplers.support import SupportIndexSampler

__all__ = ('EpisodeDataset', 'EpisodeEpochCallback', 'set_episode_epoch')


def _stack(samples: Sequence[Mapping[str, Any]], key: str) -> Tensor:
    """Stack one key of several samples along a new leading dimension.

    Args:
        samples: The samples.
        key: The key to stack.

    Returns:
        Tensor of shape (len(samples), ...).
    """
    return torch.stack([s[key] for s in samples])


class _SharedEpoch:
    """An epoch counter in shared memory, visible to DataLoader workers."""

    def __init__(self) -> None:
        self._value = torch.zeros((), dtype=torch.int64).share_memory_()

    def get(self) -> int:
        return int(self._value.item())

    def set(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f'epoch must be >= 0, got {epoch}')
        self._value.fill_(int(epoch))


class EpisodeDataset(Dataset[dict[str, Any]]):
    """Wraps a map-style dataset into SSG2 episodes.

    Item ``i`` is the sample ``dataset[i]`` with its supports added:

    * ``image``: CxHxW, ``mask``: HxW (from the target sample)
    * ``support_image``: TxCxHxW, ``support_mask``: TxHxW (the latter only when
      every support sample has a ``mask``)
    * every other key of the target sample (e.g. ``bounds``, ``transform``) is
      passed through unchanged.

    Args:
        dataset: Map-style dataset whose samples are dicts with ``image`` (and
            usually ``mask``).
        sampler: Support sampler over the same items
            (``sampler.num_items == len(dataset)``).

    Raises:
        ValueError: If the sampler does not cover the dataset.
    """

    def __init__(self, dataset: Dataset[dict[str, Any]], sampler: SupportIndexSampler):
        n = len(dataset)  # type: ignore[arg-type]
        if sampler.num_items != n:
            raise ValueError(
                f'support sampler covers {sampler.num_items} items but the dataset '
                f'{type(dataset).__name__} has {n}'
            )
        self.dataset = dataset
        self.sampler = sampler
        self._epoch = _SharedEpoch()

    @property
    def epoch(self) -> int:
        """Epoch used for integer indices."""
        return self._epoch.get()

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the support draws for integer indices.

        Args:
            epoch: The training epoch (>= 0).
        """
        self._epoch.set(epoch)

    def __len__(self) -> int:
        """Number of episodes (= number of target items)."""
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(
        self, index: int | EpisodeIndex | tuple[int, int]
    ) -> dict[str, Any]:
        """One episode.

        Args:
            index: Target index, or a ``(target, epoch)`` pair from
                :class:`~torchgeo_ssg2.samplers.EpisodeSampler`.

        Returns:
            The episode dict (see the class docstring).
        """
        if isinstance(index, tuple):
            target, epoch = int(index[0]), int(index[1])
        else:
            target, epoch = int(index), self.epoch
        sample = dict(self.dataset[target])
        supports = [self.dataset[j] for j in self.sampler.supports(target, epoch)]
        sample['support_image'] = _stack(supports, 'image')
        if all('mask' in s for s in supports):
            sample['support_mask'] = _stack(supports, 'mask')
        return sample


def _datasets_of(loaders: Any) -> Iterable[Any]:
    """Datasets of a dataloader or a (nested) collection of dataloaders.

    Args:
        loaders: A DataLoader, or a mapping / sequence of them.

    Yields:
        The datasets.
    """
    if isinstance(loaders, DataLoader):
        yield loaders.dataset
    elif isinstance(loaders, Mapping):
        for value in loaders.values():
            yield from _datasets_of(value)
    elif isinstance(loaders, Sequence) and not isinstance(loaders, str):
        for value in loaders:
            yield from _datasets_of(value)


def set_episode_epoch(loaders: Any, epoch: int) -> int:
    """Call ``set_epoch`` on every episode dataset behind *loaders*.

    Args:
        loaders: A DataLoader, or a mapping / sequence of them.
        epoch: The epoch.

    Returns:
        The number of datasets updated.
    """
    count = 0
    for dataset in _datasets_of(loaders):
        if callable(getattr(dataset, 'set_epoch', None)):
            dataset.set_epoch(epoch)
            count += 1
    return count


class EpisodeEpochCallback(Callback):
    """Sets the epoch of the training episode datasets at every epoch start.

    Needed only when the training dataloader does not use
    :class:`~torchgeo_ssg2.samplers.EpisodeSampler` (which already carries the
    epoch). A datamodule may equally call :func:`set_episode_epoch` from its own
    ``on_train_epoch_start``-time hook.
    """

    def on_train_epoch_start(
        self, trainer: Trainer, pl_module: LightningModule
    ) -> None:
        """Set the epoch on the train datasets.

        Args:
            trainer: The trainer.
            pl_module: The module being trained.
        """
        set_episode_epoch(trainer.train_dataloader, trainer.current_epoch)
