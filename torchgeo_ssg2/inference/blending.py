"""Weighted blending of overlapping window predictions in a strip of rows."""

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

__all__ = ('BlockSink', 'StripBlender')


def _as_tensor(value: Tensor | np.ndarray) -> Tensor:
    """A float32 tensor of a tensor (on its device) or array, shared where possible.

    Args:
        value: Tensor or array.

    Returns:
        float32 tensor (an array becomes a CPU tensor).
    """
    if isinstance(value, Tensor):
        return value.detach().to(torch.float32)
    return torch.from_numpy(np.asarray(value, dtype=np.float32))


class BlockSink(Protocol):
    """Receives finished rows of the blended prediction."""

    def write_block(
        self,
        row_off: int,
        probabilities: np.ndarray,
        uncertainty: np.ndarray | None,
        valid: np.ndarray | None = None,
    ) -> None:
        """Write rows ``row_off:row_off + n`` of the whole output width.

        The arrays are views of the blender's accumulator, reused once the call
        returns: a sink that keeps them must copy them.

        Args:
            row_off: First output row of the block.
            probabilities: float32 array KxnxW.
            uncertainty: float32 array nxW, or None.
            valid: bool array nxW, True where the input has data, or None (no
                nodata).
        """


class StripBlender:
    """Blend overlapping window predictions while holding only a strip of rows.

    Each window's probabilities (and optional uncertainty) are multiplied by a
    smooth weight and added into an accumulator together with the weight; a pixel's
    result is the weighted sum divided by the summed weight. Windows must arrive in
    row-major order (non-decreasing row offset): when a window starting at row ``r``
    arrives, every row above ``r`` is final, and finished blocks of ``block_rows``
    rows (aligned to multiples of ``block_rows``, the output's tile height) are
    normalised and handed to the sink. The accumulator is therefore a ring of
    ``window + block_rows`` rows (rounded up to whole blocks) of the full width,
    whatever the raster's height.

    With ``valid``, each window also carries which of its pixels have data in
    the input; every window covering a pixel says the same, so the blender keeps
    the value (no blending) and hands it to the sink with the block.

    With ``rows``, the blender produces only output rows ``start:stop`` (a strip
    of the raster): the parts of windows outside them are dropped, and blocks
    are counted from ``start``. Fed every window that touches those rows, in
    row-major order, it gives each of them the same values as a blender of the
    whole raster.

    Args:
        height: Output height in pixels.
        width: Output width in pixels.
        window: Window side in pixels.
        num_classes: Probability channels K per window.
        weight: Blending weight, window x window float32.
        sink: Receiver of finished blocks.
        block_rows: Rows per written block (the output's tile height).
        uncertainty: Whether windows carry an uncertainty map to blend as well.
        rows: ``(start, stop)`` output rows produced (default: all).
        valid: Whether windows carry a validity mask (the input's nodata).
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
        rows: tuple[int, int] | None = None,
        valid: bool = False,
    ) -> None:
        start, stop = (0, height) if rows is None else rows
        if not 0 <= start < stop <= height:
            msg = f'rows must lie in [0, {height}], got {start}:{stop}'
            raise ValueError(msg)
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
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.stop = stop
        # A ring of rows: output row ``y`` lives in row ``(y - start) % rows``. It
        # spans the rows a window can touch above the last unfinished block,
        # rounded up to whole blocks so that no block wraps around the end.
        rows = -(-(window + block_rows) // block_rows) * block_rows
        rows = min(stop - start, rows)
        channels = num_classes + int(uncertainty)
        # torch tensors on the CPU: the per-window multiply-add is one fused
        # operation on torch's intra-op threads (numpy would run it on one core
        # and need a temporary for the weighted window).
        #: Weighted sums, channels x rows x width, in ring order.
        self._acc = torch.zeros((channels, rows, width), dtype=torch.float32)
        self._wsum = torch.zeros((rows, width), dtype=torch.float32)
        #: Which pixels have data, rows x width in ring order (None: all do).
        self._valid = torch.zeros((rows, width), dtype=torch.bool) if valid else None
        self._weight = torch.from_numpy(self.weight)
        self._origin = start
        self._start = start
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
        valid: Tensor | np.ndarray | None = None,
    ) -> None:
        """Accumulate one window's prediction.

        Args:
            row_off: Row offset of the window in the output.
            col_off: Column offset of the window in the output.
            probabilities: Kxwindowxwindow probabilities (the part beyond the
                raster's edge is dropped).
            uncertainty: windowxwindow uncertainty, required when the blender was
                built with ``uncertainty=True``, ignored otherwise.
            valid: windowxwindow bool validity, required when the blender was
                built with ``valid=True``, ignored otherwise.

        Raises:
            ValueError: If windows arrive out of row-major order or shapes differ.
        """
        self.add_batch(
            [row_off],
            [col_off],
            probabilities[None],
            None if uncertainty is None else uncertainty[None],
            None if valid is None else valid[None],
        )

    def add_batch(
        self,
        row_offs: Sequence[int],
        col_offs: Sequence[int],
        probabilities: Tensor | np.ndarray,
        uncertainty: Tensor | np.ndarray | None = None,
        valid: Tensor | np.ndarray | None = None,
    ) -> None:
        """Accumulate the predictions of B windows, in the order given.

        The batch is moved to the CPU once; each window is then multiplied by
        the weight and added into the accumulator in one fused operation.

        Args:
            row_offs: Row offset of each window (B).
            col_offs: Column offset of each window (B).
            probabilities: BxKxwindowxwindow probabilities.
            uncertainty: Bxwindowxwindow uncertainty, required when the blender
                was built with ``uncertainty=True``, ignored otherwise.
            valid: Bxwindowxwindow bool validity, required when the blender was
                built with ``valid=True``, ignored otherwise.

        Raises:
            ValueError: If windows arrive out of row-major order or shapes differ.
        """
        probs = _as_tensor(probabilities)
        b = len(row_offs)
        expected = (b, self.num_classes, self.window, self.window)
        if tuple(probs.shape) != expected or len(col_offs) != b:
            msg = (
                f'expected probabilities of shape {expected} for {b} windows, got '
                f'{tuple(probs.shape)} and {len(col_offs)} column offsets'
            )
            raise ValueError(msg)
        if self.with_uncertainty:
            if uncertainty is None:
                msg = 'this blender needs an uncertainty map with every window'
                raise ValueError(msg)
            # the uncertainty goes into its own channel of the ring (no copy of
            # the batch to put it beside the probabilities)
            unc = _as_tensor(uncertainty).reshape(b, 1, self.window, self.window)
            channels = [(probs, 0), (unc, self.num_classes)]
        else:
            channels = [(probs, 0)]
        masks = None
        if self._valid is not None:
            if valid is None:
                msg = 'this blender needs a validity mask with every window'
                raise ValueError(msg)
            masks = torch.as_tensor(valid).cpu().to(torch.bool)
            if tuple(masks.shape) != (b, self.window, self.window):
                msg = f'expected validity of shape {(b, self.window, self.window)}'
                raise ValueError(msg)
        # brought to the CPU once per batch, not once per window
        channels = [(values.cpu(), first) for values, first in channels]
        for i, (row_off, col_off) in enumerate(zip(row_offs, col_offs, strict=True)):
            self._accumulate(
                int(row_off),
                int(col_off),
                [(v[i], first) for v, first in channels],
                None if masks is None else masks[i],
            )

    def _accumulate(
        self,
        row_off: int,
        col_off: int,
        channels: Sequence[tuple[Tensor, int]],
        valid: Tensor | None = None,
    ) -> None:
        """Add one window, times the weight, into the ring.

        Args:
            row_off: Row offset of the window in the output.
            col_off: Column offset of the window in the output.
            channels: float32 Cxwindowxwindow CPU tensors, each with the first
                ring channel it goes to (the K probabilities at 0, the
                uncertainty at K).
            valid: windowxwindow bool CPU tensor (blenders built with ``valid``).

        Raises:
            ValueError: If the window arrives out of row-major order.
        """
        if row_off < self._last_row_off:
            msg = (
                f'windows must arrive in row-major order: row {row_off} after '
                f'row {self._last_row_off}'
            )
            raise ValueError(msg)
        self._last_row_off = row_off
        self._flush_until(row_off)
        top = max(row_off, self._start) - row_off
        h = min(self.window, self.stop - row_off)
        if h <= top:
            return  # the window lies outside the rows produced
        w = min(self.window, self.width - col_off)
        weight = self._weight[top:h, :w]
        h -= top
        ring = self._wsum.shape[0]
        r = (row_off + top - self._origin) % ring
        cols = slice(col_off, col_off + w)
        n = min(h, ring - r)  # rows before the ring wraps around
        # (ring rows, window rows): the part before the wrap, then the rest
        spans = [(slice(r, r + n), slice(0, n))]
        if n < h:
            spans.append((slice(0, h - n), slice(n, h)))
        parts = [
            (self._acc[first : first + len(values)], values[:, top : top + h, :w])
            for values, first in channels
        ]
        if valid is not None:
            valid = valid[top : top + h, :w]
        for ring_rows, rows in spans:
            for acc, values in parts:
                acc[:, ring_rows, cols].addcmul_(values[:, rows], weight[rows])
            self._wsum[ring_rows, cols] += weight[rows]
            if valid is not None:
                assert self._valid is not None
                self._valid[ring_rows, cols] = valid[rows]

    def finish(self) -> None:
        """Flush every remaining row to the sink."""
        self._flush_until(self.stop)
        self._last_row_off = self.stop

    def _flush_until(self, row: int) -> None:
        """Hand finished blocks above ``row`` to the sink and shift the strip.

        Args:
            row: Rows above it receive no further windows.
        """
        while self._start < min(row, self.stop):
            end = min(self._start + self.block_rows, self.stop)
            if end > row:
                break  # windows starting at ``row`` or below still touch it
            n = end - self._start
            r = (self._start - self._origin) % self._wsum.shape[0]
            # Normalise in place: these rows of the accumulator are done with.
            blended = self._acc[:, r : r + n]
            wsum = self._wsum[r : r + n].clamp_min(torch.finfo(torch.float32).tiny)
            blended /= wsum
            values = blended.numpy()
            probs = values[: self.num_classes]
            unc = values[self.num_classes] if self.with_uncertainty else None
            valid = None if self._valid is None else self._valid[r : r + n]
            self.sink.write_block(
                self._start, probs, unc, None if valid is None else valid.numpy()
            )
            blended.zero_()
            self._wsum[r : r + n].zero_()
            if valid is not None:
                valid.zero_()
            self._start = end
