"""The episode dataset: a target and its T supports, read through any reader."""

import math
from collections.abc import Mapping, Sequence, Sized
from typing import Any, Protocol

import rasterio
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchgeo.datasets import (
    IntersectionDataset,
    RasterDataset,
    UnionDataset,
)

from .protocol import EpisodeIndex, SupportPolicy

__all__ = (
    'EpisodeDataset',
    'EpisodeReader',
    'GeoReader',
    'ItemReader',
    'infer_nodata',
)


class EpisodeReader(Protocol):
    """Turns a key into a sample (``image`` C x H x W, usually ``mask`` H x W)."""

    def read(self, key: Any, epoch: int) -> dict[str, Any]:
        """Read one sample.

        Args:
            key: The key (item index, window, ...).
            epoch: The epoch of the episode (e.g. for random patch positions).

        Returns:
            The sample.
        """
        ...


class ItemReader:
    """Reads ``dataset[key]``: a map-style dataset or a torchgeo GeoDataset.

    Args:
        dataset: The dataset, indexed by the keys (indices or GeoSlice windows).
    """

    def __init__(self, dataset: Dataset[dict[str, Any]]) -> None:
        self.dataset = dataset

    def read(self, key: Any, epoch: int) -> dict[str, Any]:
        """Read one sample (the epoch is not used).

        Args:
            key: Index or window.
            epoch: Ignored.

        Returns:
            ``dataset[key]``.
        """
        return dict(self.dataset[key])

    def __len__(self) -> int:
        """Length of the dataset."""
        return len(self.dataset)  # type: ignore[arg-type]


