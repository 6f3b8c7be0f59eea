"""Patch datasets: random or gridded windows of the images of a map-style dataset.

An image gives many patches, so two patches can share pixels. Each patch dataset
tells where a patch lies (:meth:`~RandomPatchDataset.footprint`: its image and
its pixel window), which lets
:class:`~torchgeo_ssg2.episodes.IndexSupportPolicy` keep the supports of a target
patch off the target's pixels.
"""

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchgeo.datasets.utils import Sample

from ..episodes import check_epoch
from ..episodes.protocol import Footprint

__all__ = ('GridPatchDataset', 'RandomPatchDataset', 'to_pair')


def to_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    """Turn ``size`` or ``(height, width)`` into ``(height, width)``.

    Args:
        size: An int or a pair of ints.

    Returns:
        The pair.

    Raises:
        ValueError: If a size is not positive.
    """
    pair = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(pair) < 1:
        raise ValueError(f'patch size must be positive, got {size}')
    return pair


class _PatchDataset(Dataset[Sample]):
    """Shared logic of the patch datasets: image sizes, windows, padding."""

    def __init__(self, dataset: Dataset[Sample], size: int | tuple[int, int]) -> None:
        self.dataset = dataset
        self.size = to_pair(size)
        sizes = getattr(dataset, 'sizes', None)
        if sizes is None:
            n = len(dataset)  # type: ignore[arg-type]
            sizes = [tuple(dataset[i]['image'].shape[-2:]) for i in range(n)]
        self.sizes: list[tuple[int, int]] = [(int(h), int(w)) for h, w in sizes]
        self.ignore_index: int | None = getattr(dataset, 'ignore_index', None)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _window(self, index: int, top: int, left: int) -> Sample:
        """Read the window of :attr:`size` at (top, left), padding past the border.

        Args:
            index: Index of the image in the wrapped dataset.
            top: First row.
            left: First column.

        Returns:
            ``image`` (C, h, w) and ``mask`` (h, w) of the window; the other keys of
            the wrapped dataset's samples are dropped.

        Raises:
            ValueError: If padding is needed but the dataset has no ignore_index.
        """
        ph, pw = self.size
        rows, cols = slice(top, top + ph), slice(left, left + pw)
        load_window = getattr(self.dataset, 'load_window', None)
        if callable(load_window):
            sample = load_window(index, rows, cols)
        else:
            sample = self.dataset[index]
            sample = {
                'image': sample['image'][..., rows, cols],
                **(
                    {'mask': sample['mask'][..., rows, cols]}
                    if 'mask' in sample
                    else {}
                ),
            }
        out: Sample = {'image': sample['image']}
        if 'mask' in sample:
            out['mask'] = sample['mask']
        h, w = out['image'].shape[-2:]
        if (h, w) != (ph, pw):
            if 'mask' in out and self.ignore_index is None:
                raise ValueError(
                    f'image {index} of {type(self.dataset).__name__} is smaller than '
                    f'the patch size {self.size} and the dataset has no ignore_index '
                    'to pad its mask with'
                )
            pad = (0, pw - w, 0, ph - h)
            out['image'] = torch.nn.functional.pad(out['image'], pad)
            if 'mask' in out:
                out['mask'] = torch.nn.functional.pad(
                    out['mask'], pad, value=float(self.ignore_index or 0)
                )
        return out

    def _footprint(self, image_index: int, top: int, left: int) -> Footprint:
        """The footprint of the window of :attr:`size` at (top, left) of an image.

        Args:
            image_index: Index of the image in the wrapped dataset.
            top: First row.
            left: First column.

        Returns:
            The image index and the window ``(slice(left, left + width),
            slice(top, top + height))``, padding included.
        """
        ph, pw = self.size
        return Footprint(image_index, (slice(left, left + pw), slice(top, top + ph)))

    def _group_of(self, image_index: int) -> Any:
        groups = getattr(self.dataset, 'groups', None)
        return image_index if groups is None else groups[image_index]


#: Last word of the seed of a patch position: its stream is not the one that
#: draws the supports of the same item.
_POSITION_STREAM = 1


