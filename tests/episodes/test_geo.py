import math
from typing import Any, NamedTuple

import numpy as np
import pytest
import shapely
from geo_fakes import RES, X0, Y0
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from torchgeo.datasets import RasterDataset
from torchgeo.samplers import GriddedPatchSampler, Units

from torchgeo_ssg2.episodes import (
    EpisodeIndex,
    GeoEpisodeSampler,
    GeoSupportPolicy,
    SupportPolicy,
)

SIZE = 16  # pixels
W = SIZE * RES  # CRS units


class Episode(NamedTuple):
    target: tuple[slice, slice]
    supports: tuple[tuple[slice, slice], ...]
    spares: tuple[tuple[slice, slice], ...]


class Geo(NamedTuple):
    sampler: GeoEpisodeSampler
    policy: GeoSupportPolicy

    def episodes(self) -> list[Episode]:
        out = []
        for index in self.sampler:
            assert isinstance(index, EpisodeIndex)
            keys = self.policy.draw(index.target, index.epoch)
            t = self.policy.sequence_length
            out.append(Episode(index.target, tuple(keys[:t]), tuple(keys[t:])))
        return out


SAMPLER_ARGS = ('length', 'targets', 'fixed', 'num_replicas', 'rank')


def make(dataset: RasterDataset, *, size: float = SIZE, **kwargs: Any) -> Geo:
    """Target sampler and support policy with the same seed, roi and units."""
    sampler_kwargs = {k: kwargs.pop(k) for k in SAMPLER_ARGS if k in kwargs}
    shared = {k: kwargs[k] for k in ('seed', 'roi', 'units') if k in kwargs}
    if 'fixed' in sampler_kwargs:
        kwargs['fixed'] = sampler_kwargs['fixed']
    sampler = GeoEpisodeSampler(dataset, size=size, **shared, **sampler_kwargs)
    return Geo(sampler, GeoSupportPolicy(dataset, size=size, **kwargs))


def box(window: tuple[slice, slice]) -> shapely.Polygon:
    x, y = window
    return shapely.box(x.start, y.start, x.stop, y.stop)


def edge_gap(a: tuple[slice, slice], b: tuple[slice, slice]) -> float:
    gx = max(a[0].start - b[0].stop, b[0].start - a[0].stop)
    gy = max(a[1].start - b[1].stop, b[1].start - a[1].stop)
    return max(gx, gy)


def centre(window: tuple[slice, slice]) -> tuple[float, float]:
    return (window[0].start + window[0].stop) / 2, (
        window[1].start + window[1].stop
    ) / 2


def on_grid(value: float, origin: float) -> bool:
    steps = (value - origin) / RES
    return abs(steps - round(steps)) < 1e-6


def check_common(
    geo: Geo,
    episodes: list[Episode],
    footprint: shapely.Geometry,
    min_gap_crs: float,
) -> None:
    sampler = geo.policy
    origin_x, origin_y = sampler.origin
    for ep in episodes:
        assert box(ep.target).covered_by(footprint)
        assert len(ep.supports) == sampler.sequence_length
        assert len(ep.spares) == sampler.num_spares
        starts = {(w[0].start, w[1].start) for w in ep.supports + ep.spares}
        assert len(starts) == len(ep.supports) + len(ep.spares)
        for w in ep.supports + ep.spares:
            assert w[0].stop - w[0].start == pytest.approx(W)
            assert w[1].stop - w[1].start == pytest.approx(W)
            assert box(w).covered_by(footprint)
            assert edge_gap(w, ep.target) >= min_gap_crs - 1e-6
            assert not box(w).intersection(box(ep.target)).area > 0
            assert on_grid(w[0].start, origin_x) and on_grid(w[1].start, origin_y)


@pytest.mark.parametrize('strategy', ['random', 'near', 'stratified'])
@pytest.mark.parametrize('min_gap', [0, 5])
def test_no_overlap_property(
    two_rasters: RasterDataset, strategy: str, min_gap: int
) -> None:
    sampler = make(
        two_rasters,
        size=SIZE,
        sequence_length=4,
        strategy=strategy,  # type: ignore[arg-type]
        length=100,
        min_gap=min_gap,
        max_distance=60,
        seed=3,
    )
    episodes = sampler.episodes()
    assert len(episodes) == 100
    footprint = two_rasters.index.geometry.union_all()
    check_common(sampler, episodes, footprint, min_gap * RES)
    if strategy == 'near':
        for ep in episodes:
            for w in ep.supports:
                (cx, cy), (tx, ty) = centre(w), centre(ep.target)
                assert math.hypot(cx - tx, cy - ty) <= 60 * RES + 1e-6


