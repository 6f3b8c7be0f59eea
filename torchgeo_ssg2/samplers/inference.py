"""Supports at inference: where the T support images of a predicted window come from.

SSG2's forward takes support *images* only (support labels are used only to build
training targets), so at prediction time any image chips of the same sensor and
domain serve as supports. Two sources (the ``supports`` option of the predictor:
``'raster'`` or ``'bank'``):

* ``'raster'``: :class:`RasterSupportSelector`, support windows from the raster
  being predicted itself: nearby windows that do not overlap the target window
  (images only, no labels needed). Use it when no labelled pool of the same
  domain is at hand.
* ``'bank'``: :class:`SupportBank`, supports from a fixed support bank (a
  labelled, or image-only, map-style dataset such as the training pool). Use it
  when the raster is small or when predictions must not depend on the raster's
  content elsewhere.

Both implement :class:`torchgeo_ssg2.episodes.SupportPolicy`
(``draw(target_key, epoch) -> support keys``, ``fixed``: the epoch is ignored),
the abstraction training uses too. They are deterministic: the supports of a
window depend only on the seed and on the window (its pixel offsets, or its
key), so a prediction is reproducible and independent of batch size, worker
count, tiling order and DDP rank. :class:`ImageChips` turns image files into a
bank's dataset (``torchgeo-ssg2 predict --supports bank --bank-images ...``).

When the pool of candidates holds fewer distinct supports than the sequence
length T (a bank of fewer than T images, or a raster with fewer than T
non-overlapping windows), supports repeat within a sequence; both classes warn
about it once.
"""

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.io import DatasetReader
from rasterio.windows import Window
from torch import Tensor
from torch.utils.data import Dataset

from ..episodes.index import draw_without_target

__all__ = ('ImageChips', 'RasterSupportSelector', 'SupportBank')


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """Turn an int or a (height, width) pair into a validated pair.

    Args:
        value: The value.
        name: Its name, for error messages.

    Returns:
        (height, width).

    Raises:
        ValueError: If a component is not positive.
    """
    h, w = (value, value) if isinstance(value, int) else value
    if h <= 0 or w <= 0:
        raise ValueError(f'{name} must be positive, got {value}')
    return int(h), int(w)


