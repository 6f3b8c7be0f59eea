import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from inference_fakes import make_raster

from torchgeo_ssg2.inference import RasterWindowDataset
from torchgeo_ssg2.inference.datamodule import check_values
from torchgeo_ssg2.normalization import Normalization


def write(path: Path, data: np.ndarray, nodata: float | None = None) -> Path:
    """A tiled GeoTIFF of CxHxW *data* (the fakes' georeferencing)."""
    count, height, width = data.shape
    make_raster(path, height, width, count, dtype=str(data.dtype), nodata=nodata)
    with rasterio.open(path, 'r+') as dst:
        dst.write(data)
    return path


def check(path: Path, mean: float, std: float) -> list[str]:
    """The warnings of :func:`check_values` on a 2-band raster."""
    dataset = RasterWindowDataset(path, window=32, overlap=8, mean=mean, std=std)
    stats = Normalization(mean=(mean, mean), std=(std, std), dtype=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        check_values(dataset, stats, 'checkpoint')
    dataset.close()
    return [str(w.message) for w in caught]


def band_values(rng: np.random.Generator, dtype: str, size: int = 96) -> np.ndarray:
    """Two bands near 100 (std 10), the second with 5 % of its pixels at 200."""
    data = rng.normal(100, 10, size=(2, size, size)).clip(0, 255)
    data[1, rng.random((size, size)) < 0.05] = 200
    return data.astype(dtype)


@pytest.mark.parametrize('dtype', ['uint8', 'int16', 'float32', 'float64'])
def test_the_outlying_band_is_named(tmp_path: Path, dtype: str) -> None:
    data = band_values(np.random.default_rng(0), dtype)
    messages = check(write(tmp_path / 'in.tif', data), 100.0, 10.0)
    assert len(messages) == 1, messages
    assert 'in band 2, 5% of the sampled pixels lie beyond mean +- 4 std' in messages[0]
    # the value range of the sampled windows
    low = float(re.search(r'values (\S+) to 200;', messages[0]).group(1))
    assert data[1].min() - 1e-3 <= low < 100  # printed with 6 digits
    # in range: no warning
    assert check(write(tmp_path / 'ok.tif', data[:1].repeat(2, 0)), 100.0, 10.0) == []


def test_nan_and_nodata_pixels_are_left_out(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(100, 10, size=(2, 96, 96)).astype('float32')
    data[:, :40] = np.nan  # far more than 1 % of the pixels
    assert check(write(tmp_path / 'nan.tif', data), 100.0, 10.0) == []
    masked = data.copy()
    masked[:, :40] = -9999.0
    assert check(write(tmp_path / 'nodata.tif', masked, -9999.0), 100.0, 10.0) == []
    # without the nodata value the same pixels are data, and far off
    (message,) = check(write(tmp_path / 'plain.tif', masked), 100.0, 10.0)
    assert 'in band 1' in message and 'values -9999 to' in message


def test_bands_of_mixed_dtypes(tmp_path: Path) -> None:
    # a VRT of a uint8 and a float32 band (GeoTIFF bands share one dtype)
    data = band_values(np.random.default_rng(2), 'float32')
    write(tmp_path / 'a.tif', data[:1].astype('uint8'))
    write(tmp_path / 'b.tif', data[1:])
    sources = [('a.tif', 'Byte'), ('b.tif', 'Float32')]
    bands = ''.join(
        f'<VRTRasterBand dataType="{kind}" band="{i + 1}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{name}</SourceFilename>'
        '<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>'
        for i, (name, kind) in enumerate(sources)
    )
    vrt = tmp_path / 'mixed.vrt'
    vrt.write_text(
        f'<VRTDataset rasterXSize="96" rasterYSize="96">{bands}</VRTDataset>'
    )
    with rasterio.open(vrt) as src:
        assert src.dtypes == ('uint8', 'float32')
    (message,) = check(vrt, 100.0, 10.0)
    assert re.search(r'in band 2, [45]% of the sampled pixels', message), message
    # and its windows read, both bands in float32
    dataset = RasterWindowDataset(vrt, window=32, overlap=8, mean=100.0, std=10.0)
    image = dataset[0]['image'].numpy()
    first = data[0, :32, :32].astype('uint8').astype('float32')
    np.testing.assert_array_equal(image[0], (first - np.float32(100)) / np.float32(10))
    np.testing.assert_array_equal(
        image[1], (data[1, :32, :32] - np.float32(100)) / np.float32(10)
    )
    dataset.close()
