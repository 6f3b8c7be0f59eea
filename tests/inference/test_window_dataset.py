from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from inference_fakes import CRS, TRANSFORM, make_raster, read
from rasterio.transform import Affine
from rasterio.windows import Window
from torch import Tensor, nn

from torchgeo_ssg2.inference import RasterWindowDataset, predict_raster
from torchgeo_ssg2.inference import dataset as window_dataset


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


def expected_window(
    data: np.ndarray,
    valid: np.ndarray,
    row_off: int,
    col_off: int,
    side: int,
    mean: float,
    std: float,
) -> np.ndarray:
    """A window as cut from the raster read whole, padded and normalised.

    Args:
        data: The raster, CxHxW.
        valid: HxW, True where the pixel has data.
        row_off: Row offset.
        col_off: Column offset.
        side: Window side.
        mean: Mean subtracted.
        std: Standard deviation dividing.

    Returns:
        float32 Cxsidexside, reflection-padded, with every band of an invalid
        pixel 0.
    """
    part = data[:, row_off : row_off + side, col_off : col_off + side]
    ok = valid[row_off : row_off + side, col_off : col_off + side]
    h, w = part.shape[1:]
    pad = ((0, side - h), (0, side - w))
    part = np.pad(part.astype(np.float32), ((0, 0), *pad), mode='reflect')
    ok = np.pad(ok, pad, mode='reflect')
    normalised = (part - np.float32(mean)) / np.float32(std)
    return np.where(ok, normalised, np.float32(0.0))


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


@pytest.mark.parametrize('rows_per_strip', [1, 5, 20, 69])
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
        if rows_per_strip <= 4 * 16:
            # the window's rows down to the next block boundary
            assert rows.rows.shape[1] < 16 + rows_per_strip
        else:
            # blocks over 4 windows tall: the window's rows only
            assert rows.rows.shape[1] <= 16
    assert np.isfinite(dataset[0]['image'].numpy()).all()
    dataset.close()


@pytest.mark.parametrize('supports', ['none', 'raster'])
def test_batch_holds_the_windows_of_the_raster(tmp_path: Path, supports: str) -> None:
    # a float raster with NaN and a size that pads the edge windows
    path = strip_raster(tmp_path / 'in.tif', 70, 50, 5)
    with rasterio.open(path) as src:
        data, transform = src.read(), src.transform
    finite = np.isfinite(data).all(axis=0)
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
        return expected_window(data, finite, row_off, col_off, side, 100.0, 30.0)

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


@pytest.mark.parametrize(
    ('kind', 'block'),
    [('tall', (48, 32)), ('short', (16, 16)), ('tall_nodata', (64, 16))],
)
def test_row_cache_reads_each_block_row_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, block: tuple[int, int]
) -> None:
    nodata = 0 if kind == 'tall_nodata' else None
    path = make_raster(
        tmp_path / 'in.tif',
        150,
        70,
        nodata=nodata,
        nodata_border=2 if nodata is not None else 0,
        block=block,
    )
    side = 24
    dataset = RasterWindowDataset(path, window=side, overlap=6, mean=90.0, std=40.0)
    assert dataset.meta.block_rows == block[0]
    reads: list[tuple[Window, bool]] = []
    read_input = window_dataset.read_input

    def recording_read(src: Any, window: Window, **kwargs: Any) -> np.ndarray:
        reads.append((window, bool(kwargs.get('mask'))))
        return read_input(src, window, **kwargs)

    monkeypatch.setattr(window_dataset, 'read_input', recording_read)
    images = np.concatenate(
        [
            dataset.batch(range(start, min(start + 5, len(dataset))))['image']
            for start in range(0, len(dataset), 5)
        ]
    )
    values = [window for window, mask in reads if not mask]
    # full-width reads of whole rows of blocks, one after the other, each row once
    assert all(w.col_off == 0 and w.width == 70 for w, _ in reads)
    rows = [r for w in values for r in range(w.row_off, w.row_off + w.height)]
    assert rows == list(range(150))
    assert all(w.row_off % block[0] == 0 for w in values)
    masks = [window for window, mask in reads if mask]
    assert masks == (values if nodata is not None else [])
    data, valid = expected_raster(path)
    for b, (row_off, col_off) in enumerate(dataset.grid):
        np.testing.assert_array_equal(
            images[b], expected_window(data, valid, row_off, col_off, side, 90, 40)
        )
    dataset.close()


