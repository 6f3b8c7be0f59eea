"""Support policy and target sampler of GeoDatasets (torchgeo 0.10 GeoSlices).

Keys are windows ``(slice(xmin, xmax), slice(ymin, ymax))`` in CRS units,
snapped to the dataset's pixel grid.

* :class:`GeoSupportPolicy` draws the support windows of a target window.
* :class:`GeoEpisodeSampler` (a torchgeo ``SpatialSampler``) yields the target
  windows of an epoch as :class:`~torchgeo_ssg2.episodes.EpisodeIndex`
  ``(window, epoch)`` pairs.

Rules every support window obeys (checked on the snapped coordinates):

* it lies inside the support pool: the union of the dataset's file footprints,
  intersected with ``roi`` and with ``support_roi`` when given;
* it does not overlap its target: the gap between their edges is at least
  ``min_gap`` along x or along y (``min_gap=0`` allows touching edges).

Strategies (``strategy=``):

* ``'random'``: uniform over the pool (the paper's rule, without leaks).
* ``'near'``: centre distance to the target in ``[min_distance, max_distance]``.
* ``'stratified'``: the pool's bounding box is cut into a grid of strata (about
  T cells, or ``strata=(rows, cols)``); the supports come from distinct strata in
  random order, one draw per stratum, so they spread over the pool's area.
  Strata without a valid window are skipped.

Fallbacks (documented and deterministic): when ``'near'`` or ``'stratified'``
find no valid window, that support is drawn as for ``'random'``; when even
``'random'`` finds none, a clear error is raised (the pool cannot hold a window
that avoids the target).

Nodata: a file's footprint is its bounding box, so nodata *inside* a raster is
checked on read: :class:`~torchgeo_ssg2.episodes.EpisodeDataset` replaces a
support that is mostly nodata by the next spare window of the draw.

Reproducibility: target ``k`` of epoch ``e`` is drawn from
``SeedSequence([seed, e, k])``, and the supports of a target from
``SeedSequence([seed, e, col, row, 1])`` where ``(col, row)`` is the target's
pixel position; with ``fixed=True`` the epoch is ignored. Under DDP with
Lightning, leave ``num_replicas``/``rank`` of :class:`GeoEpisodeSampler` at
their defaults: Lightning wraps it in its ``DistributedSamplerWrapper``, which
splits the (rank-independent) target list across ranks and forwards
``set_epoch``. Outside Lightning, pass ``num_replicas`` and ``rank``: rank ``r``
then yields targets ``r, r + n, ...``.
"""

import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import shapely
from shapely import Polygon
from torchgeo.datasets import GeoDataset
from torchgeo.samplers import SpatialSampler, Units
from torchgeo.samplers.utils import convolution_arithmetic

from .protocol import EpisodeIndex, Window2D, check_epoch

__all__ = ('GeoEpisodeSampler', 'GeoStrategy', 'GeoSupportPolicy')

#: Names of the geo support strategies.
GeoStrategy = Literal['random', 'near', 'stratified']


def _window_size(
    size: tuple[float, float] | float, res: tuple[float, float], units: Units
) -> tuple[float, float]:
    """Window (height, width) in CRS units.

    Args:
        size: (height, width) or a single number, in *units*.
        res: (x, y) resolution of the dataset.
        units: Units of *size*.

    Returns:
        (height, width) in CRS units.

    Raises:
        ValueError: If a size is not positive.
    """
    h, w = (size, size) if isinstance(size, int | float) else size
    if h <= 0 or w <= 0:
        raise ValueError(f'size must be positive, got {size}')
    if units == Units.PIXELS:
        h, w = h * res[1], w * res[0]
    return float(h), float(w)


def _starts(first: float, last: float, step: float) -> list[float]:
    """Starts from *first* by *step*, the last one moved flush to *last*."""
    count = max(1, math.ceil((last - first) / step - 1e-6) + 1)
    starts = [first + k * step for k in range(count)]
    starts[-1] = max(first, last)
    return starts