class RandomPatchDataset(_PatchDataset):
    """Random square (or rectangular) patches of the images of a dataset.

    Item ``i`` is a patch of image ``i % n`` of a table that lists every image once
    per patch needed to cover it, so larger images give proportionally more
    patches; the table is shuffled once (seeded), so an epoch shorter than the
    table still samples every image. The patch position is drawn from a generator
    seeded by ``(seed, epoch, i, 1)`` (a stream apart from the support draws of
    :class:`~torchgeo_ssg2.episodes.IndexSupportPolicy`, seeded by
    ``(seed, epoch, i)``): reproducible, independent of worker or rank,
    and new every epoch (:meth:`read`; ``dataset[i]`` is the patch of epoch 0).
    Patches of the same image may overlap; :meth:`footprint` gives the image and
    window of a patch, for support policies that must avoid the target's pixels.

    Args:
        dataset: Map-style dataset with ``image`` (C, H, W) and ``mask`` (H, W)
            samples of any size. A ``sizes`` attribute ((H, W) per item) avoids
            reading every image at construction, and a
            ``load_window(index, rows, cols)`` method avoids reading whole images.
        size: Patch size, ``size`` or ``(height, width)``.
        length: Number of patches per epoch; defaults to the number of
            non-overlapping patches that cover all images.
        seed: Seed of the patch positions.
    """

    def __init__(
        self,
        dataset: Dataset[Sample],
        size: int | tuple[int, int],
        length: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, size)
        ph, pw = self.size
        table = [
            k
            for k, (h, w) in enumerate(self.sizes)
            for _ in range(math.ceil(h / ph) * math.ceil(w / pw))
        ]
        # A fixed shuffle of the table, so that an epoch shorter than the table
        # (``length``) still draws from every image in proportion to its area
        # instead of from the first images only.
        order = np.random.default_rng([seed, len(table)]).permutation(len(table))
        self.table: list[int] = [table[j] for j in order]
        self.length = len(self.table) if length is None else int(length)
        if self.length < 1 or not self.table:
            raise ValueError(f'RandomPatchDataset needs length >= 1, got {length}')
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def image_index(self, index: int) -> int:
        """Index of the image that patch *index* is cut from.

        Args:
            index: Patch index.

        Returns:
            Image index in the wrapped dataset.
        """
        return self.table[index % len(self.table)]

    @property
    def groups(self) -> list[Any]:
        """Group of every patch: the wrapped dataset's group of its image."""
        return [self._group_of(self.image_index(i)) for i in range(len(self))]

    def __getitem__(self, index: int) -> Sample:
        """Return the patch of epoch 0.

        Args:
            index: Patch index.

        Returns:
            ``image`` (C, h, w) and ``mask`` (h, w) with (h, w) = :attr:`size`.
        """
        return self.read(index, 0)

    def read(self, index: int, epoch: int) -> Sample:
        """Return one random patch of an epoch.

        Args:
            index: Patch index.
            epoch: The epoch.

        Returns:
            ``image`` (C, h, w) and ``mask`` (h, w) with (h, w) = :attr:`size`.

        Raises:
            IndexError: If *index* is out of range.
        """
        index, epoch = int(index), check_epoch(epoch)
        return self._window(*self._corner(index, epoch))

    def footprint(self, index: int, epoch: int = 0) -> Footprint:
        """Where the patch of an epoch lies.

        Args:
            index: Patch index.
            epoch: The epoch.

        Returns:
            The image index in the wrapped dataset and the patch's pixel window
            ``(slice(left, right), slice(top, bottom))``, the one :meth:`read`
            returns.

        Raises:
            IndexError: If *index* is out of range.
        """
        return self._footprint(*self._corner(int(index), check_epoch(epoch)))

    def _corner(self, index: int, epoch: int) -> tuple[int, int, int]:
        """Image index, top row and left column of the patch of an epoch."""
        if not 0 <= index < len(self):
            raise IndexError(f'patch index {index} out of range for {len(self)}')
        k = self.image_index(index)
        h, w = self.sizes[k]
        rng = np.random.default_rng([self.seed, epoch, index, _POSITION_STREAM])
        top = int(rng.integers(0, max(h - self.size[0], 0) + 1))
        left = int(rng.integers(0, max(w - self.size[1], 0) + 1))
        return k, top, left


class GridPatchDataset(_PatchDataset):
    """Fixed windows on a regular grid over the images of a dataset.

    Windows start every *stride* pixels; the last row and column of windows are
    moved flush with the image border so that the whole image is covered, so they
    can overlap the row or column before them (as all windows do with a *stride*
    smaller than *size*); :meth:`footprint` gives the image and window of a
    window, for support policies that must avoid the target's pixels. Images
    smaller than a window are padded (masks with the dataset's ``ignore_index``).

    Args:
        dataset: Map-style dataset with ``image`` (C, H, W) and ``mask`` (H, W)
            samples of any size (see :class:`RandomPatchDataset`).
        size: Window size, ``size`` or ``(height, width)``.
        stride: Distance between windows (defaults to *size*: no overlap).
    """

    def __init__(
        self,
        dataset: Dataset[Sample],
        size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__(dataset, size)
        self.stride = self.size if stride is None else to_pair(stride)
        #: (image index, top, left) of every window.
        self.windows: list[tuple[int, int, int]] = []
        for k, (h, w) in enumerate(self.sizes):
            tops = _starts(h, self.size[0], self.stride[0])
            lefts = _starts(w, self.size[1], self.stride[1])
            self.windows += [(k, t, left) for t in tops for left in lefts]

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def groups(self) -> list[Any]:
        """Group of every window: the wrapped dataset's group of its image."""
        return [self._group_of(k) for k, _, _ in self.windows]

    def __getitem__(self, index: int) -> Sample:
        """Return one window.

        Args:
            index: Window index.

        Returns:
            ``image`` (C, h, w) and ``mask`` (h, w) with (h, w) = :attr:`size`.
        """
        k, top, left = self.windows[index]
        return self._window(k, top, left)

    def footprint(self, index: int, epoch: int = 0) -> Footprint:
        """Where a window lies (the epoch is not used).

        Args:
            index: Window index.
            epoch: Ignored.

        Returns:
            The image index in the wrapped dataset and the pixel window
            ``(slice(left, right), slice(top, bottom))``.
        """
        return self._footprint(*self.windows[index])

    def read(self, index: int, epoch: int) -> Sample:
        """Return one window (the epoch is not used).

        Args:
            index: Window index.
            epoch: Ignored.

        Returns:
            See :meth:`__getitem__`.
        """
        return self[index]


def _starts(length: int, size: int, stride: int) -> list[int]:
    """Window starts along one axis, the last one flush with the border.

    Args:
        length: Image length.
        size: Window length.
        stride: Distance between windows.

    Returns:
        Start offsets.
    """
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts
