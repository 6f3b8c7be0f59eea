"""Weighted blending of overlapping window predictions in a strip of rows."""

from typing import Protocol

import numpy as np
import torch
from torch import Tensor

__all__ = ('BlockSink', 'StripBlender')


class BlockSink(Protocol):
    """Receives finished rows of the blended prediction."""

    def write_block(
        self, row_off: int, probabilities: np.ndarray, uncertainty: np.ndarray | None
    ) -> None:
        """Write rows ``row_off:row_off + n`` of the whole output width.

        Args:
            row_off: First output row of the block.
            probabilities: float32 array KxnxW.
            uncertainty: float32 array nxW, or None.
        """


class StripBlender:
    """Blend overlapping window predictions while holding only a strip of rows.

    Each window's probabilities (and optional uncertainty) are multiplied by a
    smooth weight and added into an accumulator together with the weight; a pixel's
    result is the weighted sum divided by the summed weight. Windows must arrive in
    row-major order (non-decreasing row offset): when a window starting at row ``r``
    arrives, every row above ``r`` is final, and finished blocks of ``block_rows``
    rows (aligned to multiples of ``block_rows``, the output's tile height) are
    normalised and handed to the sink. The accumulator therefore spans only
    ``window + block_rows`` rows of the full width, whatever the raster's height.

    Args:
        height: Output height in pixels.
        width: Output width in pixels.
        window: Window side in pixels.
        num_classes: Probability channels K per window.
        weight: Blending weight, window x window float32.
        sink: Receiver of finished blocks.
        block_rows: Rows per written block (the output's tile height).
        uncertainty: Whether windows carry an uncertainty map to blend as well.
    """

    def __init__(
        self,
        height: int,
        width: int,
        window: int,
        num_classes: int,
        weight: np.ndarray,
        sink: BlockSink,
        block_rows: int = 256,
        uncertainty: bool = False,
    ) -> None:
        if weight.shape != (window, window):
            msg = f'weight must be {window}x{window}, got {weight.shape}'
            raise ValueError(msg)
        self.height = height
        self.width = width
        self.window = window
        self.num_classes = num_classes
        self.sink = sink
        self.block_rows = block_rows
        self.with_uncertainty = uncertainty
        self.weight = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
        rows = min(height, window + block_rows)
        channels = num_classes + int(uncertainty)
        #: Weighted sums, channels x rows x width; row i holds output row start + i.
        self._acc = torch.zeros(channels, rows, width, dtype=torch.float32)
        self._wsum = torch.zeros(rows, width, dtype=torch.float32)
        self._start = 0
        self._last_row_off = 0

    @property
    def rows_written(self) -> int:
        """Number of output rows already handed to the sink."""
        return self._start

    def add(
        self,
        row_off: int,
        col_off: int,
        probabilities: Tensor | np.ndarray,
        uncertainty: Tensor | np.ndarray | None = None,
    ) -> None:
        """Accumulate one window's prediction.

        Args:
            row_off: Row offset of the window in the output.
            col_off: Column offset of the window in the output.
            probabilities: Kxwindowxwindow probabilities (the part beyond the
                raster's edge is dropped).
            uncertainty: windowxwindow uncertainty, required when the blender was
                built with ``uncertainty=True``, ignored otherwise.

        Raises:
            ValueError: If windows arrive out of row-major order or shapes differ.
        """
        if row_off < self._last_row_off:
            msg = (
                f'windows must arrive in row-major order: row {row_off} after '
                f'row {self._last_row_off}'
            )
            raise ValueError(msg)
        probs = torch.as_tensor(probabilities).detach().to('cpu', torch.float32)
        if probs.shape != (self.num_classes, self.window, self.window):
            msg = (
                f'expected probabilities of shape '
                f'{(self.num_classes, self.window, self.window)}, got {tuple(probs.shape)}'
            )
            raise ValueError(msg)
        if self.with_uncertainty:
            if uncertainty is None:
                msg = 'this blender needs an uncertainty map with every window'
                raise ValueError(msg)
            unc = torch.as_tensor(uncertainty).detach().to('cpu', torch.float32)
            probs = torch.cat([probs, unc.reshape(1, self.window, self.window)])
        self._last_row_off = row_off
        self._flush_until(row_off)
        h = min(self.window, self.height - row_off)
        w = min(self.window, self.width - col_off)
        r = row_off - self._start
        weight = self.weight[:h, :w]
        self._acc[:, r : r + h, col_off : col_off + w].addcmul_(
            probs[:, :h, :w], weight
        )
        self._wsum[r : r + h, col_off : col_off + w].add_(weight)

    def finish(self) -> None:
        """Flush every remaining row to the sink."""
        self._flush_until(self.height)
        self._last_row_off = self.height

    def _flush_until(self, row: int) -> None:
        """Hand finished blocks above ``row`` to the sink and shift the strip.

        Args:
            row: Rows above it receive no further windows.
        """
        while self._start < min(row, self.height):
            end = min(self._start + self.block_rows, self.height)
            if end > row:
                break  # windows starting at ``row`` or below still touch it
            n = end - self._start
            # Normalise in place: these rows of the accumulator are done with.
            wsum = self._wsum[:n].clamp_min_(torch.finfo(torch.float32).tiny)
            blended = self._acc[:, :n].div_(wsum).numpy()
            probs = blended[: self.num_classes]
            unc = blended[self.num_classes] if self.with_uncertainty else None
            self.sink.write_block(self._start, probs, unc)
            self._shift(n)
            self._start = end

    def _shift(self, n: int) -> None:
        """Move the strip up by ``n`` rows and clear the freed rows at its end.

        Copies run chunk by chunk from the top, so no chunk overlaps its source
        and no temporary copy of the strip is made.

        Args:
            n: Rows just written.
        """
        rows = self._wsum.shape[0]
        for dst in range(0, rows - n, n):
            m = min(n, rows - n - dst)
            self._acc[:, dst : dst + m].copy_(self._acc[:, dst + n : dst + n + m])
            self._wsum[dst : dst + m].copy_(self._wsum[dst + n : dst + n + m])
        self._acc[:, rows - n :].zero_()
        self._wsum[rows - n :].zero_()
