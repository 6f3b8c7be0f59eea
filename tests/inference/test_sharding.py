import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from inference_fakes import make_raster, record_opens

from torchgeo_ssg2.inference import (
    GeoTIFFSink,
    RasterMeta,
    StripBlender,
    WindowGrid,
    blend_weight,
    plan_parts,
)
from torchgeo_ssg2.inference.output import BlockBands, sweep_staging
from torchgeo_ssg2.inference.sharding import StripFile, merge_strips, shard, strip_path


def test_shard_largest_first_to_the_least_loaded() -> None:
    sizes = [5, 9, 1, 4]
    # 9 -> rank 0, 5 -> rank 1, 4 -> rank 1 (5 < 9), 1 -> rank 0 (9 = 9)
    ranks = shard(sizes, 2)
    assert ranks == [1, 0, 0, 1]
    assert [i for i, r in enumerate(ranks) if r == 0] == [1, 2]
    assert [i for i, r in enumerate(ranks) if r == 1] == [0, 3]
    assert shard(sizes, 1) == [0, 0, 0, 0]


def grids() -> dict[int, WindowGrid]:
    return {
        0: WindowGrid(400, 60, 32, 8),
        2: WindowGrid(40, 50, 32, 8),
        5: WindowGrid(64, 64, 32, 8),
    }


def check_strips(plan, grids: dict[int, WindowGrid], batch_size: int) -> None:
    """Strips tile the rows, cover their windows, in whole single-process batches."""
    for index, grid in grids.items():
        parts = sorted((p for _, p in plan if p.raster == index), key=lambda p: p.strip)
        assert [p.strip for p in parts] == list(range(parts[0].strips))
        owner = next(r for r, p in plan if p.raster == index and p.strip == 0)
        assert {p.owner for p in parts} == {owner}
        assert parts[0].rows[0] == 0 and parts[-1].rows[1] == grid.height
        for above, below in itertools.pairwise(parts):
            assert above.rows[1] == below.rows[0]
        for part in parts:
            lo, hi = part.windows
            assert lo % batch_size == 0
            assert hi % batch_size == 0 or hi == len(grid)
            touching = [
                i
                for i, (row, _) in enumerate(grid)
                if row < part.rows[1] and row + grid.window > part.rows[0]
            ]
            assert lo <= touching[0] and touching[-1] < hi


def test_plan_auto_cuts_rasters_larger_than_a_share() -> None:
    plan = plan_parts(grids(), 3, 2)
    strips = {p.raster: p.strips for _, p in plan}
    # raster 0 has 51 of the 64 windows, more than half: two strips
    assert strips == {0: 2, 2: 1, 5: 1}
    assert {r for r, p in plan if p.raster == 0} == {0, 1}
    check_strips(plan, grids(), 3)


def test_plan_modes() -> None:
    assert all(p.whole for _, p in plan_parts(grids(), 3, 1, 'strips'))
    assert all(p.whole for _, p in plan_parts(grids(), 3, 4, 'rasters'))
    plan = plan_parts(grids(), 4, 3, 'strips')
    assert {p.raster: p.strips for _, p in plan} == {0: 3, 2: 2, 5: 3}
    check_strips(plan, grids(), 4)
    # one raster on 4 ranks: a strip each
    plan = plan_parts({0: WindowGrid(1000, 40, 32, 8)}, 2, 4)
    assert sorted(r for r, _ in plan) == [0, 1, 2, 3]
    check_strips(plan, {0: WindowGrid(1000, 40, 32, 8)}, 2)
    with pytest.raises(ValueError, match='shard must be'):
        plan_parts(grids(), 3, 2, 'tiles')  # type: ignore[arg-type]