def expected_raster(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The raster read whole: its values and where it has data (as GDAL says)."""
    with rasterio.open(path) as src:
        data = src.read()
        valid = (src.dataset_mask() != 0) & np.isfinite(data).all(axis=0)
    return data, valid


#: How a raster marks its invalid pixels, and its dtype.
NODATA_KINDS = {
    'uint8_nodata': 'uint8',
    'float_nodata': 'float32',
    'internal_mask': 'uint8',
    'alpha': 'uint8',
}
#: Two values stored at the invalid pixels, by dtype.
FILLS = {'uint8': (0, 250), 'float32': (0.0, -9999.0)}


def nodata_raster(path: Path, kind: str, fill: float) -> Path:
    """A 45x38 raster whose invalid pixels hold ``fill``, the others seeded values.

    The invalid pixels are a border, a patch and a pixel inside; they are marked
    by a nodata value of ``fill`` (``*_nodata``), an internal mask or an alpha
    band (a fourth band, 0 there and 255 elsewhere).
    """
    dtype = NODATA_KINDS[kind]
    rng = np.random.default_rng(5)
    data = rng.integers(1, 250, size=(3, 45, 38)).astype(dtype)
    invalid = np.zeros((45, 38), dtype=bool)
    invalid[:2] = invalid[:, -3:] = invalid[20:26, 10:15] = invalid[33, 30] = True
    data[:, invalid] = fill
    profile: dict[str, Any] = {
        'driver': 'GTiff',
        'height': 45,
        'width': 38,
        'count': 3,
        'dtype': dtype,
        'crs': CRS,
        'transform': TRANSFORM,
        'tiled': True,
        'blockxsize': 16,
        'blockysize': 16,
    }
    if kind.endswith('_nodata'):
        profile['nodata'] = fill
    if kind == 'alpha':
        alpha = np.where(invalid, 0, 255).astype(dtype)[None]
        data = np.concatenate([data, alpha])
        profile |= {'count': 4, 'photometric': 'RGB', 'alpha': 'YES'}
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, 'w', **profile) as dst:
            dst.write(data)
            if kind == 'internal_mask':
                dst.write_mask(~invalid)
    with rasterio.open(path) as src:
        assert ((src.dataset_mask() == 0) == invalid).all()
    return path


@pytest.mark.parametrize('kind', sorted(NODATA_KINDS))
def test_nodata_values_are_fed_as_the_band_mean(tmp_path: Path, kind: str) -> None:
    batches = []
    for fill in FILLS[NODATA_KINDS[kind]]:
        path = nodata_raster(tmp_path / f'in_{fill}.tif', kind, fill)
        dataset = RasterWindowDataset(
            path,
            window=16,
            overlap=4,
            mean=100.0,
            std=10.0,
            supports='raster',
            sequence_length=3,
        )
        assert dataset.meta.has_mask
        batch = dataset.batch(range(len(dataset)))
        data, valid = expected_raster(path)
        for b, (row_off, col_off) in enumerate(dataset.grid):
            np.testing.assert_array_equal(
                batch['image'][b].numpy(),
                expected_window(data, valid, row_off, col_off, 16, 100.0, 10.0),
            )
            for t, (r, c) in enumerate(dataset._support_offsets((row_off, col_off))):
                np.testing.assert_array_equal(
                    batch['support_image'][b, t].numpy(),
                    expected_window(data, valid, r, c, 16, 100.0, 10.0),
                )
        # a window read alone is the window of the batch
        item = dataset[len(dataset) - 1]
        for key, value in item.items():
            torch.testing.assert_close(value, batch[key][-1], rtol=0, atol=0)
        batches.append(batch)
        dataset.close()
    # the valid pixels alone decide what the model sees
    for key in ('image', 'support_image', 'valid'):
        torch.testing.assert_close(batches[0][key], batches[1][key], rtol=0, atol=0)


class BlurModel(nn.Module):
    """Two classes from a 7x7 mean of the band average (a spatial receptive field)."""

    def forward(self, image: Tensor) -> Tensor:
        """Probabilities Bx2xHxW."""
        x = nn.functional.avg_pool2d(image.mean(1, keepdim=True), 7, 1, 3)
        p = torch.sigmoid(x)
        return torch.cat([1 - p, p], dim=1)


@pytest.mark.parametrize('kind', sorted(NODATA_KINDS))
def test_predictions_at_valid_pixels_ignore_the_nodata_values(
    tmp_path: Path, kind: str
) -> None:
    probabilities = []
    for fill in FILLS[NODATA_KINDS[kind]]:
        path = nodata_raster(tmp_path / f'in_{fill}.tif', kind, fill)
        written = predict_raster(
            BlurModel(),
            path,
            tmp_path / f'out_{fill}.tif',
            window=16,
            overlap=4,
            mean=125.0,
            std=70.0,
            probabilities=True,
            progress=False,
        )
        probabilities.append(read(written['probabilities'])[0])
    _, valid = expected_raster(path)
    assert np.isnan(probabilities[0][:, ~valid]).all()
    np.testing.assert_array_equal(probabilities[0], probabilities[1])


@pytest.mark.parametrize('dtype', ['uint8', 'float32'])
def test_bank_supports_feed_nodata_as_the_band_mean(tmp_path: Path, dtype: str) -> None:
    from torchgeo_ssg2.samplers import SupportBank
    from torchgeo_ssg2.samplers.inference import ImageChips

    src = make_raster(tmp_path / 'in.tif', 32, 32)
    bank_image = make_raster(
        tmp_path / 'bank.tif', 32, 32, nodata=0, nodata_border=4, dtype=dtype, seed=3
    )
    if dtype == 'float32':
        with rasterio.open(bank_image, 'r+') as dst:
            data = dst.read()
            data[1, 10, 10] = np.nan  # one band without data: the pixel has none
            dst.write(data)
    chips = ImageChips([bank_image], 32)
    chip = chips[0]['image']
    border = np.zeros((32, 32), dtype=bool)
    border[:4], border[-4:], border[:, :4], border[:, -4:] = True, True, True, True
    assert torch.isnan(chip[:, torch.from_numpy(border)]).all()
    dataset = RasterWindowDataset(
        src,
        window=32,
        overlap=0,
        mean=100.0,
        std=30.0,
        supports='bank',
        support_bank=SupportBank(chips, sequence_length=2),
        sequence_length=2,
    )
    supports = dataset[0]['support_image']
    assert torch.isfinite(supports).all()
    invalid = border.copy()
    if dtype == 'float32':
        invalid[10, 10] = True
    invalid_t = torch.from_numpy(invalid)
    assert (supports[:, :, invalid_t] == 0).all()
    expected = (chip[:, ~invalid_t] - 100.0) / 30.0
    assert torch.allclose(supports[0][:, ~invalid_t], expected)
    dataset.close()
