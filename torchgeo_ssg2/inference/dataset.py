"""Windows of one raster as normalised samples, with optional support sequences."""

import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from rasterio.transform import Affine
from rasterio.windows import Window
from torch import Tensor
from torch.utils.data import Dataset

from .output import RasterMeta, gdal_threads, open_raster, read_input
from .windows import WindowGrid

__all__ = ('RasterWindowDataset', 'SupportMode')

#: Band dtypes that float32 holds exactly: cached as they are and cast by numpy.
_EXACT_IN_FLOAT32 = frozenset({'uint8', 'int8', 'uint16', 'int16', 'float32'})

#: Where the support sequence of each window comes from.
SupportMode = Literal['none', 'raster', 'bank']


def _as_channel_vector(
    value: float | Sequence[float] | Tensor | np.ndarray, count: int, name: str
) -> np.ndarray:
    """Broadcast a scalar or per-band statistic to a Cx1x1 float32 array.

    Args:
        value: Scalar or one value per band.
        count: Number of bands C.
        name: Name for error messages.

    Returns:
        The statistic as Cx1x1 float32.

    Raises:
        ValueError: If the number of values is neither 1 nor ``count``.
    """
    arr = np.asarray(
        value.detach().cpu() if isinstance(value, Tensor) else value, dtype=np.float32
    ).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, count)
    if arr.size != count:
        msg = f'{name} has {arr.size} values but the raster has {count} bands'
        raise ValueError(msg)
    return arr.reshape(count, 1, 1)


#: Tallest block, in windows, that the row cache reads whole.
ALIGNED_BLOCK_WINDOWS = 4