class RasterSupportSelector:
    """Picks T support windows of a raster for each target window of that raster.

    All offsets are pixel offsets ``(row_off, col_off)`` of a window's top-left
    corner. A support window

    * lies inside the raster,
    * never overlaps the target window: their edges are at least ``min_gap``
      pixels apart along rows or along columns,
    * has its centre within ``max_distance`` pixels of the target's centre
      (Euclidean; None means anywhere in the raster).

    Supports are drawn uniformly among the windows that satisfy the three rules,
    without replacement unless fewer than T exist.

    Fallbacks (documented, deterministic): if no window satisfies the distance
    rule, it is dropped (the nearest rule that still holds is non-overlap); if
    even no non-overlapping window exists (a raster less than about two windows
    wide or high), the supports are the raster's corner windows, farthest from
    the target first. Overlap is harmless at inference (supports carry no labels);
    :meth:`overlap_free` tells whether a window is in that case.

    Args:
        height: Raster height in pixels.
        width: Raster width in pixels.
        window: Window size, an int or (height, width).
        sequence_length: Number of supports T.
        min_gap: Minimum gap in pixels between target and support edges.
        max_distance: Maximum centre distance in pixels, or None.
        seed: Seed of the draws.

    Raises:
        ValueError: If the window does not fit the raster or an argument is
            invalid.
    """

    def __init__(
        self,
        height: int,
        width: int,
        window: int | tuple[int, int],
        sequence_length: int,
        min_gap: int = 0,
        max_distance: float | None = None,
        seed: int = 0,
    ) -> None:
        self.window = _pair(window, 'window')
        if height < self.window[0] or width < self.window[1]:
            raise ValueError(
                f'window {self.window} does not fit in a raster of '
                f'{height}x{width} pixels'
            )
        if sequence_length < 1:
            raise ValueError(f'sequence_length must be >= 1, got {sequence_length}')
        if min_gap < 0:
            raise ValueError(f'min_gap must be >= 0, got {min_gap}')
        if max_distance is not None and max_distance <= 0:
            raise ValueError(f'max_distance must be positive, got {max_distance}')
        if seed < 0:
            raise ValueError(f'seed must be >= 0, got {seed}')
        self.height = int(height)
        self.width = int(width)
        self.sequence_length = int(sequence_length)
        self.min_gap = int(min_gap)
        self.max_distance = max_distance
        self.seed = int(seed)
        self._warned = False

    #: Draws ignore the epoch (prediction).
    fixed = True

    def _warn_repeats(self, distinct: int) -> None:
        """Warn, once per selector, that a target's supports repeat.

        Args:
            distinct: Number of distinct supports available to the target.
        """
        if self._warned:
            return
        self._warned = True
        warnings.warn(
            f'RasterSupportSelector: only {distinct} distinct support window(s) of '
            f'{self.window[0]}x{self.window[1]} px fit beside some target windows '
            f'of the {self.height}x{self.width} raster, fewer than '
            f'sequence_length={self.sequence_length}: supports repeat',
            UserWarning,
            stacklevel=3,
        )

    def _check(self, row_off: int, col_off: int) -> None:
        wh, ww = self.window
        if not (0 <= row_off <= self.height - wh and 0 <= col_off <= self.width - ww):
            raise ValueError(
                f'target window at ({row_off}, {col_off}) of size {self.window} is '
                f'not inside the {self.height}x{self.width} raster'
            )

    def _regions(self, row_off: int, col_off: int) -> list[tuple[int, int, int, int]]:
        """Top-left positions of non-overlapping windows, as disjoint rectangles.

        Args:
            row_off: Target row offset.
            col_off: Target column offset.

        Returns:
            Rectangles ``(r0, r1, c0, c1)`` (inclusive bounds) of top-left
            positions, clipped to the distance box when ``max_distance`` is set.
        """
        wh, ww = self.window
        g = self.min_gap
        rmax, cmax = self.height - wh, self.width - ww
        # Clip to the box that holds the distance disc.
        lo_r, hi_r, lo_c, hi_c = 0, rmax, 0, cmax
        if self.max_distance is not None:
            d = math.floor(self.max_distance)
            lo_r, hi_r = max(0, row_off - d), min(rmax, row_off + d)
            lo_c, hi_c = max(0, col_off - d), min(cmax, col_off + d)
        # Forbidden top-left rows/cols (open interval around the target).
        fr0, fr1 = row_off - wh - g + 1, row_off + wh + g - 1
        fc0, fc1 = col_off - ww - g + 1, col_off + ww + g - 1
        regions = [
            (lo_r, min(hi_r, fr0 - 1), lo_c, hi_c),  # above
            (max(lo_r, fr1 + 1), hi_r, lo_c, hi_c),  # below
            (max(lo_r, fr0), min(hi_r, fr1), lo_c, min(hi_c, fc0 - 1)),  # left
            (max(lo_r, fr0), min(hi_r, fr1), max(lo_c, fc1 + 1), hi_c),  # right
        ]
        return [(a, b, c, d) for a, b, c, d in regions if a <= b and c <= d]

    def _within(self, rows: np.ndarray, cols: np.ndarray, row_off: int, col_off: int):
        if self.max_distance is None:
            return np.ones(rows.shape, dtype=bool)
        dist = np.hypot(rows - row_off, cols - col_off)
        return dist <= self.max_distance

    def _sample(
        self,
        rng: np.random.Generator,
        regions: list[tuple[int, int, int, int]],
        row_off: int,
        col_off: int,
        count: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Uniform positions from the union of *regions* within the distance.

        Args:
            rng: Generator.
            regions: Disjoint rectangles of positions.
            row_off: Target row offset.
            col_off: Target column offset.
            count: Number of candidates to draw.

        Returns:
            (rows, cols) of the accepted candidates (possibly fewer than count).
        """
        areas = np.array([(b - a + 1) * (d - c + 1) for a, b, c, d in regions], float)
        which = rng.choice(len(regions), size=count, p=areas / areas.sum())
        box = np.array(regions)[which]
        rows = box[:, 0] + np.floor(rng.random(count) * (box[:, 1] - box[:, 0] + 1))
        cols = box[:, 2] + np.floor(rng.random(count) * (box[:, 3] - box[:, 2] + 1))
        keep = self._within(rows, cols, row_off, col_off)
        return rows[keep].astype(np.int64), cols[keep].astype(np.int64)

    def _enumerate(
        self, regions: list[tuple[int, int, int, int]], row_off: int, col_off: int
    ) -> tuple[np.ndarray, np.ndarray]:
        rows_l, cols_l = [], []
        for a, b, c, d in regions:
            rr, cc = np.meshgrid(
                np.arange(a, b + 1), np.arange(c, d + 1), indexing='ij'
            )
            rows_l.append(rr.ravel())
            cols_l.append(cc.ravel())
        rows, cols = np.concatenate(rows_l), np.concatenate(cols_l)
        keep = self._within(rows, cols, row_off, col_off)
        return rows[keep], cols[keep]

    def overlap_free(self, row_off: int, col_off: int) -> bool:
        """Whether a non-overlapping support window exists for this target.

        Args:
            row_off: Target row offset.
            col_off: Target column offset.

        Returns:
            True if the supports of this window do not overlap it.
        """
        self._check(row_off, col_off)
        saved, self.max_distance = self.max_distance, None
        try:
            return bool(self._regions(row_off, col_off))
        finally:
            self.max_distance = saved

    def draw(
        self, target_key: tuple[int, int], epoch: int = 0
    ) -> list[tuple[int, int]]:
        """Support windows of one target window (the :class:`SupportPolicy` draw).

        Args:
            target_key: ``(row_off, col_off)`` of the target window's top-left
                pixel.
            epoch: Ignored (the draws are ``fixed``).

        Returns:
            T ``(row_off, col_off)`` offsets of support windows of size
            ``window``.

        Raises:
            ValueError: If the target window is not inside the raster.
        """
        row_off, col_off = (int(v) for v in target_key)
        self._check(row_off, col_off)
        t = self.sequence_length
        rng = np.random.default_rng(
            np.random.SeedSequence([self.seed, row_off, col_off])
        )
        regions = self._regions(row_off, col_off)
        rows = cols = np.empty(0, dtype=np.int64)
        if regions:
            rows, cols = self._sample(rng, regions, row_off, col_off, 64 * t)
            if len(rows) < t:
                # Few candidates pass the distance rule: list them all.
                rows, cols = self._enumerate(regions, row_off, col_off)
            if len(rows) == 0 and self.max_distance is not None:
                # Fallback 1: no window within max_distance; drop that rule.
                saved, self.max_distance = self.max_distance, None
                try:
                    regions = self._regions(row_off, col_off)
                    rows, cols = self._sample(rng, regions, row_off, col_off, 64 * t)
                finally:
                    self.max_distance = saved
        if len(rows) == 0:
            # Fallback 2: no non-overlapping window; farthest corners first.
            wh, ww = self.window
            corners = np.array(
                [
                    (0, 0),
                    (0, self.width - ww),
                    (self.height - wh, 0),
                    (self.height - wh, self.width - ww),
                ]
            )
            dist = np.hypot(corners[:, 0] - row_off, corners[:, 1] - col_off)
            order = np.argsort(-dist, kind='stable')
            picks = [tuple(corners[order[i % 4]]) for i in range(t)]
            if len(set(picks)) < t:
                self._warn_repeats(len(set(picks)))
            return [(int(r), int(c)) for r, c in picks]
        # Deduplicate candidates, then pick T (with replacement only if needed).
        unique = np.unique(np.stack([rows, cols], axis=1), axis=0)
        unique = unique[rng.permutation(len(unique))]
        if len(unique) < t:
            self._warn_repeats(len(unique))
        pos = draw_without_target(rng, len(unique), None, t)
        return [(int(unique[p, 0]), int(unique[p, 1])) for p in pos]

    def read(
        self,
        src: DatasetReader,
        row_off: int,
        col_off: int,
        indexes: Sequence[int] | None = None,
    ) -> Tensor:
        """Read the support windows of a target window from an open raster.

        Args:
            src: The open raster (its size must match ``height`` x ``width``).
            row_off: Target row offset.
            col_off: Target column offset.
            indexes: 1-based band indexes (defaults to all bands).

        Returns:
            Float tensor of shape T x C x window height x window width.

        Raises:
            ValueError: If the raster's size does not match the selector.
        """
        if (src.height, src.width) != (self.height, self.width):
            raise ValueError(
                f'{src.name}: raster is {src.height}x{src.width} but the selector '
                f'was built for {self.height}x{self.width}'
            )
        wh, ww = self.window
        bands = list(indexes) if indexes is not None else list(src.indexes)
        arrays = [
            src.read(bands, window=Window(c, r, ww, wh))
            for r, c in self.draw((row_off, col_off))
        ]
        return torch.from_numpy(np.stack(arrays).astype(np.float32))


class SupportBank:
    """A fixed pool of support images for inference.

    The supports of a key (e.g. a window index or any stable id of the predicted
    window) are T items of *dataset* drawn from ``SeedSequence([seed, key])``:
    without replacement when the bank holds at least T items. The same key always
    gets the same supports. Loaded items are cached when ``cache`` is True.

    The bank's images must all have the size of the predicted windows (the model
    takes supports of the target's height and width). A bank of fewer than T
    images repeats supports within each sequence (with a warning).

    Args:
        dataset: Map-style dataset whose samples hold ``image`` (C x H x W) and
            optionally ``mask`` (H x W).
        sequence_length: Number of supports T.
        seed: Seed of the draws.
        cache: Keep loaded samples in memory.

    Raises:
        ValueError: If the dataset is empty or an argument is invalid.
    """

    def __init__(
        self,
        dataset: Dataset[dict[str, Any]],
        sequence_length: int,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        if n < 1:
            raise ValueError(f'support bank {type(dataset).__name__} is empty')
        if sequence_length < 1:
            raise ValueError(f'sequence_length must be >= 1, got {sequence_length}')
        if seed < 0:
            raise ValueError(f'seed must be >= 0, got {seed}')
        self.dataset = dataset
        self.sequence_length = int(sequence_length)
        self.seed = int(seed)
        self.cache = cache
        self._cache: dict[int, dict[str, Any]] = {}
        if n < self.sequence_length:
            warnings.warn(
                f'support bank {type(dataset).__name__} holds {n} image(s), fewer '
                f'than sequence_length={self.sequence_length}: supports repeat',
                UserWarning,
                stacklevel=2,
            )

    def __len__(self) -> int:
        """Number of items in the bank."""
        return len(self.dataset)  # type: ignore[arg-type]

    def source_files(self) -> list[Path]:
        """Files the bank's images are read from, as far as its dataset says.

        Taken from the ``files`` attribute of the dataset (and of the datasets a
        ``Subset`` or ``ConcatDataset`` wraps): paths, or lists, tuples and dicts
        of them, as torchgeo's and this package's datasets keep them. Prediction
        refuses to write over any of them.

        Returns:
            The existing files.
        """

        def walk(value: Any, depth: int = 0) -> Iterator[Path]:
            if isinstance(value, str | os.PathLike):
                path = Path(value)
                if path.is_file():
                    yield path
            elif depth < 4 and isinstance(value, dict):
                for item in value.values():
                    yield from walk(item, depth + 1)
            elif depth < 4 and isinstance(value, list | tuple | set):
                for item in value:
                    yield from walk(item, depth + 1)

        found: list[Path] = []
        stack: list[Any] = [self.dataset]
        while stack:
            dataset = stack.pop()
            stack.extend(getattr(dataset, 'datasets', None) or [])
            inner = getattr(dataset, 'dataset', None)
            if inner is not None:
                stack.append(inner)
            found.extend(walk(getattr(dataset, 'files', None)))
        return found

    #: Draws ignore the epoch (prediction).
    fixed = True

    def draw(self, target_key: int, epoch: int = 0) -> list[int]:
        """Bank indices of the supports of a key (the :class:`SupportPolicy` draw).

        The bank is not the target's pool, so any index may be drawn.

        Args:
            target_key: Non-negative key of the predicted window.
            epoch: Ignored (the draws are ``fixed``).

        Returns:
            T indices into the bank.

        Raises:
            ValueError: If the key is negative.
        """
        key = int(target_key)
        if key < 0:
            raise ValueError(f'key must be >= 0, got {key}')
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(key)]))
        return draw_without_target(rng, len(self), None, self.sequence_length).tolist()

    def _item(self, index: int) -> dict[str, Any]:
        if index in self._cache:
            return self._cache[index]
        sample = self.dataset[index]
        if 'image' not in sample:
            raise ValueError(
                f'support bank {type(self.dataset).__name__} item {index} has no '
                "'image' key"
            )
        if self.cache:
            self._cache[index] = sample
        return sample

    def supports(self, key: int) -> Tensor:
        """Support images of *key*.

        Args:
            key: Non-negative key of the predicted window.

        Returns:
            Tensor of shape T x C x H x W.

        Raises:
            ValueError: If the bank's images differ in shape.
        """
        images = [self._item(i)['image'] for i in self.draw(key)]
        shapes = {tuple(x.shape) for x in images}
        if len(shapes) > 1:
            raise ValueError(
                f'support bank {type(self.dataset).__name__} has images of '
                f'different shapes {sorted(shapes)}'
            )
        return torch.stack(images)


class ImageChips(Dataset[dict[str, Tensor]]):
    """Square chips of image files, as the dataset of a :class:`SupportBank`.

    Each file is cut into non-overlapping ``size`` x ``size`` chips in row-major
    order (a remainder at the right and bottom edges is left out); item ``i`` is
    the ``i``-th chip over all files, in the files' order. Values are raw (the
    prediction normalises supports like the predicted windows); pixels that a
    file marks as nodata (a nodata value, mask or alpha band) are NaN, which the
    prediction feeds as the band mean.

    Args:
        files: Image files (any format GDAL reads), all with the same bands.
        size: Chip side in pixels (the prediction window).

    Raises:
        ValueError: If a file is unreadable, smaller than a chip, or has another
            band count than the first.
    """

    def __init__(self, files: Sequence[str | os.PathLike[str]], size: int) -> None:
        from ..inference.output import RasterMeta

        if size < 1:
            raise ValueError(f'chip size must be positive, got {size}')
        self.files = [Path(f) for f in files]
        self.size = int(size)
        self._chips: list[tuple[int, int, int]] = []
        self._masked: list[bool] = []
        count = None
        for i, path in enumerate(self.files):
            meta = RasterMeta.from_file(path)
            if count is not None and meta.count != count:
                raise ValueError(
                    f'bank image {path} has {meta.count} bands, {self.files[0]} '
                    f'has {count}'
                )
            count = meta.count
            self._masked.append(meta.has_mask)
            if meta.height < size or meta.width < size:
                raise ValueError(
                    f'bank image {path} ({meta.height}x{meta.width}) is smaller '
                    f'than one {size}x{size} chip'
                )
            for r in range(0, meta.height - size + 1, size):
                for c in range(0, meta.width - size + 1, size):
                    self._chips.append((i, r, c))

    def __len__(self) -> int:
        """Number of chips."""
        return len(self._chips)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """One chip.

        Args:
            index: Chip index.

        Returns:
            ``image``: float32 C x size x size, NaN where the file has no data.
        """
        from ..inference.output import open_raster, read_input

        i, r, c = self._chips[index]
        window = Window(c, r, self.size, self.size)
        with open_raster(self.files[i]) as src:
            data = read_input(src, window, out_dtype='float32')
            if self._masked[i]:
                data[:, read_input(src, window, mask=True) == 0] = np.nan
        return {'image': torch.from_numpy(data)}
