"""Fake GeoTIFF writer for the episode tests (imported by conftest.py)."""

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

#: Projected CRS of the fakes (UTM 33N) and their pixel size in metres.
CRS = 'EPSG:32633'
RES = 0.5
X0, Y0 = 500000.0, 4000000.0


def write_tif(path: Path, data: np.ndarray, left: float, top: float) -> None:
    """Write a C x H x W array as a GeoTIFF with its top-left corner at (left, top)."""
    count, height, width = data.shape
    profile = {
        'driver': 'GTiff',
        'height': height,
        'width': width,
        'count': count,
        'dtype': data.dtype.name,
        'crs': CRS,
        'transform': from_origin(left, top, RES, RES),
    }
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(data)