def test_near_is_near_and_random_is_not(two_rasters: RasterDataset) -> None:
    def mean_distance(strategy: str) -> float:
        sampler = make(
            two_rasters,
            size=SIZE,
            sequence_length=4,
            strategy=strategy,  # type: ignore[arg-type]
            length=50,
            min_distance=20,
            max_distance=40,
            seed=0,
        )
        d = [
            math.dist(centre(w), centre(ep.target))
            for ep in sampler.episodes()
            for w in ep.supports
        ]
        if strategy == 'near':
            assert min(d) >= 20 * RES - 1e-6
        return float(np.mean(d))

    assert mean_distance('near') < 40 * RES < mean_distance('random')


def test_stratified_spreads(two_rasters: RasterDataset) -> None:
    sampler = make(
        two_rasters,
        size=SIZE,
        sequence_length=4,
        strategy='stratified',
        strata=(2, 2),
        num_spares=0,
        length=100,
        seed=1,
    )
    x0, y0, x1, y1 = sampler.policy.pool.bounds
    for ep in sampler.episodes():
        cells = set()
        for w in ep.supports:
            cx, cy = centre(w)
            cells.add((int(2 * (cx - x0) / (x1 - x0)), int(2 * (cy - y0) / (y1 - y0))))
        assert len(cells) == 4


def test_roi(two_rasters: RasterDataset) -> None:
    roi = shapely.box(X0 + 20 * RES, Y0 - 100 * RES, X0 + 150 * RES, Y0)
    for strategy in ('random', 'near', 'stratified'):
        sampler = make(
            two_rasters,
            size=SIZE,
            sequence_length=3,
            strategy=strategy,  # type: ignore[arg-type]
            length=40,
            roi=roi,
            seed=2,
        )
        check_common(sampler, sampler.episodes(), roi, 0.0)


def test_support_roi(two_rasters: RasterDataset) -> None:
    support_roi = shapely.box(X0 + 230 * RES, Y0 - 100 * RES, X0 + 330 * RES, Y0)
    sampler = make(
        two_rasters, size=SIZE, sequence_length=3, length=30, support_roi=support_roi
    )
    for ep in sampler.episodes():
        assert all(box(w).covered_by(support_roi) for w in ep.supports)


def test_determinism_epochs_and_ranks(two_rasters: RasterDataset) -> None:
    def geo(**kwargs: object) -> Geo:
        return make(
            two_rasters, size=SIZE, sequence_length=3, length=20, seed=5, **kwargs
        )

    a, b = geo(), geo()
    assert isinstance(a.policy, SupportPolicy)
    assert a.episodes() == b.episodes()
    first = a.episodes()
    a.sampler.set_epoch(1)
    second = a.episodes()
    assert first != second
    fixed = geo(fixed=True)
    before = fixed.episodes()
    fixed.sampler.set_epoch(7)
    assert fixed.episodes() == before
    # A pure function of (seed, epoch, target): the order of the calls is free.
    targets = [ep.target for ep in second]
    forward = [a.policy.draw(t, 1) for t in targets]
    assert [a.policy.draw(t, 1) for t in reversed(targets)] == forward[::-1]
    assert forward != [a.policy.draw(t, 2) for t in targets]

    # Supports depend on the target and epoch only, not on the rank.
    ranks = [geo(num_replicas=2, rank=r) for r in range(2)]
    for r in ranks:
        r.sampler.set_epoch(1)
    shares = [r.episodes() for r in ranks]
    assert len(shares[0]) == len(shares[1]) == 10
    assert sorted(shares[0] + shares[1], key=str) == sorted(second, key=str)
    for ep in shares[1]:
        keys = a.policy.draw(ep.target, 1)
        assert tuple(keys) == ep.supports + ep.spares


