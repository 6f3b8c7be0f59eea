"""Prediction on large rasters: sliding windows, smooth blending, GeoTIFF output.

One loop, ``Trainer.predict`` with :class:`RasterPredictDataModule` and the
:class:`RasterPredictionWriter` callback, behind three front doors:
:func:`predict_raster` / :func:`predict_rasters`, the ``torchgeo-ssg2 predict``
command registered by :func:`add_subcommand`, and ``torchgeo predict`` with a
config naming the two classes (``experiments/predict_ssg2.yaml``).
"""

from .blending import StripBlender
from .datamodule import RasterBatches, RasterPredictDataModule
from .dataset import RasterWindowDataset
from .inputs import expand_inputs, outputs_for
from .mosaic import write_mosaics, write_vrt
from .output import GeoTIFFSink, RasterMeta, output_paths
from .predict import (
    ModulePredictor,
    PredictOptions,
    add_subcommand,
    predict_raster,
    predict_rasters,
)
from .sharding import RasterPart, plan_parts
from .windows import WindowGrid, blend_weight
from .writer import PredictionAssembler, RasterPredictionWriter

__all__ = (
    'GeoTIFFSink',
    'ModulePredictor',
    'PredictOptions',
    'PredictionAssembler',
    'RasterBatches',
    'RasterMeta',
    'RasterPart',
    'RasterPredictDataModule',
    'RasterPredictionWriter',
    'RasterWindowDataset',
    'StripBlender',
    'WindowGrid',
    'add_subcommand',
    'blend_weight',
    'expand_inputs',
    'output_paths',
    'outputs_for',
    'plan_parts',
    'predict_raster',
    'predict_rasters',
    'write_mosaics',
    'write_vrt',
)