def predictions(grid: WindowGrid, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random, disagreeing window predictions: sums depend on their order."""
    rng = np.random.default_rng(0)
    w = grid.window
    return [
        (rng.random((k, w, w), dtype=np.float32), rng.random((w, w), dtype=np.float32))
        for _ in range(len(grid))
    ]


def test_strips_merge_to_the_bytes_of_one_blender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with nodata pixels, which each strip's rank masks for its own rows
    source = make_raster(tmp_path / 'in.tif', 300, 70, nodata=0, nodata_border=3)
    meta = RasterMeta.from_file(source)
    assert meta.has_mask
    grid = WindowGrid(meta.height, meta.width, 32, 12)
    weight = blend_weight(32)
    k, block = 3, 64
    preds = predictions(grid, k)
    options = {'probabilities': True, 'uncertainty': True, 'block_size': block}
    # the validity the windows carry from the input (RasterWindowDataset)
    with rasterio.open(source) as src:
        valid = np.pad(src.dataset_mask() != 0, ((0, 32), (0, 32)))
    assert not valid.all()
    masks = [valid[row : row + 32, col : col + 32] for row, col in grid]

    whole = GeoTIFFSink(meta, tmp_path / 'one.tif', k, **options)
    blender = StripBlender(
        300, 70, 32, k, weight, whole, block, uncertainty=True, valid=True
    )
    for (row, col), (p, u), ok in zip(grid, preds, masks, strict=True):
        blender.add(row, col, p, u, ok)
    blender.finish()
    one = whole.commit()

    plan = plan_parts({0: grid}, 5, 3, 'strips')
    strips = []
    for _, part in sorted(plan, key=lambda rp: rp[1].strip):
        path = strip_path(tmp_path / 'two.tif', part.strip)
        keys = ('classes', 'probabilities', 'uncertainty')
        sink = StripFile(path, part.rows, BlockBands(meta, k, keys))
        blender = StripBlender(
            300,
            70,
            32,
            k,
            weight,
            sink,
            block,
            uncertainty=True,
            rows=part.rows,
            valid=True,
        )
        for i in range(*part.windows):
            blender.add(*grid[i], *preds[i], masks[i])
        blender.finish()
        strips.append((sink.commit(), part.rows))
    assert len(strips) == 3
    opened = record_opens(monkeypatch)
    sink = GeoTIFFSink(meta, tmp_path / 'two.tif', k, sweep=False, **options)
    two = merge_strips(sink, strips, block)
    for role in ('classes', 'probabilities', 'uncertainty'):
        assert one[role].read_bytes() == two[role].read_bytes(), role
    # the owner writes the values the strips' ranks computed: it never opens
    # the input for its nodata mask
    assert opened and source not in opened


def test_strip_file_checks_its_rows(tmp_path: Path) -> None:
    meta = RasterMeta.from_file(make_raster(tmp_path / 'in.tif', 16, 5))
    probs = np.zeros((2, 4, 5), dtype=np.float32)
    strip = StripFile(
        tmp_path / 'a.tif.partial-1-strip0', (8, 16), BlockBands(meta, 2, ['classes'])
    )
    with pytest.raises(ValueError, match='in order'):
        strip.write_block(12, probs, None)
    strip.write_block(8, probs, None)
    with pytest.raises(RuntimeError, match='stops at row 12'):
        strip.commit()
    strip = StripFile(
        tmp_path / 'b.tif.partial-1-strip0', (0, 4), BlockBands(meta, 2, ['classes'])
    )
    strip.write_block(0, probs, None)
    strip.abort()
    assert not (tmp_path / 'b.tif.partial-1-strip0').exists()


def test_strip_file_is_never_an_input(tmp_path: Path) -> None:
    source = make_raster(tmp_path / 'in.tif', 8, 8)
    path = tmp_path / 'out.tif.partial-1-strip0'
    path.hardlink_to(source)
    bands = BlockBands(RasterMeta.from_file(source), 2, ['classes'])
    with pytest.raises(ValueError, match='the input raster'):
        StripFile(path, (0, 8), bands, {'input raster': source})
    assert source.exists()


def test_strips_of_a_dead_process_are_swept(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, '-c', 'import os; print(os.getpid())'],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    out = tmp_path / 'out.tif'
    stale = strip_path(out, 1, pid)
    mine = strip_path(out, 0)
    stale.write_bytes(b'x')
    mine.write_bytes(b'x')
    sweep_staging(out)
    assert not stale.exists() and mine.exists()
