"""Fixtures for the episode tests: fake GeoTIFFs in a projected CRS."""

from pathlib import Path

import numpy as np
import pytest
from geo_fakes import RES, X0, Y0, write_tif
from torchgeo.datasets import RasterDataset


@pytest.fixture
def two_rasters(tmp_path: Path) -> RasterDataset:
    """Two rasters side by side with a 30 px gap: a MultiPolygon footprint.

    Raster a: 120 rows x 200 cols at (X0, Y0); raster b: 100 x 100, 30 px right of a.
    """
    rng = np.random.default_rng(0)
    a = rng.integers(1, 255, (1, 120, 200), dtype=np.uint8)
    b = rng.integers(1, 255, (1, 100, 100), dtype=np.uint8)
    write_tif(tmp_path / 'a.tif', a, X0, Y0)
    write_tif(tmp_path / 'b.tif', b, X0 + 230 * RES, Y0)
    return RasterDataset(paths=tmp_path)
