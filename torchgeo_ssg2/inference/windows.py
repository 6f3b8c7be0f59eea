"""Sliding-window layout over a raster and the blending weight of one window."""

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ('WindowGrid', 'blend_weight')


def _offsets(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis.

    The first window starts at 0; windows advance by ``stride``; the last window
    ends exactly at ``size`` (it is shifted back, never past the raster) unless the
    axis is shorter than one window, in which case a single window at 0 is read
    with padding.

    Args:
        size: Length of the axis in pixels.
        window: Window length in pixels.
        stride: Step between windows in pixels.

    Returns:
        Sorted, unique offsets.
    """
    if size <= window:
        return [0]
    offsets = list(range(0, size - window, stride))
    offsets.append(size - window)
    return offsets


@dataclass(frozen=True)
class WindowGrid:
    """Square windows tiling a ``height`` x ``width`` raster with overlap.

    Windows are ``window`` x ``window`` pixels and advance by ``window - overlap``.
    The last row and column of windows are shifted back so that they end at the
    raster's edge; a raster smaller than one window gets a single window whose read
    is padded. Iteration is row-major (by row offset, then column offset), the order
    :class:`~torchgeo_ssg2.inference.blending.StripBlender` needs to keep only a
    strip of the output in memory.

    Args:
        height: Raster height in pixels.
        width: Raster width in pixels.
        window: Window side in pixels.
        overlap: Pixels shared by neighbouring windows, ``0 <= overlap < window``.
    """

    height: int
    width: int
    window: int
    overlap: int

    def __post_init__(self) -> None:
        """Validate the layout.

        Raises:
            ValueError: If a size is not positive or the overlap is out of range.
        """
        if self.height < 1 or self.width < 1:
            msg = f'raster size must be positive, got {self.height}x{self.width}'
            raise ValueError(msg)
        if self.window < 1:
            msg = f'window must be positive, got {self.window}'
            raise ValueError(msg)
        if not 0 <= self.overlap < self.window:
            msg = f'overlap must be in [0, window={self.window}), got {self.overlap}'
            raise ValueError(msg)

    @property
    def stride(self) -> int:
        """Step between neighbouring windows in pixels."""
        return self.window - self.overlap

    @property
    def row_offsets(self) -> list[int]:
        """Row offsets of the window rows, top to bottom."""
        return _offsets(self.height, self.window, self.stride)

    @property
    def col_offsets(self) -> list[int]:
        """Column offsets of the window columns, left to right."""
        return _offsets(self.width, self.window, self.stride)

    def __len__(self) -> int:
        """Number of windows."""
        return len(self.row_offsets) * len(self.col_offsets)

    def __getitem__(self, index: int) -> tuple[int, int]:
        """Offsets of one window.

        Args:
            index: Window index in row-major order.

        Returns:
            ``(row_off, col_off)`` of the window's top-left pixel.

        Raises:
            IndexError: If the index is out of range.
        """
        cols = self.col_offsets
        n = len(self)
        if not -n <= index < n:
            msg = f'window index {index} out of range for {n} windows'
            raise IndexError(msg)
        index %= n
        return self.row_offsets[index // len(cols)], cols[index % len(cols)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Iterate over ``(row_off, col_off)`` in row-major order."""
        cols = self.col_offsets
        for row in self.row_offsets:
            for col in cols:
                yield row, col

    def valid_shape(self, row_off: int, col_off: int) -> tuple[int, int]:
        """Part of a window that lies inside the raster.

        Args:
            row_off: Row offset of the window.
            col_off: Column offset of the window.

        Returns:
            ``(rows, cols)`` inside the raster, counted from the window's top-left.
        """
        return (
            min(self.window, self.height - row_off),
            min(self.window, self.width - col_off),
        )


def blend_weight(window: int, floor: float = 0.01) -> np.ndarray:
    """Smooth weight of a window for blending overlapping predictions.

    A separable raised-cosine (Hann) window evaluated at pixel centres,
    ``w(i) = floor + (1 - floor) * sin²(π (i + 0.5) / window)``, so weights fall
    smoothly towards the window's edges (no seams where windows meet) yet stay
    positive: pixels at the raster's border, seen only by a window's edge, still
    receive a prediction.

    Args:
        window: Window side in pixels.
        floor: Smallest weight, in (0, 1]; 1 gives plain averaging.

    Returns:
        float32 array of shape ``window`` x ``window``.

    Raises:
        ValueError: If ``floor`` is outside (0, 1].
    """
    if not 0 < floor <= 1:
        msg = f'floor must be in (0, 1], got {floor}'
        raise ValueError(msg)
    i = np.arange(window, dtype=np.float64)
    w1 = floor + (1 - floor) * np.sin(math.pi * (i + 0.5) / window) ** 2
    return np.outer(w1, w1).astype(np.float32)
