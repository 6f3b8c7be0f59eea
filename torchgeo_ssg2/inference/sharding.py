"""Which rank predicts what: whole rasters, or strips of one raster's window rows.

Under DDP every rank computes the same plan (:func:`plan_parts`) without talking.
A part is a whole raster, whose rank writes its output directly, or a strip of
a raster's window rows. A strip produces a band of output rows and computes
every window that touches them, including the window rows above it that also
touch the strip above (its halo), in the batches of a single-process run. So
each output pixel receives the same window predictions, added in the same
order, as in one process, and the blended values are bit-for-bit the same. Each
rank turns the blended rows of its strips into the outputs' final values (class
indices with nodata, probabilities and uncertainty on request) and stages them
raw in a rank-private file (:class:`StripFile`,
``OUT.tif.partial-<pid>-strip<k>``); after a barrier, the rank of strip 0 (the
owner) compresses and writes the output from them, block by block in row order
(:func:`merge_strips`), and moves it into place as any output.

``shard="auto"`` cuts a raster into strips when it has more windows than a
rank's fair share of all windows (all windows / world size): one raster on two
ranks, or one raster much larger than the rest. ``"rasters"`` never cuts,
``"strips"`` cuts every raster into one strip per rank.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..staging import staging_path
from .output import BlockBands, GeoTIFFSink, check_output_free
from .windows import WindowGrid

__all__ = (
    'RasterPart',
    'ShardMode',
    'StripFile',
    'check_shard_mode',
    'merge_strips',
    'plan_parts',
    'shard',
    'strip_path',
)

#: How rasters are shared out between ranks.
ShardMode = Literal['auto', 'rasters', 'strips']


@dataclass(frozen=True)
class RasterPart:
    """The windows of one raster that one rank predicts.

    Args:
        raster: Index of the raster in the datamodule's ``rasters``.
        strip: Number of the strip, top to bottom (0 for a whole raster).
        strips: Strips of the raster (1: the part is the whole raster).
        rows: ``(start, stop)`` output rows the part produces.
        windows: ``(start, stop)`` window indices predicted, row-major: whole
            batches of a single-process run.
        owner: Rank that writes the raster's output (the rank of strip 0).
    """

    raster: int
    strip: int
    strips: int
    rows: tuple[int, int]
    windows: tuple[int, int]
    owner: int

    @property
    def whole(self) -> bool:
        """Whether the part is the whole raster."""
        return self.strips == 1

    def __len__(self) -> int:
        """Number of windows predicted."""
        return self.windows[1] - self.windows[0]


def check_shard_mode(mode: str) -> None:
    """Refuse an unknown ``shard`` mode.

    Args:
        mode: ``"auto"``, ``"rasters"`` or ``"strips"``.

    Raises:
        ValueError: If ``mode`` is none of them.
    """
    if mode not in ('auto', 'rasters', 'strips'):
        msg = f"shard must be 'auto', 'rasters' or 'strips', got {mode!r}"
        raise ValueError(msg)


def shard(sizes: Sequence[int], world_size: int) -> list[int]:
    """The rank of every item: largest first to the least loaded rank.

    Deterministic, so every rank computes the same assignment without talking.

    Args:
        sizes: Work of each item (its window count).
        world_size: Number of ranks.

    Returns:
        The rank of each item.
    """
    load = [0] * world_size
    ranks = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        load[r] += sizes[i]
        ranks[i] = r
    return ranks


def _strips(
    grid: WindowGrid, count: int, batch_size: int
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Cut a raster's window rows into strips of about equal window counts.

    Args:
        grid: The raster's windows.
        count: Strips wanted (fewer if the raster has fewer window rows).
        batch_size: Windows per batch.

    Returns:
        ``(rows, windows)`` of each strip, as in :class:`RasterPart`.
    """
    offsets = grid.row_offsets
    cols = len(grid.col_offsets)
    count = max(1, min(count, len(offsets)))
    firsts = [len(offsets) * s // count for s in range(count)]
    starts = [0] + [offsets[j] for j in firsts[1:]]
    stops = [*starts[1:], grid.height]
    parts = []
    for s in range(count):
        ends = firsts[s + 1] if s + 1 < count else len(offsets)
        # window rows that touch the strip's output rows, the halo above included
        first = next(j for j, r in enumerate(offsets) if r + grid.window > starts[s])
        lo = first * cols // batch_size * batch_size
        hi = min(-(-ends * cols // batch_size) * batch_size, len(grid))
        parts.append(((starts[s], stops[s]), (lo, hi)))
    return parts


def plan_parts(
    grids: Mapping[int, WindowGrid],
    batch_size: int,
    world_size: int,
    mode: ShardMode = 'auto',
) -> list[tuple[int, RasterPart]]:
    """Share the rasters out between ranks, cutting large ones into strips.

    Args:
        grids: Window layout of each raster to predict, by raster index.
        batch_size: Windows per batch.
        world_size: Number of ranks.
        mode: ``"auto"``, ``"rasters"`` or ``"strips"`` (see the module
            docstring).

    Returns:
        ``(rank, part)`` of every part, by raster and strip.

    Raises:
        ValueError: If ``mode`` is unknown.
    """
    check_shard_mode(mode)
    share = sum(len(g) for g in grids.values()) / world_size
    pieces: list[tuple[int, int, tuple[int, int], tuple[int, int]]] = []
    for index, grid in sorted(grids.items()):
        count = 1
        if world_size > 1 and mode == 'strips':
            count = world_size
        elif world_size > 1 and mode == 'auto' and len(grid) > share:
            count = min(world_size, math.ceil(len(grid) / share))
        strips = _strips(grid, count, batch_size) if count > 1 else []
        if len(strips) <= 1:
            strips = [((0, grid.height), (0, len(grid)))]
        pieces += [(index, len(strips), r, w) for r, w in strips]
    ranks = shard([w[1] - w[0] for *_, w in pieces], world_size)
    owners: dict[int, int] = {}
    for (index, *_), rank in zip(pieces, ranks, strict=True):
        owners.setdefault(index, rank)
    plan = []
    strip = 0
    for i, ((index, count, rows, windows), rank) in enumerate(
        zip(pieces, ranks, strict=True)
    ):
        strip = 0 if i == 0 or pieces[i - 1][0] != index else strip + 1
        part = RasterPart(index, strip, count, rows, windows, owners[index])
        plan.append((rank, part))
    return plan


def strip_path(output: Path, strip: int, pid: int | None = None) -> Path:
    """The staging file of one strip of an output.

    Args:
        output: The class-index output file.
        strip: Number of the strip.
        pid: Process id of the rank writing it (default: this process).

    Returns:
        ``OUT.tif.partial-<pid>-strip<k>``, swept with the output's other
        staging files (:func:`~torchgeo_ssg2.inference.output.sweep_staging`).
    """
    return staging_path(output, pid, suffix=f'-strip{strip}')


class StripFile:
    """The final output rows of one strip, staged raw in a rank-private file.

    Implements :class:`~torchgeo_ssg2.inference.blending.BlockSink`. The rank
    that blends the strip also computes what the output files take for its rows
    (:class:`~torchgeo_ssg2.inference.output.BlockBands`: class indices, and
    the probabilities and the uncertainty on request), so the owner only
    compresses and writes them. Row ``i`` of the strip is stored as one record
    of :meth:`BlockBands.row_dtype`, so any range of rows is one contiguous
    read.

    Args:
        path: The staging file (:func:`strip_path`).
        rows: ``(start, stop)`` output rows of the strip.
        bands: The outputs' values of a block of rows.
        protected: Inputs the file must not be, by role.

    Raises:
        ValueError: If the file is one of the inputs.
    """

    def __init__(
        self,
        path: Path,
        rows: tuple[int, int],
        bands: BlockBands,
        protected: Mapping[str, Path] | None = None,
    ) -> None:
        check_output_free({'strip': path}, True, protected)
        self.path = path
        self.rows = rows
        self.bands = bands
        self._next = rows[0]
        self._file: Any = open(path, 'wb')  # closed in commit and abort

    def write_block(
        self,
        row_off: int,
        probabilities: np.ndarray,
        uncertainty: np.ndarray | None,
        valid: np.ndarray | None = None,
    ) -> None:
        """Append rows ``row_off:row_off + n``.

        Args:
            row_off: First output row of the block (the row after the last one).
            probabilities: float32 KxnxW.
            uncertainty: float32 nxW, or None.
            valid: bool nxW, True where the input has data, or None.

        Raises:
            ValueError: If rows arrive out of order.
        """
        if row_off != self._next:
            msg = (
                f'strip rows must arrive in order: row {row_off}, expected {self._next}'
            )
            raise ValueError(msg)
        bands = self.bands(row_off, probabilities, uncertainty, valid)
        records = self.bands.to_records(bands)
        records.tofile(self._file)
        self._next += len(records)

    def commit(self) -> Path:
        """Close the file once every row is written.

        Returns:
            The file.

        Raises:
            RuntimeError: If rows are missing.
        """
        self._file.close()
        if self._next != self.rows[1]:
            msg = f'strip {self.path} stops at row {self._next}, not {self.rows[1]}'
            raise RuntimeError(msg)
        return self.path

    def abort(self) -> None:
        """Close and delete the file."""
        self._file.close()
        self.path.unlink(missing_ok=True)


def merge_strips(
    sink: GeoTIFFSink,
    strips: Sequence[tuple[Path, tuple[int, int]]],
    block_rows: int,
) -> dict[str, Path]:
    """Write an output from its strips, block by block in row order, and commit it.

    The blocks are those a single process writes (``block_rows`` rows from row
    0), so the files are byte-identical to a single-process run. Memory holds
    one block.

    Args:
        sink: The output's sink (opened with ``sweep=False``: other ranks'
            strip files are in place).
        strips: ``(file, rows)`` of every strip, top to bottom, covering the
            raster's rows.
        block_rows: Rows per written block (the output's tile height).

    Returns:
        The written files.
    """
    height = sink.meta.height
    row_dtype = sink.bands.row_dtype()
    try:
        for start in range(0, height, block_rows):
            stop = min(start + block_rows, height)
            block = np.empty(stop - start, dtype=row_dtype)
            for path, (lo, hi) in strips:
                a, b = max(start, lo), min(stop, hi)
                if a >= b:
                    continue
                rows = np.fromfile(
                    path,
                    dtype=row_dtype,
                    count=b - a,
                    offset=(a - lo) * row_dtype.itemsize,
                )
                if len(rows) != b - a:
                    msg = f'strip file {path} ends before row {b} of {sink.meta.path}'
                    raise RuntimeError(msg)
                block[a - start : b - start] = rows
            sink.write_bands(start, sink.bands.from_records(block))
        return sink.commit()
    except BaseException:
        sink.abort()
        raise
