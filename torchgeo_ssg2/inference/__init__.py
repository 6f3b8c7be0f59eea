"""Prediction on large rasters: sliding windows, smooth blending, GeoTIFF output.

One implementation behind two front doors: :func:`predict_raster` (and the
``torchgeo-ssg2 predict`` command registered by :func:`add_subcommand`), and
``torchgeo predict`` with :class:`RasterPredictDataModule` plus the
:class:`RasterPredictionWriter` callback.
"""

from .blending import StripBlender
from .datamodule import RasterPredictDataModule
from .dataset import RasterWindowDataset
from .output import GeoTIFFSink, RasterMeta, output_paths
from .predict import add_subcommand, predict_raster
from .windows import WindowGrid, blend_weight
from .writer import PredictionAssembler, RasterPredictionWriter

__all__ = (
    'GeoTIFFSink',
    'PredictionAssembler',
    'RasterMeta',
    'RasterPredictDataModule',
    'RasterPredictionWriter',
    'RasterWindowDataset',
    'StripBlender',
    'WindowGrid',
    'add_subcommand',
    'blend_weight',
    'output_paths',
    'predict_raster',
)