def _append_rows(kept: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Rows *new* below rows *kept* (rows on the second-last axis).

    Args:
        kept: ... x n x width.
        new: ... x m x width.

    Returns:
        ... x (n + m) x width (*new* itself where nothing is kept).
    """
    return np.concatenate([kept, new], axis=-2) if kept.shape[-2] else new


def _read_validity(
    src: Any, window: Window, values: np.ndarray, meta: RasterMeta
) -> np.ndarray:
    """Which pixels of values just read have data.

    The raster's mask is read through the same handle right after the values,
    so GDAL finds the blocks it just decoded in its block cache.

    Args:
        src: The open raster.
        window: The pixels read.
        values: Their values, C x n x m.
        meta: The raster's metadata: whether it has a mask (nodata value, mask
            or alpha band) and floating-point bands (NaN and inf are nodata).

    Returns:
        n x m bool, True where the mask marks the pixel valid and (floating-point
        bands) every band is finite.
    """
    valid = np.ones(values.shape[1:], dtype=bool)
    if meta.has_mask:
        valid &= read_input(src, window, mask=True) != 0
    if meta.floating:
        valid &= np.isfinite(values).all(axis=0)
    return valid


class _RowCache:
    """Full-width rows of a raster, read once for windows taken in row-major order.

    Neighbouring windows overlap, so reading each window on its own decompresses
    most input blocks several times. The cache holds rows ``[top, bottom)`` of
    the whole width and extends them downwards to the next block boundary, so
    that windows visited row by row read every block once, in one read of whole
    rows of blocks. It holds the rows from the top of the last window read to
    the first block boundary at or below its bottom: fewer than a window plus
    one block of rows. Blocks more than :data:`ALIGNED_BLOCK_WINDOWS` windows
    tall (a raster stored as one strip, say) are not read whole: the cache then
    holds the rows of the last window only, so that memory never grows with the
    raster's height.

    For a raster that may hold nodata it also holds which pixels of those rows
    are valid: the raster's mask (read through the same handle right after the
    values, so GDAL finds the blocks it just decoded in its block cache, which
    the writer sizes to hold a row of blocks, see
    :func:`~torchgeo_ssg2.inference.output.gdal_cache_limit`) and, for
    floating-point bands, where every band is finite (:func:`_read_validity`).

    Args:
        src: The open raster.
        meta: Its metadata: the height of its blocks, whether it has a mask
            (nodata value, mask or alpha band) to read and floating-point
            bands (NaN and inf values are nodata).
        dtype: dtype the rows are kept in.
    """

    def __init__(self, src: Any, meta: RasterMeta, dtype: str) -> None:
        self.src = src
        self.dtype = dtype
        self.meta = meta
        self.block_rows = meta.block_rows
        self.top = 0
        self.rows = np.empty((src.count, 0, src.width), dtype=dtype)
        #: height x width, True where the pixel has data (None without nodata).
        self.valid: np.ndarray | None = None
        if meta.has_nodata:
            self.valid = np.empty((0, src.width), dtype=bool)

    def read(self, row_off: int, height: int) -> np.ndarray:
        """Rows ``row_off:row_off + height`` of the whole width.

        Args:
            row_off: First row.
            height: Number of rows.

        Returns:
            A C x height x width view of the cache.
        """
        bottom = row_off + height
        cached = self.top + self.rows.shape[1]
        if not self.top <= row_off <= cached:
            self.top, self.rows, cached = row_off, self.rows[:, :0], row_off
            if self.valid is not None:
                self.valid = self.valid[:0]
        if bottom > cached:
            end = bottom
            if self.block_rows <= ALIGNED_BLOCK_WINDOWS * height:
                end = min(
                    self.src.height, -(-bottom // self.block_rows) * self.block_rows
                )
            window = Window(0, cached, self.src.width, end - cached)
            new = read_input(self.src, window, out_dtype=self.dtype)
            start = row_off - self.top
            self.rows = _append_rows(self.rows[:, start:], new)
            if self.valid is not None:
                valid = _read_validity(self.src, window, new, self.meta)
                self.valid = _append_rows(self.valid[start:], valid)
            self.top = row_off
        start = row_off - self.top
        return self.rows[:, start : start + height]

    def validity(self, row_off: int, height: int) -> np.ndarray:
        """Which pixels of rows the last :meth:`read` returned have data.

        Args:
            row_off: First row.
            height: Number of rows.

        Returns:
            A height x width bool view of the cache.
        """
        assert self.valid is not None
        start = row_off - self.top
        return self.valid[start : start + height]


class RasterWindowDataset(Dataset[dict[str, Tensor]]):
    """The sliding windows of one raster, read on demand and normalised.

    Item ``i`` is the ``i``-th window of :class:`WindowGrid` (row-major), cut from
    full-width rows that are read block row by block row as the windows move down
    (each input block is decoded once when the items are taken in order); where
    the window extends beyond the raster (rasters smaller than a window) it is
    padded by reflection. Images are normalised
    as ``(x - mean) / std``, the way the training datamodule's ``K.Normalize`` did.

    Supports (``support_image``, TxCxHxW) are added for SSG2:

    * ``"raster"``: T other windows of the same raster chosen by
      :class:`torchgeo_ssg2.samplers.RasterSupportSelector` (images only; a
      raster smaller than a window is its own support, T times, with a warning
      when T > 1);
    * ``"bank"``: T images of a labelled dataset from a
      :class:`torchgeo_ssg2.samplers.SupportBank` (normalised the same way);
    * ``"none"``: no supports (single-image models such as PTAViT).

    Each item also carries ``row_off`` and ``col_off`` (the window's pixel offsets),
    and torchgeo's ``bounds`` and ``transform`` (9 values each). A raster that may
    hold nodata (:attr:`RasterMeta.has_nodata`: a mask, or floating-point bands)
    adds ``valid``, True where the pixel has data (its mask, and every band
    finite), which the writer carries into the output's nodata. Every band of
    an invalid pixel, in the images and in the raster's supports alike, is fed
    to the model as the band mean (0 after normalisation), whatever the value
    stored there (a nodata value, values under a mask or an alpha of 0, NaN or
    inf): the model sees the same input wherever the valid pixels are the same.
    A float64 value beyond float32's range (data) is fed as 0 too.

    Args:
        path: Input raster, or its metadata already read
            (:meth:`~torchgeo_ssg2.inference.output.RasterMeta.from_file`).
        window: Window side in pixels.
        overlap: Pixels shared by neighbouring windows.
        mean: Per-band (or scalar) mean subtracted from the raw values.
        std: Per-band (or scalar) standard deviation dividing them.
        supports: Source of support sequences.
        sequence_length: Supports T per window (``"raster"`` mode).
        support_bank: The bank (``"bank"`` mode), an object with
            ``supports(key) -> TxCxHxW``; the key is the window index.
        support_seed: Seed of the raster support selector.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | RasterMeta,
        window: int = 256,
        overlap: int = 64,
        *,
        mean: float | Sequence[float] | Tensor,
        std: float | Sequence[float] | Tensor,
        supports: SupportMode = 'none',
        sequence_length: int | None = None,
        support_bank: Any = None,
        support_seed: int = 0,
    ) -> None:
        self.meta = path if isinstance(path, RasterMeta) else RasterMeta.from_file(path)
        self.grid = WindowGrid(self.meta.height, self.meta.width, window, overlap)
        self.mean = _as_channel_vector(mean, self.meta.count, 'mean')
        self.std = _as_channel_vector(std, self.meta.count, 'std')
        if np.any(self.std == 0):
            msg = 'std must not contain zeros'
            raise ValueError(msg)
        self.supports = supports
        self.sequence_length = sequence_length
        self.selector: Any = None
        self.support_bank = support_bank
        if supports == 'raster':
            if sequence_length is None or sequence_length < 1:
                msg = (
                    f'raster supports need sequence_length >= 1, got {sequence_length}'
                )
                raise ValueError(msg)
            if self.meta.height >= window and self.meta.width >= window:
                from ..samplers import RasterSupportSelector

                self.selector = RasterSupportSelector(
                    self.meta.height,
                    self.meta.width,
                    window,
                    sequence_length,
                    seed=support_seed,
                )
            elif sequence_length > 1:
                warnings.warn(
                    f'input raster {self.meta.path} is smaller than one window: it '
                    f'is its own support, repeated sequence_length={sequence_length} '
                    'times',
                    UserWarning,
                    stacklevel=2,
                )
        elif supports == 'bank':
            if support_bank is None:
                msg = 'supports="bank" needs a support_bank'
                raise ValueError(msg)
        elif supports != 'none':
            msg = f"supports must be 'none', 'raster' or 'bank', got {supports!r}"
            raise ValueError(msg)
        self._src: Any = None
        self._rows: _RowCache | None = None
        self._pid: int | None = None
        self._floating = self.meta.floating
        dtypes = set(self.meta.dtypes)
        self._cache_dtype = dtypes.pop() if len(dtypes) == 1 else 'float32'
        if 'float64' in self.meta.dtypes:
            # finite as stored: a float64 value beyond float32's range is data
            self._cache_dtype = 'float64'
        elif self._cache_dtype not in _EXACT_IN_FLOAT32:
            self._cache_dtype = 'float32'

    def __len__(self) -> int:
        """Number of windows."""
        return len(self.grid)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the open file handle (for DataLoader workers)."""
        state = self.__dict__.copy()
        state['_src'] = None
        state['_rows'] = None
        state['_pid'] = None
        return state

    def _reader(self) -> Any:
        """The raster opened once per process."""
        if self._src is None or self._pid != os.getpid():
            self._src = open_raster(self.meta.path, num_threads=gdal_threads())
            self._rows = _RowCache(self._src, self.meta, self._cache_dtype)
            self._pid = os.getpid()
        return self._src

    def close(self) -> None:
        """Close the raster handle of this process."""
        if self._src is not None:
            self._src.close()
            self._src = None
            self._rows = None

    def read_window(
        self,
        row_off: int,
        col_off: int,
        cached: bool = False,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Read and normalise one window.

        For a raster that may hold nodata, every band of an invalid pixel
        (:func:`_read_validity`; the validity is reflection-padded with the
        values) is 0, the band mean; so is a float64 value beyond float32's
        range. The values are the same whether the window is cached or not.

        Args:
            row_off: Row offset.
            col_off: Column offset.
            cached: Take the window from the row cache (for the targets, which
                are visited in row-major order) instead of reading it alone.
            out: float32 Cxwindowxwindow array to write the window into (e.g. a
                slot of a batch), instead of a new one.

        Returns:
            float32 Cxwindowxwindow, reflection-padded beyond the raster.

        Raises:
            OSError: If the window cannot be read (naming the file and window).
        """
        window = self.grid.window
        h, w = self.grid.valid_shape(row_off, col_off)
        src = self._reader()
        valid = None
        if cached:
            rows = self._rows
            assert rows is not None
            raw = rows.read(row_off, h)[:, :, col_off : col_off + w]
            if rows.valid is not None:
                valid = rows.validity(row_off, h)[:, col_off : col_off + w]
        else:
            # read as the cache keeps the rows, so that both give the same values
            part = Window(col_off, row_off, w, h)
            raw = read_input(src, part, out_dtype=self._cache_dtype)
            if self.meta.has_nodata:
                valid = _read_validity(src, part, raw, self.meta)
        if (h, w) != (window, window):
            pad = ((0, window - h), (0, window - w))
            raw = np.pad(raw, ((0, 0), *pad), mode='reflect')
            if valid is not None:
                valid = np.pad(valid, pad, mode='reflect')
        # one pass casts to float32 and subtracts (the values of astype, then -=);
        # a float64 value beyond float32's range becomes inf, fed as below
        with np.errstate(over='ignore'):
            data = np.subtract(raw, self.mean, dtype=np.float32, out=out)
        data /= self.std
        # Nodata values would spread through the model's receptive field and the
        # blending into valid pixels: feed the band mean instead (the pixels stay
        # nodata in the outputs).
        if valid is not None:
            np.copyto(data, 0.0, where=~valid)
        if self._floating:
            np.nan_to_num(data, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return data

    def _bank_supports(self, index: int) -> np.ndarray:
        """Supports from the bank, normalised like the image.

        Every band of a pixel with a band that is not finite (NaN where an
        :class:`~torchgeo_ssg2.samplers.inference.ImageChips` file has no data)
        is fed as the band mean, 0, as in the windows.

        Args:
            index: Index of the target window (the bank's key).

        Returns:
            float32 TxCxwindowxwindow.

        Raises:
            ValueError: If the bank's supports do not match the windows.
        """
        sup = self.support_bank.supports(index)
        sup = np.asarray(
            sup.detach().cpu() if isinstance(sup, Tensor) else sup, dtype=np.float32
        )
        expected = (self.meta.count, self.grid.window, self.grid.window)
        if sup.ndim != 4 or sup.shape[1:] != expected:
            msg = (
                f'support bank gives supports of shape {sup.shape}; windows need '
                f'Tx{expected[0]}x{expected[1]}x{expected[2]}'
            )
            raise ValueError(msg)
        with np.errstate(invalid='ignore'):
            sup = (sup - self.mean) / self.std
        np.copyto(sup, 0.0, where=~np.isfinite(sup).all(axis=1, keepdims=True))
        return sup

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """One window.

        Args:
            index: Window index in row-major order.

        Returns:
            ``image`` CxHxW, ``valid`` HxW bool (rasters that may hold nodata),
            optional ``support_image`` TxCxHxW, ``row_off``, ``col_off`` (0-d
            int64), ``bounds`` and ``transform`` (9 float64 each).
        """
        return {key: value[0] for key, value in self.batch([index]).items()}

    def batch(self, indices: Sequence[int]) -> dict[str, Tensor]:
        """Windows collated into a batch (an item is the batch of one window).

        The images and the raster's supports are normalised straight into the
        batch (no copy per window); the placement of all windows is computed at
        once.

        Args:
            indices: Window indices (B), in the order of the batch.

        Returns:
            The items of :meth:`__getitem__`, each with a leading batch dimension.
        """
        side, count = self.grid.window, self.meta.count
        offsets = [self.grid[index] for index in indices]
        images = np.empty((len(indices), count, side, side), np.float32)
        batch = {'image': torch.from_numpy(images)}
        valid = None
        if self.meta.has_nodata:
            valid = np.empty((len(indices), side, side), dtype=bool)
            batch['valid'] = torch.from_numpy(valid)
        for b, (row_off, col_off) in enumerate(offsets):
            self.read_window(row_off, col_off, cached=True, out=images[b])
            if valid is not None:
                self._valid(row_off, col_off, valid[b])
        if self.supports == 'raster':
            shape = (len(indices), self.sequence_length, count, side, side)
            supports = np.empty(shape, np.float32)
            for b, target in enumerate(offsets):
                for t, (row_off, col_off) in enumerate(self._support_offsets(target)):
                    self.read_window(row_off, col_off, out=supports[b, t])
            batch['support_image'] = torch.from_numpy(supports)
        elif self.supports == 'bank':
            supports = np.stack([self._bank_supports(index) for index in indices])
            batch['support_image'] = torch.from_numpy(supports)
        return batch | self._placement(offsets)

    def _valid(self, row_off: int, col_off: int, out: np.ndarray) -> None:
        """Which pixels of the target window just read have data.

        Call it right after :meth:`read_window` with ``cached=True`` for the same
        window: it takes the validity of the rows that read cached.

        Args:
            row_off: Row offset.
            col_off: Column offset.
            out: windowxwindow bool array written (False beyond the raster).
        """
        assert self._rows is not None
        h, w = self.grid.valid_shape(row_off, col_off)
        out[...] = False
        out[:h, :w] = self._rows.validity(row_off, h)[:, col_off : col_off + w]

    def _support_offsets(self, target: tuple[int, int]) -> list[tuple[int, int]]:
        """Offsets of the support windows of a target window (``supports="raster"``).

        Args:
            target: ``(row_off, col_off)`` of the target window.

        Returns:
            ``sequence_length`` ``(row_off, col_off)`` offsets.
        """
        if self.selector is not None:
            return self.selector.draw(target)
        # the raster is smaller than a window: it is its own support
        return [(0, 0)] * self.sequence_length

    def _placement(self, offsets: Sequence[tuple[int, int]]) -> dict[str, Tensor]:
        """Where windows lie: their offsets, bounds and affine transforms.

        The transform of a window is the raster's composed with the translation
        by its offsets, the offset terms computed for all windows at once as
        ``Affine @ Affine`` computes them (so the values are rasterio's).

        Args:
            offsets: ``(row_off, col_off)`` of each window (B).

        Returns:
            ``row_off`` and ``col_off`` (B int64), ``bounds`` (Bx9 float64,
            ``[xmin, xmax, xres, ymin, ymax, yres, 0, 0, 1]``) and ``transform``
            (Bx9 float64, the window's affine as rasterio orders it).
        """
        rows, cols = np.array(offsets, dtype=np.int64).reshape(-1, 2).T
        row, col = rows.astype(np.float64), cols.astype(np.float64)
        raster = self.meta.transform
        # every term but the offsets' (c and f) is that of a zero translation
        transform = np.tile(list(raster @ Affine.translation(0, 0)), (len(rows), 1))
        transform[:, 2] = raster.a * col + raster.b * row + raster.c
        transform[:, 5] = raster.d * col + raster.e * row + raster.f
        x0, y0 = transform[:, 2], transform[:, 5]
        x1 = x0 + transform[:, 0] * self.grid.window
        y1 = y0 + transform[:, 4] * self.grid.window
        bounds = np.zeros((len(rows), 9))
        bounds[:, 0], bounds[:, 1] = np.minimum(x0, x1), np.maximum(x0, x1)
        bounds[:, 3], bounds[:, 4] = np.minimum(y0, y1), np.maximum(y0, y1)
        bounds[:, 2], bounds[:, 5] = np.abs(transform[:, 0]), np.abs(transform[:, 4])
        bounds[:, 8] = 1.0
        return {
            'row_off': torch.from_numpy(rows.copy()),
            'col_off': torch.from_numpy(cols.copy()),
            'bounds': torch.from_numpy(bounds),
            'transform': torch.from_numpy(transform),
        }
