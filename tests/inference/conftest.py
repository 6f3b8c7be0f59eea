"""Fixtures for the inference tests."""

from pathlib import Path

import pytest
from inference_fakes import make_raster


@pytest.fixture
def raster(tmp_path: Path) -> Path:
    """A 3-band 70x90 projected raster (not a multiple of any window)."""
    return make_raster(tmp_path / 'in.tif', 70, 90)