class GeoReader(ItemReader):
    """Reads GeoDataset windows; nodata pixels get the band fill and the ignore index.

    A pixel is nodata when all its image bands equal *nodata*, or when one of its
    bands is NaN or infinite. Every band of a nodata pixel is set to *fill*
    (the band means, so that the pixel is 0 once normalised, as the large-raster
    predictor feeds it) and its mask to *ignore_index*.

    Args:
        dataset: GeoDataset with ``image`` and ``mask`` samples.
        nodata: Image nodata value (default: inferred from the image rasters).
        ignore_index: Mask value given to nodata pixels.
        fill: Per-band values (or one value for every band) given to the image
            bands of nodata pixels; None leaves the image as read.
    """

    def __init__(
        self,
        dataset: Any,
        nodata: float | None = None,
        ignore_index: int = 255,
        fill: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__(dataset)
        self.nodata = infer_nodata(dataset) if nodata is None else nodata
        self.ignore_index = ignore_index
        self.fill = (
            None
            if fill is None
            else torch.as_tensor(fill, dtype=torch.float32).detach().cpu().flatten()
        )

    def read(self, key: Any, epoch: int) -> dict[str, Any]:
        """Read one window.

        Args:
            key: ``(slice(x0, x1), slice(y0, y1))`` window.
            epoch: Ignored.

        Returns:
            ``image`` C x H x W (nodata pixels set to *fill*), ``mask`` H x W
            (nodata pixels set to the ignore index), ``bounds`` and ``transform``.

        Raises:
            ValueError: If *fill* has neither one value nor one per image band.
        """
        sample = super().read(key, epoch)
        image: Tensor = sample['image']
        if self.fill is not None and len(self.fill) not in (1, image.shape[0]):
            raise ValueError(
                f'fill has {len(self.fill)} values but the image has '
                f'{image.shape[0]} bands'
            )
        bad = _nodata_pixels(image, self.nodata)
        if not bad.any():
            return sample
        if 'mask' in sample:
            sample['mask'] = sample['mask'].masked_fill(bad, self.ignore_index)
        if self.fill is not None:
            if not image.is_floating_point():
                image = image.float()
            fill = self.fill.to(image.device, image.dtype)[:, None, None]
            sample['image'] = torch.where(bad, fill, image)
        return sample


def _nodata_pixels(image: Tensor, nodata: float | None) -> Tensor:
    """Which pixels of an image are nodata.

    Args:
        image: C x H x W image.
        nodata: Nodata value (NaN or None: only non-finite values are nodata).

    Returns:
        H x W bool, True where all bands equal *nodata* or a band is NaN or
        infinite.
    """
    bad = ~torch.isfinite(image).all(dim=0)
    if nodata is not None and not math.isnan(nodata):
        bad |= (image == nodata).all(dim=0)
    return bad


def infer_nodata(dataset: Any) -> float | None:
    """The nodata value of the image rasters of a GeoDataset, if any.

    Looks through Intersection/Union datasets for the first image
    :class:`~torchgeo.datasets.RasterDataset`; takes its ``nodata`` attribute, or
    else the nodata value of its first file.

    Args:
        dataset: The dataset (anything else gives None).

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


def _stack(samples: Sequence[Mapping[str, Any]], key: str) -> Tensor:
    """Stack one key of several samples along a new leading dimension."""
    return torch.stack([s[key] for s in samples])


class EpisodeDataset(Dataset[dict[str, Any]]):
    """Reads one episode: a target and the T supports its policy draws.

    Index with an :class:`~torchgeo_ssg2.episodes.EpisodeIndex` ``(target,
    epoch)`` (from :class:`~torchgeo_ssg2.episodes.EpisodeSampler` or
    :class:`~torchgeo_ssg2.episodes.GeoEpisodeSampler`); any other index is a
    target key of epoch 0 (evaluation with a ``fixed`` policy).

    Output: the target sample (``image`` C x H x W, ``mask`` H x W when read, and
    its other keys; ``bounds`` and ``transform`` cut to their first 9 values when
    an IntersectionDataset concatenates them), plus ``support_image`` T x C x H x
    W and ``support_mask`` T x H x W (when every support has a ``mask``).

    Nodata: a pixel is nodata when all its image bands equal *nodata* or one is
    NaN or infinite (when *nodata* is given), or when its mask equals
    *mask_nodata*. A support whose nodata fraction exceeds *max_nodata_fraction*
    is replaced by the draw's next spare; when the spares run out, the
    least-nodata samples read are used (in draw order among equals). The target
    is read as given.

    Args:
        reader: Reads a key into a sample (:class:`ItemReader` for a dataset).
        policy: Draws the support keys of a target key.
        max_nodata_fraction: Largest acceptable nodata fraction of a support.
        nodata: Image nodata value (default: inferred from the image rasters of
            an :class:`ItemReader`'s GeoDataset).
        mask_nodata: Mask value that marks nodata (e.g. an ignore index).

    Raises:
        ValueError: If *max_nodata_fraction* is not in [0, 1].
    """

    def __init__(
        self,
        reader: EpisodeReader,
        policy: SupportPolicy[Any],
        *,
        max_nodata_fraction: float = 0.5,
        nodata: float | None = None,
        mask_nodata: int | None = None,
    ) -> None:
        if not 0 <= max_nodata_fraction <= 1:
            raise ValueError(
                f'max_nodata_fraction must be in [0, 1], got {max_nodata_fraction}'
            )
        self.reader = reader
        self.policy = policy
        self.max_nodata_fraction = max_nodata_fraction
        if nodata is None:
            nodata = infer_nodata(getattr(reader, 'dataset', None))
        self.nodata = nodata
        self.mask_nodata = mask_nodata

    def __len__(self) -> int:
        """Number of targets of the reader (when it has a length)."""
        if not isinstance(self.reader, Sized):
            raise TypeError(f'{type(self.reader).__name__} has no length')
        return len(self.reader)

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
            bad |= _nodata_pixels(image, self.nodata)
        if self.mask_nodata is not None and 'mask' in sample:
            bad |= sample['mask'] == self.mask_nodata
        return float(bad.float().mean())

    def _supports(self, keys: Sequence[Any], epoch: int) -> list[dict[str, Any]]:
        """Read the supports, replacing mostly-nodata ones by spares."""
        t = self.policy.sequence_length
        check = self.nodata is not None or self.mask_nodata is not None
        if not check:
            return [self.reader.read(key, epoch) for key in keys[:t]]
        chosen: list[tuple[float, int, dict[str, Any]]] = []
        rejected: list[tuple[float, int, dict[str, Any]]] = []
        for k, key in enumerate(keys):
            if len(chosen) == t:
                break
            sample = self.reader.read(key, epoch)
            frac = self.nodata_fraction(sample)
            good = frac <= self.max_nodata_fraction
            (chosen if good else rejected).append((frac, k, sample))
        if len(chosen) < t:
            rejected.sort(key=lambda item: (item[0], item[1]))
            chosen += rejected[: t - len(chosen)]
        return [sample for _, _, sample in chosen]

    def __getitem__(self, index: Any) -> dict[str, Any]:
        """One episode.

        Args:
            index: An :class:`~torchgeo_ssg2.episodes.EpisodeIndex`, or a target
                key (epoch 0).

        Returns:
            The episode dict (see the class docstring).
        """
        if isinstance(index, EpisodeIndex):
            target, epoch = index.target, int(index.epoch)
        else:
            target, epoch = index, 0
        sample = self.reader.read(target, epoch)
        supports = self._supports(self.policy.draw(target, epoch), epoch)
        for key in ('bounds', 'transform'):
            if key in sample:
                sample[key] = sample[key][:9]
        sample['support_image'] = _stack(supports, 'image')
        if all('mask' in s for s in supports):
            sample['support_mask'] = _stack(supports, 'mask')
        return sample
