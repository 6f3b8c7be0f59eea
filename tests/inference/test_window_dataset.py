from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from inference_fakes import make_raster
from rasterio.transform import Affine

from torchgeo_ssg2.inference import RasterWindowDataset


def strip_raster(path: Path, height: int, width: int, rows_per_strip: int) -> Path:
    """A striped (untiled) float32 GeoTIFF with ``rows_per_strip`` rows per block."""
    rng = np.random.default_rng(3)
    data = rng.normal(100, 30, size=(2, height, width)).astype('float32')
    data[0, 5, 7] = np.nan
    profile = {
        'driver': 'GTiff',
        'height': height,
        'width': width,
        'count': 2,
        'dtype': 'float32',
        'blockysize': rows_per_strip,
    }
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(data)
    with rasterio.open(path) as src:
        assert src.block_shapes[0] == (rows_per_strip, width)
    return path


@pytest.mark.parametrize(
    ('kind', 'dtype'),
    [
        ('tiled', 'uint8'),
        ('tiled', 'int32'),
        ('tiled', 'float64'),
        ('untiled', 'uint16'),
    ],
)
def test_row_cache_gives_the_windows_read_alone(
    tmp_path: Path, kind: str, dtype: str
) -> None:
    path = make_raster(
        tmp_path / 'in.tif', 75, 61, dtype=dtype, tiled=kind == 'tiled', seed=4
    )
    dataset = RasterWindowDataset(path, window=24, overlap=7, mean=90.0, std=40.0)
    for row_off, col_off in dataset.grid:
        cached = dataset.read_window(row_off, col_off, cached=True)
        alone = dataset.read_window(row_off, col_off)
        assert cached.dtype == alone.dtype == np.float32
        np.testing.assert_array_equal(cached, alone)
    dataset.close()


@pytest.mark.parametrize('rows_per_strip', [1, 5, 20])
def test_row_cache_with_short_and_tall_blocks(
    tmp_path: Path, rows_per_strip: int
) -> None:
    path = strip_raster(tmp_path / 'in.tif', 70, 50, rows_per_strip)
    dataset = RasterWindowDataset(path, window=16, overlap=4, mean=100.0, std=30.0)
    # forwards, then backwards: the cache is refilled where it cannot help
    order = list(range(len(dataset))) + list(reversed(range(len(dataset))))
    for index in order:
        row_off, col_off = dataset.grid[index]
        image = dataset[index]['image'].numpy()
        np.testing.assert_array_equal(image, dataset.read_window(row_off, col_off))
        rows = dataset._rows
        assert rows is not None
        # at most a window plus one block (a window where blocks are taller)
        assert rows.rows.shape[1] <= 16 + (
            rows_per_strip if rows_per_strip <= 16 else 0
        )
    assert np.isfinite(dataset[0]['image'].numpy()).all()
    dataset.close()


@pytest.mark.parametrize('supports', ['none', 'raster'])
def test_batch_holds_the_windows_of_the_raster(tmp_path: Path, supports: str) -> None:
    # a float raster with NaN and a size that pads the edge windows
    path = strip_raster(tmp_path / 'in.tif', 70, 50, 5)
    with rasterio.open(path) as src:
        data, transform = src.read(), src.transform
    side = 16
    dataset = RasterWindowDataset(
        path,
        window=side,
        overlap=4,
        mean=100.0,
        std=30.0,
        supports=supports,  # type: ignore[arg-type]
        sequence_length=2,
    )

    def window(row_off: int, col_off: int) -> np.ndarray:
        """The window as read from the whole array, padded and normalised."""
        part = data[:, row_off : row_off + side, col_off : col_off + side]
        h, w = part.shape[1:]
        part = np.pad(part, ((0, 0), (0, side - h), (0, side - w)), mode='reflect')
        normalised = (part - np.float32(100.0)) / np.float32(30.0)
        return np.nan_to_num(normalised, nan=0.0)

    # the last windows (padded on two sides) and the first (with a NaN pixel)
    indices = [len(dataset) - 3, len(dataset) - 1, 0]
    batch = dataset.batch(indices)
    expected_keys = {'image', 'valid', 'row_off', 'col_off', 'bounds', 'transform'}
    if supports == 'raster':
        expected_keys.add('support_image')
    assert set(batch) == expected_keys
    for b, index in enumerate(indices):
        row_off, col_off = dataset.grid[index]
        assert (batch['row_off'][b], batch['col_off'][b]) == (row_off, col_off)
        np.testing.assert_array_equal(
            batch['image'][b].numpy(), window(*dataset.grid[index])
        )
        valid = np.zeros((side, side), dtype=bool)
        inside = np.isfinite(
            data[:, row_off : row_off + side, col_off : col_off + side]
        )
        valid[: inside.shape[1], : inside.shape[2]] = inside.all(axis=0)
        np.testing.assert_array_equal(batch['valid'][b].numpy(), valid)
        win = rasterio.windows.Window(col_off, row_off, side, side)
        affine = rasterio.windows.transform(win, transform)
        assert batch['transform'][b].tolist() == list(affine)
        # torchgeo's order: [xmin, xmax, xres, ymin, ymax, yres, t0, t1, tres]
        x0, y0, x1, y1 = rasterio.windows.bounds(win, transform)
        assert batch['bounds'][b].tolist() == [
            *sorted((x0, x1)),
            1.0,
            *sorted((y0, y1)),
            1.0,
            0,
            0,
            1,
        ]
        if supports == 'raster':
            offsets = dataset._support_offsets((row_off, col_off))
            assert offsets == dataset._support_offsets((row_off, col_off))
            assert len(offsets) == 2 and (row_off, col_off) not in offsets
            for t, (r, c) in enumerate(offsets):
                np.testing.assert_array_equal(
                    batch['support_image'][b, t].numpy(), window(r, c)
                )
    # an item is the batch of one window
    item = dataset[indices[1]]
    for key, value in item.items():
        torch.testing.assert_close(value, batch[key][1], rtol=0, atol=0)
    dataset.close()