def test_targets_from_gridded_sampler(two_rasters: RasterDataset) -> None:
    grid = GriddedPatchSampler(two_rasters, size=SIZE * 4)
    sampler = make(
        two_rasters, size=SIZE * 4, sequence_length=2, targets=grid, fixed=True
    )
    episodes = sampler.episodes()
    assert len(episodes) == len(sampler.sampler) == len(grid)
    assert [ep.target for ep in episodes] == [(x, y) for x, y in grid]
    # torchgeo's notion of strategy, from the grid
    assert sampler.sampler.strategy == 'sequential'
    assert make(two_rasters, sequence_length=1).sampler.strategy == 'random'


def test_fallback_near_to_random(two_rasters: RasterDataset) -> None:
    # The annulus lies outside the footprint for every target: falls back.
    sampler = make(
        two_rasters,
        size=SIZE,
        sequence_length=2,
        strategy='near',
        min_distance=2000,
        max_distance=3000,
        length=5,
    )
    footprint = two_rasters.index.geometry.union_all()
    check_common(sampler, sampler.episodes(), footprint, 0.0)


def test_errors(two_rasters: RasterDataset) -> None:
    with pytest.raises(ValueError, match='unknown support strategy'):
        make(two_rasters, size=SIZE, sequence_length=2, strategy='x')  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='sequence_length'):
        make(two_rasters, size=SIZE, sequence_length=0)
    with pytest.raises(ValueError, match='max_distance'):
        make(
            two_rasters,
            size=SIZE,
            sequence_length=2,
            strategy='near',
            min_distance=10,
            max_distance=5,
        )
    with pytest.raises(ValueError, match='empty'):
        make(two_rasters, size=SIZE, sequence_length=2, roi=shapely.box(0, 0, 1, 1))
    # A window too large for a non-overlapping support.
    sampler = make(
        two_rasters, size=100 * RES, sequence_length=1, units=Units.CRS, length=1
    )
    with pytest.raises(ValueError, match='holds no window'):
        sampler.episodes()


def test_lightning_distributed_wrapper(two_rasters: RasterDataset) -> None:
    """Under Lightning DDP the sampler is wrapped; shares must be disjoint."""
    sampler = make(two_rasters, size=SIZE, sequence_length=2, length=12).sampler
    shares = []
    for rank in range(2):
        wrapped = DistributedSamplerWrapper(
            sampler, num_replicas=2, rank=rank, shuffle=True, seed=0
        )
        wrapped.set_epoch(3)  # forwarded to our sampler
        shares.append(list(wrapped))
    assert sampler.epoch == 3
    assert len(shares[0]) == len(shares[1]) == 6
    assert all(index.epoch == 3 for share in shares for index in share)
    reference = list(sampler)
    assert sorted(shares[0] + shares[1], key=str) == sorted(reference, key=str)
    targets = [[index.target for index in share] for share in shares]
    assert not set(map(str, targets[0])) & set(map(str, targets[1]))


def test_grid_targets_stay_inside(two_rasters: RasterDataset) -> None:
    # An L-shaped region over the first raster, and the whole second raster.
    roi = shapely.union_all(
        [
            shapely.box(X0, Y0 - 60 * RES, X0 + 200 * RES, Y0),
            shapely.box(X0, Y0 - 120 * RES, X0 + 40 * RES, Y0),
            shapely.box(X0 + 230 * RES, Y0 - 100 * RES, X0 + 330 * RES, Y0),
        ]
    )
    sampler = GeoEpisodeSampler(two_rasters, size=SIZE, roi=roi, grid=True)
    windows = [index.target for index in sampler]
    assert len(windows) == len(sampler) > 0
    assert sampler.strategy == 'sequential'
    region = two_rasters.index.geometry.union_all() & roi
    for w in windows:
        assert box(w).covered_by(region.buffer(1e-6))
        assert on_grid(w[0].start, X0) and on_grid(w[1].start, Y0 - 120 * RES)
    # Windows of one part tile it: together they cover the part exactly.
    second = [w for w in windows if w[0].start >= X0 + 230 * RES]
    assert shapely.union_all([box(w) for w in second]).area == pytest.approx(
        (100 * RES) ** 2
    )
    # Fixed: the same windows every epoch.
    sampler.set_epoch(4)
    assert [index.target for index in sampler] == windows
    with pytest.raises(ValueError, match='not both'):
        GeoEpisodeSampler(
            two_rasters,
            size=SIZE,
            grid=True,
            targets=GriddedPatchSampler(two_rasters, size=SIZE),
        )