class GeoSupportPolicy:
    """The :class:`~torchgeo_ssg2.episodes.SupportPolicy` of GeoDataset windows.

    Distances and gaps given in pixel units are scaled by the larger of the x and
    y resolutions.

    Args:
        dataset: The (labelled) GeoDataset the supports come from, e.g. an
            IntersectionDataset of images and masks.
        size: Window size (height, width) or a single number.
        sequence_length: Number of supports T.
        strategy: ``'random'``, ``'near'`` or ``'stratified'``.
        roi: Region of interest of the supports.
        support_roi: Further restricts the supports (e.g. the labelled training
            area while the targets cover a validation area).
        units: Units of *size*, *min_gap*, *min_distance* and *max_distance*.
        min_gap: Minimum gap between target and support edges.
        min_distance: ``'near'``: minimum centre distance.
        max_distance: ``'near'``: maximum centre distance (default three times
            the larger window side).
        strata: ``'stratified'``: grid (rows, cols) of strata (default: about T
            cells of the pool's aspect ratio).
        num_spares: Spare windows per draw (replacements for nodata supports;
            default T).
        seed: Seed of all draws.
        fixed: Ignore the epoch (validation, test, predict).

    Raises:
        ValueError: If an argument is invalid or the pool is empty.
    """

    def __init__(
        self,
        dataset: GeoDataset,
        *,
        size: tuple[float, float] | float,
        sequence_length: int,
        strategy: GeoStrategy = 'random',
        roi: Polygon | None = None,
        support_roi: Polygon | None = None,
        units: Units = Units.PIXELS,
        min_gap: float = 0.0,
        min_distance: float = 0.0,
        max_distance: float | None = None,
        strata: tuple[int, int] | None = None,
        num_spares: int | None = None,
        seed: int = 0,
        fixed: bool = False,
    ) -> None:
        if strategy not in ('random', 'near', 'stratified'):
            raise ValueError(
                f"unknown support strategy {strategy!r}: use 'random', 'near' or "
                "'stratified'"
            )
        if sequence_length < 1:
            raise ValueError(f'sequence_length must be >= 1, got {sequence_length}')
        if seed < 0:
            raise ValueError(f'seed must be >= 0, got {seed}')
        geometry = dataset.index.geometry.union_all()
        self.res: tuple[float, float] = (float(dataset.res[0]), float(dataset.res[1]))
        # Pixel grid origin: the dataset's footprint, before any roi.
        self.origin = (geometry.bounds[0], geometry.bounds[1])
        self.size = _window_size(size, self.res, units)
        scale = max(self.res) if units == Units.PIXELS else 1.0
        self.strategy: GeoStrategy = strategy
        self.sequence_length = int(sequence_length)
        self.min_gap = float(min_gap) * scale
        self.min_distance = float(min_distance) * scale
        self.max_distance = (
            3.0 * max(self.size) if max_distance is None else max_distance * scale
        )
        if self.min_gap < 0 or self.min_distance < 0:
            raise ValueError('min_gap and min_distance must be >= 0')
        if strategy == 'near' and self.max_distance <= self.min_distance:
            raise ValueError(
                f'max_distance ({self.max_distance}) must exceed min_distance '
                f'({self.min_distance}) in CRS units'
            )
        self.num_spares = self.sequence_length if num_spares is None else num_spares
        self.seed = int(seed)
        self.fixed = fixed

        self.pool = geometry
        if roi is not None:
            self.pool = self.pool & roi
        if support_roi is not None:
            self.pool = self.pool & support_roi
        if self.pool.is_empty:
            raise ValueError('the support pool (dataset footprint and roi) is empty')
        shapely.prepare(self.pool)

        if strata is None:
            px0, py0, px1, py1 = self.pool.bounds
            aspect = (px1 - px0) / max(py1 - py0, 1e-12)
            cols = max(1, round(math.sqrt(self.sequence_length * aspect)))
            rows = max(1, math.ceil(self.sequence_length / cols))
            strata = (rows, cols)
        if strata[0] < 1 or strata[1] < 1:
            raise ValueError(f'strata must be positive, got {strata}')
        self.strata = (int(strata[0]), int(strata[1]))

    # -- geometry helpers ---------------------------------------------------------

    def _snap(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Snap lower-left corners to the pixel grid."""
        xres, yres = self.res
        ox, oy = self.origin
        return (
            ox + np.round((x - ox) / xres) * xres,
            oy + np.round((y - oy) / yres) * yres,
        )

    def _boxes(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        h, w = self.size
        return shapely.box(x, y, x + w, y + h)

    def _gap(self, x: np.ndarray, y: np.ndarray, target: Window2D) -> np.ndarray:
        """Gap between the edges of windows at (x, y) and the target window."""
        h, w = self.size
        tx, ty = target
        gx = np.maximum(x - tx.stop, tx.start - (x + w))
        gy = np.maximum(y - ty.stop, ty.start - (y + h))
        return np.maximum(gx, gy)

    def _valid(self, x: np.ndarray, y: np.ndarray, target: Window2D) -> np.ndarray:
        """Whether windows at (x, y) are inside the pool and clear of the target."""
        # A tiny tolerance absorbs floating point error of the snapping.
        ok = self._gap(x, y, target) >= self.min_gap - 1e-9 * max(self.size)
        if ok.any():
            ok[ok] = shapely.covered_by(self._boxes(x[ok], y[ok]), self.pool)
        return ok

    def _window(self, x: float, y: float) -> Window2D:
        h, w = self.size
        return slice(float(x), float(x + w)), slice(float(y), float(y + h))

    # -- supports -----------------------------------------------------------------

    def _candidates(
        self, rng: np.random.Generator, target: Window2D, count: int, region: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Unfiltered, snapped candidate lower-left corners of one strategy."""
        h, w = self.size
        if region == 'near':
            tx, ty = target
            cx, cy = (tx.start + tx.stop) / 2, (ty.start + ty.stop) / 2
            r0, r1 = self.min_distance, self.max_distance
            r = np.sqrt(rng.uniform(r0 * r0, r1 * r1, count))
            theta = rng.uniform(0, 2 * math.pi, count)
            x = cx + r * np.cos(theta) - w / 2
            y = cy + r * np.sin(theta) - h / 2
        else:
            x0, y0, x1, y1 = self.pool.bounds
            x = rng.uniform(x0, max(x0, x1 - w), count)
            y = rng.uniform(y0, max(y0, y1 - h), count)
        return self._snap(x, y)

    def _near_ok(self, x: np.ndarray, y: np.ndarray, target: Window2D) -> np.ndarray:
        h, w = self.size
        tx, ty = target
        d = np.hypot(
            x + w / 2 - (tx.start + tx.stop) / 2, y + h / 2 - (ty.start + ty.stop) / 2
        )
        return (d >= self.min_distance) & (d <= self.max_distance)

    def _draw_many(
        self,
        rng: np.random.Generator,
        target: Window2D,
        region: str,
        count: int,
        out: list[Window2D],
        rounds: int,
    ) -> None:
        """Append up to *count* distinct valid windows of a strategy to *out*.

        Candidates are drawn in vectorised rounds; valid ones are taken in draw
        order, skipping windows already in *out*.
        """
        seen = {(w[0].start, w[1].start) for w in out}
        goal = len(out) + count
        batch = max(32, 4 * count)
        for _ in range(rounds):
            x, y = self._candidates(rng, target, batch, region)
            ok = self._valid(x, y, target)
            if region == 'near':
                ok &= self._near_ok(x, y, target)
            for xi, yi in zip(x[ok].tolist(), y[ok].tolist(), strict=True):
                if (xi, yi) not in seen:
                    seen.add((xi, yi))
                    out.append(self._window(xi, yi))
                    if len(out) == goal:
                        return

    def _strata_boxes(self) -> np.ndarray:
        """Strata of the pool's bounding box, shape (rows * cols, 4)."""
        x0, y0, x1, y1 = self.pool.bounds
        rows, cols = self.strata
        dx, dy = (x1 - x0) / cols, (y1 - y0) / rows
        i, j = np.divmod(np.arange(rows * cols), cols)
        return np.stack(
            [x0 + j * dx, y0 + i * dy, x0 + (j + 1) * dx, y0 + (i + 1) * dy], axis=1
        )

    def _draw_stratified(
        self, rng: np.random.Generator, target: Window2D, count: int
    ) -> list[Window2D]:
        """One window per stratum, strata in random order; cycles if needed."""
        h, w = self.size
        boxes = self._strata_boxes()[rng.permutation(len(self.strata_cells))]
        out: list[Window2D] = []
        seen: set[tuple[float, float]] = set()
        alive = np.ones(len(boxes), dtype=bool)
        per = 32
        while len(out) < count and alive.any():
            live = boxes[alive]
            n = len(live)
            cx = rng.uniform(live[:, 0, None], live[:, 2, None], (n, per))
            cy = rng.uniform(live[:, 1, None], live[:, 3, None], (n, per))
            x, y = self._snap(cx - w / 2, cy - h / 2)
            ok = self._valid(x.ravel(), y.ravel(), target).reshape(n, per)
            # Snapping may move a centre out of its stratum: keep it inside.
            mx, my = x + w / 2, y + h / 2
            ok &= (mx >= live[:, 0, None]) & (mx < live[:, 2, None])
            ok &= (my >= live[:, 1, None]) & (my < live[:, 3, None])
            found = ok.any(axis=1)
            first = ok.argmax(axis=1)
            for k in range(n):
                if found[k] and len(out) < count:
                    key = (float(x[k, first[k]]), float(y[k, first[k]]))
                    if key not in seen:
                        seen.add(key)
                        out.append(self._window(*key))
            # Strata with no valid window in a whole round are dropped.
            alive[np.flatnonzero(alive)[~found]] = False
        return out

    @property
    def strata_cells(self) -> range:
        """Indices of the strata (rows * cols)."""
        return range(self.strata[0] * self.strata[1])

    def draw(
        self, target: Window2D, epoch: int = 0, count: int | None = None
    ) -> list[Window2D]:
        """Support (and spare) windows of one target.

        Args:
            target: The target window ``(slice(x0, x1), slice(y0, y1))``.
            epoch: The epoch (ignored when ``fixed``).
            count: Number of windows (default T + ``num_spares``).

        Returns:
            *count* windows obeying the module's rules, distinct unless the pool
            holds fewer; the first T are the supports.

        Raises:
            ValueError: If the pool holds no window that keeps the gap.
        """
        tx, ty = target[0], target[1]
        count = self.sequence_length + self.num_spares if count is None else count
        xres, yres = self.res
        col = round((tx.start - self.origin[0]) / xres)
        row = round((ty.start - self.origin[1]) / yres)
        e = 0 if self.fixed else check_epoch(epoch)
        rng = np.random.default_rng(
            np.random.SeedSequence([self.seed, e, col % 2**63, row % 2**63, 1])
        )
        target = (tx, ty)
        out: list[Window2D] = []
        if self.strategy == 'stratified':
            out = self._draw_stratified(rng, target, count)
        elif self.strategy == 'near':
            self._draw_many(rng, target, 'near', count, out, rounds=20)
        if len(out) < count:  # 'random', and the fallback of the others
            self._draw_many(rng, target, 'random', count - len(out), out, rounds=50)
        if not out:
            raise ValueError(
                f'the support pool holds no window of size {self.size} that keeps '
                f'a gap of {self.min_gap} from the target {target}'
            )
        # A pool with fewer distinct windows than needed: repeat them.
        n = len(out)
        out += [out[i % n] for i in range(count - n)]
        return out


class GeoEpisodeSampler(SpatialSampler):
    """Yields the target windows of an epoch as ``(window, epoch)`` pairs.

    Targets are drawn uniformly among the windows inside the sampling region, new
    every epoch (Lightning calls :meth:`set_epoch`); or, with ``grid=True``, they
    are the windows of a grid of step *size* over every part of the region, the
    last row and column moved flush with the part's border, kept when they lie
    inside the region (validation and test: no window reaches into another
    split); or they are taken from another spatial sampler (*targets*), in its
    order.

    Args:
        dataset: The GeoDataset to sample from.
        size: Window size (height, width) or a single number.
        length: Number of targets per epoch (default: about the number of
            non-overlapping windows in the region). Ignored with *targets*.
        roi: Region of interest of the targets.
        targets: Another spatial sampler that gives the target windows.
        grid: Targets on a grid inside the region (ignores *length*).
        units: Units of *size*.
        seed: Seed of the target draws.
        fixed: Ignore the epoch (the same targets every epoch).
        num_replicas: Number of ranks to split the targets over (see the module
            docstring; leave at 1 under Lightning).
        rank: This process's rank.

    Raises:
        ValueError: If an argument is invalid or the region is empty.
    """

    strategy = 'random'

    def __init__(
        self,
        dataset: GeoDataset,
        *,
        size: tuple[float, float] | float,
        length: int | None = None,
        roi: Polygon | None = None,
        targets: SpatialSampler | None = None,
        grid: bool = False,
        units: Units = Units.PIXELS,
        seed: int = 0,
        fixed: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(dataset, roi=roi)
        if grid and targets is not None:
            raise ValueError('give targets or grid=True, not both')
        if not 0 <= rank < num_replicas:
            raise ValueError(f'rank {rank} not in [0, {num_replicas})')
        if seed < 0:
            raise ValueError(f'seed must be >= 0, got {seed}')
        if self.geometry.is_empty:
            raise ValueError('the sampling region (dataset footprint and roi) is empty')
        shapely.prepare(self.geometry)
        self.size = _window_size(size, self.res, units)
        self.origin = (self.bounds[0], self.bounds[1])
        self.seed = int(seed)
        self.fixed = fixed
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self.targets = targets
        self._grid = self._grid_windows() if grid else None
        # torchgeo's notion of strategy (for SpatioTemporalSampler).
        sequential = grid or (targets is not None and targets.strategy == 'sequential')
        self.strategy = 'sequential' if sequential else 'random'  # type: ignore[misc]
        if self._grid is not None:
            self._num_targets = len(self._grid)
        elif targets is None:
            area = shapely.area(self.geometry)
            self._num_targets = length or convolution_arithmetic(
                area, self.size[0] * self.size[1]
            )
        else:
            self._num_targets = len(targets)
        self._length = len(range(self.rank, self._num_targets, self.num_replicas))

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the draws.

        Args:
            epoch: The epoch (>= 0).
        """
        self.epoch = check_epoch(epoch)

    def _snap(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Snap lower-left corners to the pixel grid."""
        xres, yres = self.res
        ox, oy = self.origin
        return (
            ox + np.round((x - ox) / xres) * xres,
            oy + np.round((y - oy) / yres) * yres,
        )

    def _grid_windows(self) -> list[Window2D]:
        """Grid windows inside the region, part by part, rows then columns."""
        h, w = self.size
        xres, yres = self.res
        ox, oy = self.origin
        tol = 1e-6 * max(self.size)
        parts = getattr(self.geometry, 'geoms', [self.geometry])
        out: list[Window2D] = []
        seen: set[tuple[float, float]] = set()
        for part in parts:
            x0, y0, x1, y1 = part.bounds
            # Snap inwards to the pixel grid.
            gx0 = ox + math.ceil((x0 - ox) / xres - 1e-6) * xres
            gy0 = oy + math.ceil((y0 - oy) / yres - 1e-6) * yres
            gx1 = ox + math.floor((x1 - w - ox) / xres + 1e-6) * xres
            gy1 = oy + math.floor((y1 - h - oy) / yres + 1e-6) * yres
            if gx1 < gx0 - tol or gy1 < gy0 - tol:
                continue
            xs = _starts(gx0, gx1, w)
            ys = _starts(gy0, gy1, h)[::-1]  # top row first
            for y in ys:
                for x in xs:
                    box = shapely.box(x + tol, y + tol, x + w - tol, y + h - tol)
                    if (x, y) not in seen and shapely.covered_by(box, self.geometry):
                        seen.add((x, y))
                        out.append((slice(x, x + w), slice(y, y + h)))
        return out

    def _draw_target(self, k: int, epoch: int) -> Window2D:
        """Draw target number *k* uniformly among windows inside the region."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, k]))
        h, w = self.size
        x0, y0, x1, y1 = self.geometry.bounds
        for _ in range(100):
            x = rng.uniform(x0, max(x0, x1 - w), 64)
            y = rng.uniform(y0, max(y0, y1 - h), 64)
            x, y = self._snap(x, y)
            inside = shapely.covered_by(shapely.box(x, y, x + w, y + h), self.geometry)
            if inside.any():
                i = int(np.argmax(inside))
                return slice(float(x[i]), float(x[i] + w)), slice(
                    float(y[i]), float(y[i] + h)
                )
        raise ValueError(
            f'no window of size {self.size} (CRS units) fits inside the sampling region'
        )

    def target_windows(self, epoch: int | None = None) -> list[Window2D]:
        """All target windows of an epoch (every rank's, in order).

        Args:
            epoch: The epoch (defaults to the current one).

        Returns:
            The target windows.
        """
        e = 0 if self.fixed else check_epoch(self.epoch if epoch is None else epoch)
        if self._grid is not None:
            return list(self._grid)
        if self.targets is not None:
            return [(t[0], t[1]) for t in self.targets]  # type: ignore[index]
        return [self._draw_target(k, e) for k in range(self._num_targets)]

    def __iter__(self) -> Iterator[EpisodeIndex]:  # type: ignore[override]
        """Iterate over this rank's targets of the current epoch.

        Yields:
            ``(window, epoch)`` pairs.
        """
        epoch = 0 if self.fixed else self.epoch
        if self.targets is not None or self._grid is not None:
            windows = self.target_windows(epoch)
            for k in range(self.rank, len(windows), self.num_replicas):
                yield EpisodeIndex(windows[k], epoch)
        else:
            for k in range(self.rank, self._num_targets, self.num_replicas):
                yield EpisodeIndex(self._draw_target(k, epoch), epoch)

    def __len__(self) -> int:
        """Number of targets this rank yields per epoch."""
        return self._length