def expected_validity(path: Path, pad: int) -> np.ndarray:
    """The input's mask and finiteness (as GDAL and numpy say), padded with False."""
    with rasterio.open(path) as src:
        valid = (src.dataset_mask() != 0) & np.isfinite(src.read()).all(axis=0)
    return np.pad(valid, ((0, pad), (0, pad)))


@pytest.mark.parametrize('kind', ['nodata', 'nan', 'float64', 'none'])
def test_valid_marks_the_input_nodata(tmp_path: Path, kind: str) -> None:
    if kind == 'nodata':
        path = make_raster(
            tmp_path / 'in.tif', 45, 38, nodata=0, nodata_border=3, dtype='uint16'
        )
    elif kind == 'nan':
        path = strip_raster(tmp_path / 'in.tif', 45, 38, 5)
    else:
        dtype = 'float64' if kind == 'float64' else 'uint8'
        path = make_raster(tmp_path / 'in.tif', 45, 38, dtype=dtype)
        if kind == 'float64':
            with rasterio.open(path, 'r+') as dst:
                band = dst.read(2)
                band[4, 4:9] = np.inf
                band[20, 30] = 1e300  # data, though float32 cannot hold it
                dst.write(band, 2)
    dataset = RasterWindowDataset(path, window=16, overlap=4, mean=0.0, std=1.0)
    if kind == 'none':
        assert 'valid' not in dataset[0] and 'valid' not in dataset.batch([0, 1])
        return
    expected = expected_validity(path, 16)
    assert not expected[:45, :38].all()
    if kind == 'float64':
        assert expected[20, 30] and not expected[4, 4:9].any()
    # forwards, then backwards: the cache is refilled where it cannot help
    order = list(range(len(dataset))) + list(reversed(range(len(dataset))))
    for index in order:
        row_off, col_off = dataset.grid[index]
        valid = dataset[index]['valid'].numpy()
        assert valid.dtype == bool
        np.testing.assert_array_equal(
            valid, expected[row_off : row_off + 16, col_off : col_off + 16]
        )
    batch = dataset.batch(range(len(dataset)))['valid'].numpy()
    for b, (row_off, col_off) in enumerate(dataset.grid):
        np.testing.assert_array_equal(
            batch[b], expected[row_off : row_off + 16, col_off : col_off + 16]
        )
    dataset.close()


@pytest.mark.parametrize(
    'transform',
    [
        Affine(0.5, 0.0, 300000.0, 0.0, -0.5, 5000000.0),
        Affine(0.5, 0.0, 300000.0, 0.0, 0.5, 5000000.0),  # south-up
        Affine(0.3, 0.1, 10.0, 0.2, -0.4, 20.0),  # rotated and sheared
    ],
)
def test_placement_is_rasterio_affine(tmp_path: Path, transform: Affine) -> None:
    path = make_raster(tmp_path / 'in.tif', 40, 50, transform=transform)
    dataset = RasterWindowDataset(path, window=16, overlap=4, mean=0.0, std=1.0)
    indices = list(range(len(dataset)))
    batch = dataset.batch(indices)
    for b, index in enumerate(indices):
        row_off, col_off = dataset.grid[index]
        t = transform @ Affine.translation(col_off, row_off)
        x0, y0 = t.c, t.f
        x1, y1 = x0 + t.a * 16, y0 + t.e * 16
        bounds = [min(x0, x1), max(x0, x1), abs(t.a), min(y0, y1), max(y0, y1)]
        assert batch['bounds'][b].tolist() == [*bounds, abs(t.e), 0.0, 0.0, 1.0]
        assert batch['transform'][b].tolist() == list(t)[:9]
        assert (batch['row_off'][b].item(), batch['col_off'][b].item()) == (
            row_off,
            col_off,
        )
    assert batch['bounds'].dtype == batch['transform'].dtype == torch.float64
    assert batch['row_off'].dtype == torch.int64
    dataset.close()
