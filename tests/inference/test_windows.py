import numpy as np
import pytest

from torchgeo_ssg2.inference import WindowGrid, blend_weight


@pytest.mark.parametrize(
    ('height', 'width', 'window', 'overlap'),
    [
        (70, 90, 32, 8),
        (64, 64, 32, 0),
        (10, 500, 32, 16),
        (31, 33, 32, 4),
        (1, 1, 8, 0),
    ],
)
def test_grid_covers_raster(height: int, width: int, window: int, overlap: int) -> None:
    grid = WindowGrid(height, width, window, overlap)
    covered = np.zeros((height, width), dtype=int)
    offsets = list(grid)
    assert len(offsets) == len(grid)
    assert offsets == sorted(offsets)  # row-major
    assert [grid[i] for i in range(len(grid))] == offsets
    for row, col in offsets:
        assert row >= 0 and col >= 0
        h, w = grid.valid_shape(row, col)
        # windows never start past the edge; they end at it when the raster is big
        assert row + h <= height and col + w <= width
        if height >= window:
            assert h == window
        covered[row : row + h, col : col + w] += 1
    assert covered.min() >= 1


def test_grid_stride_and_last_window() -> None:
    grid = WindowGrid(100, 100, 32, 8)
    assert grid.stride == 24
    assert grid.row_offsets == [0, 24, 48, 68]
    assert grid.row_offsets[-1] + 32 == 100


def test_grid_small_raster_single_window() -> None:
    grid = WindowGrid(20, 50, 64, 16)
    assert list(grid) == [(0, 0)]
    assert grid.valid_shape(0, 0) == (20, 50)


@pytest.mark.parametrize(('window', 'overlap'), [(0, 0), (32, 32), (32, -1)])
def test_grid_rejects_bad_layout(window: int, overlap: int) -> None:
    with pytest.raises(ValueError, match=r'window|overlap'):
        WindowGrid(64, 64, window, overlap)


def test_grid_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        WindowGrid(64, 64, 32, 0)[4]


def test_blend_weight_smooth_positive_symmetric() -> None:
    w = blend_weight(32, floor=0.01)
    assert w.shape == (32, 32) and w.dtype == np.float32
    assert w.min() > 0
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1], rtol=1e-6)
    assert w[0, 0] < 1e-3 < w[16, 16]
    # no jump between neighbouring pixels larger than the cosine's slope allows
    assert np.abs(np.diff(w, axis=0)).max() < 0.11


def test_blend_weight_floor_one_is_uniform() -> None:
    np.testing.assert_array_equal(blend_weight(8, floor=1.0), np.ones((8, 8)))


def test_blend_weight_rejects_bad_floor() -> None:
    with pytest.raises(ValueError, match='floor'):
        blend_weight(8, floor=0)
