"""Generators of small rasters and checkpoints for the prediction fault tests."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from torchgeo_ssg2.normalization import Normalization
from torchgeo_ssg2.trainers import PTAViTTask

#: Runs the real command line, as the ``torchgeo-ssg2`` console script does (a
#: module, so that Lightning's DDP launcher can start it again for other ranks).
CLI = ('-m', 'torchgeo_ssg2.cli')

#: Statistics of the fake training data (8-bit images).
UINT8_STATS = Normalization(
    mean=(120.0, 110.0, 100.0), std=(60.0, 55.0, 50.0), dtype='uint8'
)


def write_raster(
    path: Path,
    height: int,
    width: int,
    dtype: str = 'uint8',
    *,
    nan_rows: slice | None = None,
    scale: float = 1.0,
    seed: int = 0,
) -> Path:
    """Write a tiled 3-band GeoTIFF of random values in 1..249 (times *scale*).

    Args:
        path: File to write.
        height: Rows.
        width: Columns.
        dtype: Data type.
        nan_rows: Rows set to NaN (float dtypes only), no nodata declared.
        scale: Factor applied to the values (e.g. 16 for 12-bit-like uint16).
        seed: Seed of the values.

    Returns:
        The path.
    """
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 250, size=(3, height, width)).astype(np.float64) * scale
    if nan_rows is not None:
        data[:, nan_rows] = np.nan
    profile = {
        'driver': 'GTiff',
        'height': height,
        'width': width,
        'count': 3,
        'dtype': dtype,
        'crs': 'EPSG:32640',
        'transform': from_origin(500000.0, 2780000.0, 0.5, 0.5),
        'tiled': True,
        'blockxsize': 16,
        'blockysize': 16,
    }
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(data.astype(dtype))
    return path


def write_checkpoint(
    path: Path,
    normalization: Normalization | None = UINT8_STATS,
    *,
    class_path: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save a PTAViTTask (test preset, 3 bands, 2 classes) checkpoint.

    Written as Lightning does: the task's ``on_save_checkpoint`` records its
    statistics and class path.

    Args:
        path: Checkpoint file.
        normalization: The task's statistics, or None for none.
        class_path: Replaces the recorded ``_class_path``.
        extra: Further top-level entries.

    Returns:
        The path.
    """
    torch.manual_seed(0)
    task = PTAViTTask(preset='test', in_channels=3, num_classes=2)
    if normalization is not None:
        task.set_normalization(normalization)
    ckpt: dict[str, Any] = {
        'state_dict': task.state_dict(),
        'hyper_parameters': dict(task.hparams),
        'pytorch-lightning_version': lightning.__version__,
    }
    task.on_save_checkpoint(ckpt)
    if class_path is not None:
        ckpt['hyper_parameters']['_class_path'] = class_path
    ckpt |= extra or {}
    torch.save(ckpt, path)
    return path


class CodeOnLoad:
    """Unpickling this object runs code: it creates *marker*."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """Pickle as a call of ``exec`` on the code that writes the marker."""
        return (exec, (f'open({self.marker!r}, "w").close()',))


def cli_command(*args: str) -> list[str]:
    """The ``torchgeo-ssg2`` command line with *args*, for subprocess."""
    return [sys.executable, *CLI, *args]


def environment() -> dict[str, str]:
    """The environment of the subprocesses (one quiet thread each)."""
    return dict(os.environ, OMP_NUM_THREADS='1', OMP_WAIT_POLICY='PASSIVE')


def run_cli(*args: str, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``torchgeo-ssg2 *args`` in a subprocess and wait for it.

    Args:
        *args: Command-line arguments.
        umask: The subprocess's umask (default: inherited).

    Returns:
        The finished process, with text stdout and stderr.
    """
    command = cli_command(*args)
    if umask is not None:
        command = ['sh', '-c', f'umask {umask:03o} && exec "$@"', 'sh', *command]
    return subprocess.run(
        command, capture_output=True, text=True, env=environment(), timeout=300
    )


def read(path: Path) -> np.ndarray:
    """All bands of a raster."""
    with rasterio.open(path) as src:
        return src.read()
