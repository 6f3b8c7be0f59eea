"""Tiled, compressed GeoTIFF output written block by block, committed atomically.

The prediction of ``OUT.tif`` is written as:

* ``OUT.tif``: one band, the class index (``uint8``; ``uint16`` above 255 classes),
  nodata 255 (65535) where the input is nodata.
* ``OUT_probabilities.tif`` (on request): one ``float32`` band per class with the
  blended probabilities, nodata NaN.
* ``OUT_uncertainty.tif`` (on request): one ``float32`` band with the blended SSG2
  uncertainty, nodata NaN.

All files share the input's CRS, transform, width and height, are tiled
(``block_size`` x ``block_size``) and DEFLATE-compressed. Each is first written to a
hidden temporary file in the output's folder and moved into place with
:func:`os.replace` only once every file is complete, so an output path holds either
nothing or a complete file; on error the temporary files are removed.
"""

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine
from rasterio.windows import Window

__all__ = (
    'GeoTIFFSink',
    'RasterMeta',
    'check_output_free',
    'gdal_cache_limit',
    'open_raster',
    'output_paths',
)

#: GDAL block cache used while predicting, in MB: bounds memory whatever the size.
GDAL_CACHE_MB = 64


def open_raster(path: str | os.PathLike[str], mode: str = 'r', **kwargs: Any) -> Any:
    """Open a raster with rasterio, silent about missing georeferencing.

    Rasters without CRS are predicted in pixel space; :func:`predict_raster` warns
    about that once, so rasterio's ``NotGeoreferencedWarning`` is not repeated for
    every file handle.

    Args:
        path: Raster file.
        mode: ``"r"`` or ``"w"``.
        **kwargs: Passed to :func:`rasterio.open`.

    Returns:
        The open dataset.
    """
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NotGeoreferencedWarning)
        return rasterio.open(path, mode, **kwargs)


@contextmanager
def gdal_cache_limit(megabytes: int = GDAL_CACHE_MB) -> Iterator[None]:
    """Cap GDAL's block cache (process-wide) so memory stays flat on big rasters.

    Args:
        megabytes: Cache size in MB.

    Yields:
        Nothing; the previous cache size is restored on exit.
    """
    with rasterio.Env(GDAL_CACHEMAX=megabytes):
        yield


@dataclass(frozen=True)
class RasterMeta:
    """What the prediction needs to know about the input raster.

    Args:
        path: Input file.
        height: Rows.
        width: Columns.
        count: Bands.
        crs: Coordinate reference system, or None (pixel space).
        transform: Pixel-to-CRS affine transform (identity without georeferencing).
        has_mask: Whether some pixels may be invalid (nodata value, mask or alpha band).
    """

    path: Path
    height: int
    width: int
    count: int
    crs: CRS | None
    transform: Affine
    has_mask: bool

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> 'RasterMeta':
        """Read the metadata of a raster.

        Args:
            path: Raster file.

        Returns:
            The metadata.

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: If the file cannot be read as a raster.
        """
        path = Path(path)
        if not path.is_file():
            msg = f'input raster {path} does not exist or is not a file'
            raise FileNotFoundError(msg)
        try:
            with open_raster(path) as src:
                flags = src.mask_flag_enums
                has_mask = any(MaskFlags.all_valid not in f for f in flags)
                # Touch the data so that a truncated or corrupt file fails here.
                src.read(1, window=Window(0, 0, 1, 1))
                return cls(
                    path=path,
                    height=src.height,
                    width=src.width,
                    count=src.count,
                    crs=src.crs,
                    transform=src.transform,
                    has_mask=has_mask,
                )
        except rasterio.errors.RasterioError as err:
            msg = f'cannot read input raster {path}: {err}'
            raise ValueError(msg) from err


def output_paths(
    output: str | os.PathLike[str], probabilities: bool, uncertainty: bool
) -> dict[str, Path]:
    """Files written for one prediction.

    Args:
        output: Class-index GeoTIFF path.
        probabilities: Whether the per-class probabilities are written.
        uncertainty: Whether the uncertainty map is written.

    Returns:
        ``{"classes": OUT.tif}`` plus ``"probabilities"`` and ``"uncertainty"``
        sidecars (``OUT_probabilities.tif``, ``OUT_uncertainty.tif``) on request.
    """
    output = Path(output)
    paths = {'classes': output}
    if probabilities:
        paths['probabilities'] = output.with_name(
            f'{output.stem}_probabilities{output.suffix or ".tif"}'
        )
    if uncertainty:
        paths['uncertainty'] = output.with_name(
            f'{output.stem}_uncertainty{output.suffix or ".tif"}'
        )
    return paths


def check_output_free(paths: dict[str, Path], overwrite: bool) -> None:
    """Refuse to clobber existing outputs and check the folder exists.

    Args:
        paths: Output files, as from :func:`output_paths`.
        overwrite: Whether existing files may be replaced.

    Raises:
        FileExistsError: If a file exists and ``overwrite`` is False.
        FileNotFoundError: If an output folder does not exist.
        IsADirectoryError: If an output path is a folder.
    """
    for path in paths.values():
        if path.is_dir():
            msg = f'output {path} is a directory'
            raise IsADirectoryError(msg)
        if path.exists() and not overwrite:
            msg = (
                f'output {path} exists; pass overwrite=True (--overwrite) to replace it'
            )
            raise FileExistsError(msg)
        if not path.parent.is_dir():
            msg = f'output folder {path.parent} does not exist'
            raise FileNotFoundError(msg)


