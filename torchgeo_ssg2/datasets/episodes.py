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

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import rasterio
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchgeo.datasets import (
    GeoDataset,
    IntersectionDataset,
    RasterDataset,
    UnionDataset,
)

from ..samplers.episode import EpisodeIndex
from ..samplers.geo import GeoEpisodeIndex, SupportGeoSampler
from ..samplers.support import SupportIndexSampler

__all__ = (
    'EpisodeDataset',
    'EpisodeEpochCallback',
    'GeoEpisodeDataset',
    'set_episode_epoch',
)


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


def infer_nodata(dataset: GeoDataset) -> float | None:
    """The nodata value of the image rasters of a GeoDataset, if any.

    Looks through Intersection/Union datasets for the first image
    :class:`~torchgeo.datasets.RasterDataset`; takes its ``nodata`` attribute, or
    else the nodata value of its first file.

    Args:
        dataset: The dataset.

    Returns:
        The nodata value, or None.
    """
    if isinstance(dataset, IntersectionDataset | UnionDataset):
        for ds in dataset.datasets:
            value = infer_nodata(ds)
            if value is not None:
                return value
        return None
    if isinstance(dataset, RasterDataset) and dataset.is_image:
        if dataset.nodata is not None:
            return float(dataset.nodata)
        if 'filepath' in dataset.index and len(dataset.index):
            with rasterio.open(dataset.index.filepath.iloc[0]) as src:
                return None if src.nodata is None else float(src.nodata)
    return None


class GeoEpisodeDataset(Dataset[dict[str, Any]]):
    """Reads one :class:`~torchgeo_ssg2.samplers.GeoEpisodeIndex` into one episode.

    Output: ``image`` C x H x W, ``mask`` H x W (if the dataset has masks),
    ``support_image`` T x C x H x W, ``support_mask`` T x H x W, ``bounds`` (9) and
    ``transform`` (9) of the target window (torchgeo 0.10 layout; the first 9
    values when an IntersectionDataset concatenates them).

    Nodata: a pixel is nodata when all its image bands equal *nodata* (or are NaN
    when *nodata* is NaN), or when its mask equals *mask_nodata*. A support whose
    nodata fraction exceeds *max_nodata_fraction* is replaced by the index's next
    spare window; when the spares run out, the least-nodata windows read are used
    (in draw order among equals). The target window is read as given.

    Indices may also be plain target windows ``(slice, slice)`` (e.g. from a
    :class:`~torchgeo.samplers.GriddedPatchSampler`) when *sampler* is given;
    their supports are then drawn by ``sampler.episode``.

    Args:
        dataset: GeoDataset with ``image`` (and usually ``mask``) samples, e.g.
            ``images & masks``.
        sampler: Support sampler for plain-window indices.
        max_nodata_fraction: Largest acceptable nodata fraction of a support.
        nodata: Image nodata value (default: inferred from the image rasters).
        mask_nodata: Mask value that marks nodata (e.g. an ignore index).
    """

    def __init__(
        self,
        dataset: GeoDataset,
        sampler: SupportGeoSampler | None = None,
        *,
        max_nodata_fraction: float = 0.5,
        nodata: float | None = None,
        mask_nodata: int | None = None,
    ) -> None:
        if not 0 <= max_nodata_fraction <= 1:
            raise ValueError(
                f'max_nodata_fraction must be in [0, 1], got {max_nodata_fraction}'
            )
        self.dataset = dataset
        self.sampler = sampler
        self.max_nodata_fraction = max_nodata_fraction
        self.nodata = infer_nodata(dataset) if nodata is None else nodata
        self.mask_nodata = mask_nodata
        self.reads = 0

    def nodata_fraction(self, sample: Mapping[str, Any]) -> float:
        """Fraction of nodata pixels of one sample.

        Args:
            sample: A sample with ``image`` C x H x W and optionally ``mask``.

        Returns:
            A number in [0, 1].
        """
        image: Tensor = sample['image']
        bad = torch.zeros(image.shape[-2:], dtype=torch.bool, device=image.device)
        if self.nodata is not None:
            if math.isnan(self.nodata):
                bad |= torch.isnan(image).all(dim=0)
            else:
                bad |= (image == self.nodata).all(dim=0)
        if self.mask_nodata is not None and 'mask' in sample:
            bad |= sample['mask'] == self.mask_nodata
        return float(bad.float().mean())

    def _read(self, window: tuple[slice, slice]) -> dict[str, Any]:
        self.reads += 1
        return self.dataset[window]

    def __getitem__(
        self, index: GeoEpisodeIndex | tuple[slice, slice]
    ) -> dict[str, Any]:
        """One episode.

        Args:
            index: A :class:`~torchgeo_ssg2.samplers.GeoEpisodeIndex`, or a target
                window when *sampler* is set.

        Returns:
            The episode dict (see the class docstring).

        Raises:
            TypeError: If *index* is a plain window and no sampler was given.
        """
        if not isinstance(index, GeoEpisodeIndex):
            if self.sampler is None:
                raise TypeError(
                    'GeoEpisodeDataset got a plain window index; pass a '
                    'SupportGeoSampler as sampler= or index with GeoEpisodeIndex'
                )
            index = self.sampler.episode((index[0], index[1]))
        target = self._read(index.target)
        t = len(index.supports)
        chosen: list[tuple[float, int, dict[str, Any]]] = []
        rejected: list[tuple[float, int, dict[str, Any]]] = []
        for k, window in enumerate(index.supports + index.spares):
            if len(chosen) == t:
                break
            sample = self._read(window)
            check = self.nodata is not None or self.mask_nodata is not None
            frac = self.nodata_fraction(sample) if check else 0.0
            good = frac <= self.max_nodata_fraction
            (chosen if good else rejected).append((frac, k, sample))
        if len(chosen) < t:
            rejected.sort(key=lambda item: (item[0], item[1]))
            chosen += rejected[: t - len(chosen)]
        supports = [sample for _, _, sample in chosen]

        out: dict[str, Any] = {'image': target['image']}
        if 'mask' in target:
            out['mask'] = target['mask']
        out['support_image'] = _stack(supports, 'image')
        if all('mask' in s for s in supports):
            out['support_mask'] = _stack(supports, 'mask')
        for key in ('bounds', 'transform'):
            if key in target:
                out[key] = target[key][:9]
        return out