class GeoTIFFSink:
    """Write blended probability blocks as class index (and optional extras).

    Implements :class:`~torchgeo_ssg2.inference.blending.BlockSink`.

    Args:
        meta: The input raster.
        output: Class-index GeoTIFF path (see the module docstring for sidecars).
        num_classes: Probability channels K (1 for a binary task: class = p >= 0.5).
        probabilities: Whether to write the per-class probabilities.
        uncertainty: Whether to write the uncertainty map.
        overwrite: Whether existing outputs may be replaced.
        block_size: Tile side of the outputs.
    """

    def __init__(
        self,
        meta: RasterMeta,
        output: str | os.PathLike[str],
        num_classes: int,
        probabilities: bool = False,
        uncertainty: bool = False,
        overwrite: bool = False,
        block_size: int = 256,
    ) -> None:
        self.meta = meta
        self.num_classes = num_classes
        self.paths = output_paths(output, probabilities, uncertainty)
        check_output_free(self.paths, overwrite)
        n_labels = max(num_classes, 2)
        self.class_dtype = 'uint8' if n_labels <= 255 else 'uint16'
        self.class_nodata = 255 if self.class_dtype == 'uint8' else 65535
        base: dict[str, Any] = {
            'driver': 'GTiff',
            'width': meta.width,
            'height': meta.height,
            'crs': meta.crs,
            'transform': meta.transform,
            'tiled': True,
            'blockxsize': block_size,
            'blockysize': block_size,
            'compress': 'deflate',
            'interleave': 'band',
        }
        profiles = {
            'classes': base
            | {'count': 1, 'dtype': self.class_dtype, 'nodata': self.class_nodata},
            'probabilities': base
            | {'count': num_classes, 'dtype': 'float32', 'nodata': float('nan')},
            'uncertainty': base
            | {'count': 1, 'dtype': 'float32', 'nodata': float('nan')},
        }
        descriptions = {
            'classes': ('class',),
            'probabilities': tuple(f'probability_{k}' for k in range(num_classes)),
            'uncertainty': ('uncertainty',),
        }
        self._tmp: dict[str, Path] = {}
        self._dst: dict[str, Any] = {}
        self._mask_src: Any = None
        try:
            for key, path in self.paths.items():
                fd, tmp = tempfile.mkstemp(
                    prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent
                )
                os.close(fd)
                self._tmp[key] = Path(tmp)
                dst = open_raster(tmp, 'w', **profiles[key])
                self._dst[key] = dst
                dst.descriptions = descriptions[key]
            if meta.has_mask:
                self._mask_src = open_raster(meta.path)
        except BaseException:
            self.abort()
            raise

    def write_block(
        self, row_off: int, probabilities: np.ndarray, uncertainty: np.ndarray | None
    ) -> None:
        """Write rows ``row_off:row_off + n`` of all outputs.

        Args:
            row_off: First row of the block.
            probabilities: float32 KxnxW blended probabilities.
            uncertainty: float32 nxW blended uncertainty, or None.
        """
        n = probabilities.shape[1]
        window = Window(0, row_off, self.meta.width, n)
        if self.num_classes == 1:
            classes = (probabilities[0] >= 0.5).astype(self.class_dtype)
        else:
            classes = np.empty((n, self.meta.width), dtype=self.class_dtype)
            for r in range(0, n, 32):  # bounded int64 temporaries
                classes[r : r + 32] = probabilities[:, r : r + 32].argmax(axis=0)
        invalid = None
        if self._mask_src is not None:
            invalid = self._mask_src.dataset_mask(window=window) == 0
            classes[invalid] = self.class_nodata
        self._dst['classes'].write(classes, 1, window=window)
        if 'probabilities' in self._dst:
            probs = probabilities.copy() if invalid is not None else probabilities
            if invalid is not None:
                probs[:, invalid] = np.nan
            self._dst['probabilities'].write(probs, window=window)
        if 'uncertainty' in self._dst:
            if uncertainty is None:
                msg = 'uncertainty output requested but the model gave none'
                raise ValueError(msg)
            unc = uncertainty.copy() if invalid is not None else uncertainty
            if invalid is not None:
                unc[invalid] = np.nan
            self._dst['uncertainty'].write(unc, 1, window=window)

    def commit(self) -> dict[str, Path]:
        """Close the temporary files and move them onto the output paths.

        Returns:
            The written files.
        """
        try:
            self._close()
            for key, path in self.paths.items():
                os.replace(self._tmp[key], path)
                del self._tmp[key]
        finally:
            self.abort()
        return dict(self.paths)

    def abort(self) -> None:
        """Close and delete whatever temporary files remain."""
        self._close()
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)
        self._tmp.clear()

    def _close(self) -> None:
        """Close open datasets."""
        for dst in self._dst.values():
            dst.close()
        self._dst.clear()
        if self._mask_src is not None:
            self._mask_src.close()
            self._mask_src = None
