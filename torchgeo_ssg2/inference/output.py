"""Tiled, compressed GeoTIFF output written block by block, committed atomically.

The prediction of ``OUT.tif`` is written as:

* ``OUT.tif``: one band, the class index (``uint8``; ``uint16`` above 255 classes),
  nodata 255 (65535) where the input is nodata, with a colour table (the
  dataset's palette when given, else :data:`DEFAULT_PALETTE`) and the class
  names in the band description and in the metadata (``CLASS_NAMES``, and
  ``CLASS_<k>`` on the band).
* ``OUT_probabilities.tif`` (on request): one ``float32`` band per class with the
  blended probabilities, each band described by its class name, nodata NaN.
* ``OUT_uncertainty.tif`` (on request): one ``float32`` band with the blended SSG2
  uncertainty (described by :data:`UNCERTAINTY_DESCRIPTION`), nodata NaN.

All files share the input's CRS, transform, width and height, are tiled
(``block_size`` x ``block_size``) and losslessly compressed (the class map with
LZW, which packs class maps faster than DEFLATE and about as small; the
``float32`` sidecars with DEFLATE), BigTIFF when they could
pass 4 GB (``BIGTIFF=IF_SAFER``), and get the mode the process's umask gives new
files. With ``cog`` they are Cloud-Optimized GeoTIFFs with overviews (GDAL's COG
driver; nearest-neighbour overviews of the class map, averaged probabilities).

Each is first written to a staging file beside it, ``OUT.tif.partial-<pid>`` (and
``OUT.tif.partial-<pid>-cog`` for its COG copy), and moved into place with
:func:`os.replace` only once every file is complete, so an output path holds
either nothing or a complete file. On error (and on SIGTERM in
``torchgeo-ssg2 predict``) the staging files are removed; a staging file left by a
killed process (``kill -9``, power loss) is removed by the next prediction of the
same output once no process with its pid runs (:func:`sweep_staging`).

No output, sidecar or staging file may be an input of the prediction: paths that
resolve to the input raster, the checkpoint or a support-bank image (same file,
symbolic or hard link) are refused, even with ``overwrite``.
"""

import json
import os
import warnings
from collections import ChainMap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import torch
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine
from rasterio.windows import Window

from ..staging import staged_targets, staging_path, sweep_stale

__all__ = (
    'COMPRESSION',
    'DEFAULT_PALETTE',
    'UNCERTAINTY_DESCRIPTION',
    'BlockBands',
    'GeoTIFFSink',
    'ProtectedFiles',
    'RasterMeta',
    'check_blocks',
    'check_output_free',
    'class_indices',
    'class_labels',
    'gdal_cache_limit',
    'gdal_threads',
    'open_raster',
    'output_paths',
    'read_input',
    'sweep_staging',
)

#: GDAL block cache used while predicting, in MB (raised to hold a row of blocks
#: of the widest input with a mask, see :func:`gdal_cache_limit`): bounds memory
#: whatever the height.
GDAL_CACHE_MB = 64

#: Compression of each output (GeoTIFF and COG): LZW for the class map, whose
#: runs of equal indices it packs faster than DEFLATE and about as small; DEFLATE for
#: the ``float32`` probability and uncertainty sidecars.
COMPRESSION: dict[str, str] = {
    'classes': 'lzw',
    'probabilities': 'deflate',
    'uncertainty': 'deflate',
}

#: Colours (RGB) of the class map when the dataset's palette is not known: the
#: ten colours of matplotlib's ``tab10``, repeated for more classes.
DEFAULT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)

#: Description of the uncertainty band (see
#: :func:`torchgeo_ssg2.trainers.normalised_entropy`).
UNCERTAINTY_DESCRIPTION = (
    'uncertainty in [0, 1]: entropy of the class probabilities divided by '
    'log(number of classes) (0: one class takes all the probability, 1: all '
    'classes equally likely)'
)


def class_labels(
    num_classes: int,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """Names and colours of the classes of a prediction.

    Args:
        num_classes: Probability channels K (1: a binary map, classes 0 and 1).
        class_names: Names, one per class (default: ``class_0``, ``class_1``, ...).
        palette: RGB colours, one per class (default: :data:`DEFAULT_PALETTE`).

    Returns:
        ``(names, colours)`` of the ``max(K, 2)`` class indices.

    Raises:
        ValueError: If there are fewer names or colours than classes, or a
            colour is not three values in 0..255.
    """
    n = max(num_classes, 2)
    names = tuple(class_names) if class_names is not None else None
    if names is None:
        names = tuple(f'class_{k}' for k in range(n))
    if len(names) < n:
        msg = f'{len(names)} class names given for {n} classes'
        raise ValueError(msg)
    colours = palette if palette is not None else None
    if colours is None:
        colours = [DEFAULT_PALETTE[k % len(DEFAULT_PALETTE)] for k in range(n)]
    if len(colours) < n:
        msg = f'a palette of {len(colours)} colours given for {n} classes'
        raise ValueError(msg)
    rgb = tuple(tuple(int(v) for v in c) for c in colours[:n])
    if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in rgb):
        msg = 'palette colours must be three values (RGB) in 0..255'
        raise ValueError(msg)
    return names[:n], rgb  # type: ignore[return-value]


def class_indices(
    probabilities: np.ndarray,
    dtype: str = 'uint8',
    rows: int = 16,
    threads: int | None = None,
) -> np.ndarray:
    """The index of the most probable class of each pixel (numpy's ``argmax``).

    Compares the classes one by one, a few rows at a time, instead of calling
    ``argmax(axis=0)``, which gathers the K values of each pixel across K
    separate planes and is several times slower on class maps. Ties go to the
    lower index, as with ``argmax``. The rows are shared between ``threads``
    threads (numpy's comparisons release the GIL): the classes are picked
    between forward passes, while the model's threads wait.

    Args:
        probabilities: float32 KxHxW.
        dtype: dtype of the result (holding indices up to K - 1).
        rows: Rows handled at a time (bounds the temporaries).
        threads: Threads sharing the rows (default: torch's thread count).

    Returns:
        HxW class indices.
    """
    height = probabilities.shape[1]
    out = np.zeros(probabilities.shape[1:], dtype=dtype)
    threads = max(1, torch.get_num_threads() if threads is None else threads)
    # contiguous spans of whole chunks of ``rows``, one per thread
    step = -(-height // threads)
    step = max(rows, -(-step // rows) * rows)
    spans = [(r, min(r + step, height)) for r in range(0, height, step)]
    if len(spans) == 1:
        _pick_classes(probabilities, out, rows)
        return out
    with ThreadPoolExecutor(len(spans) - 1) as pool:
        others = [
            pool.submit(_pick_classes, probabilities[:, a:b], out[a:b], rows)
            for a, b in spans[1:]
        ]
        a, b = spans[0]
        _pick_classes(probabilities[:, a:b], out[a:b], rows)
        for job in others:
            job.result()
    return out


def _pick_classes(probabilities: np.ndarray, out: np.ndarray, rows: int) -> None:
    """Write the most probable class of each pixel of KxHxW into HxW *out*."""
    k, height, width = probabilities.shape
    best = np.empty((min(rows, height), width), dtype=probabilities.dtype)
    greater = np.empty(best.shape, dtype=bool)
    for r in range(0, height, rows):
        n = min(rows, height - r)
        b, g, o = best[:n], greater[:n], out[r : r + n]
        np.copyto(b, probabilities[0, r : r + n])
        for c in range(1, k):
            plane = probabilities[c, r : r + n]
            np.greater(plane, b, out=g)
            np.copyto(o, c, where=g)
            np.maximum(b, plane, out=b)


def gdal_threads() -> str:
    """GDAL's ``NUM_THREADS`` for block decoding and compression: torch's thread count.

    The windows are read, and the outputs compressed, between forward passes,
    so they may use the threads the model uses; a DataLoader worker (where
    torch runs one thread) decodes with one.

    Returns:
        The thread count, as GDAL takes it.
    """
    return str(max(1, torch.get_num_threads()))


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
def gdal_cache_limit(
    megabytes: int | None = None, rasters: Iterable['RasterMeta'] = ()
) -> Iterator[None]:
    """Cap GDAL's block cache (process-wide) so memory stays flat on big rasters.

    The windows read an input one full-width row of blocks at a time, and the
    mask of an input that has one right after its values: the cache must hold
    such a row, or its blocks are decoded twice. The cap is therefore raised
    to 5/4 of the largest row of blocks (values and mask) of the ``rasters``
    with a mask where that exceeds ``megabytes`` (the others are decoded once
    whatever the cap): memory grows with a raster's width, never with its
    height.

    Args:
        megabytes: Cache size in MB (default: :data:`GDAL_CACHE_MB`).
        rasters: The inputs read under the cap.

    Yields:
        Nothing; the previous cache size is restored on exit.
    """
    rows = max((m.block_row_bytes for m in rasters if m.has_mask), default=0)
    megabytes = GDAL_CACHE_MB if megabytes is None else megabytes
    size = max(megabytes * 1024 * 1024, -(-rows * 5 // 4))
    # rasterio hands an integer GDAL_CACHEMAX to GDALSetCacheMax64: bytes
    with rasterio.Env(GDAL_CACHEMAX=size):
        yield


def read_input(src: Any, window: Window, **kwargs: Any) -> np.ndarray:
    """Read a window of the input raster; a failure names the file and the window.

    Args:
        src: The open input raster.
        window: The window to read.
        **kwargs: Passed to ``src.read`` (or ``src.dataset_mask`` with
            ``mask=True``).

    Returns:
        The data. Bands of different dtypes (a VRT may stack them), which
        rasterio reads one dtype at a time, are read band by band into
        ``out_dtype`` (default: the dtype that holds them all).

    Raises:
        OSError: If GDAL cannot read the window (a truncated or corrupt file).
    """
    mask = kwargs.pop('mask', False)
    try:
        if mask:
            return src.dataset_mask(window=window)
        if len(set(src.dtypes)) > 1 and 'indexes' not in kwargs:
            kwargs.setdefault('out_dtype', np.result_type(*src.dtypes).name)
            bands = [src.read(i, window=window, **kwargs) for i in src.indexes]
            return (np.ma.stack if kwargs.get('masked') else np.stack)(bands)
        return src.read(window=window, **kwargs)
    except rasterio.errors.RasterioError as err:
        msg = (
            f'cannot read input raster {src.name} at rows {window.row_off}:'
            f'{window.row_off + window.height}, columns {window.col_off}:'
            f'{window.col_off + window.width}: {err}'
        )
        raise OSError(msg) from err


def check_blocks(src: Any, path: Path) -> None:
    """Refuse a truncated raster before any work.

    For a GeoTIFF, the offset and byte count of every block of every band (from
    the TIFF block index) must lie within the file: this catches truncated and
    partly copied files without reading the pixels. Blocks that are not written
    (sparse files) are valid. For other formats the first and the last pixel are
    read. Corruption inside a block is found only when the block is read, with an
    error that names the file and the window (:func:`read_input`).

    Args:
        src: The open raster.
        path: Its file.

    Raises:
        ValueError: If a block lies beyond the end of the file or a probe read
            fails.
    """
    if src.driver != 'GTiff':
        for row, col in ((0, 0), (src.height - 1, src.width - 1)):
            read_input(src, Window(col, row, 1, 1))
        return
    size = os.path.getsize(path)
    pixel = src.interleaving is not None and src.interleaving.name.lower() == 'pixel'
    for bidx in src.indexes[:1] if pixel else src.indexes:
        bh, bw = src.block_shapes[bidx - 1]
        for i in range(-(-src.height // bh)):
            for j in range(-(-src.width // bw)):
                offset = src.get_tag_item(f'BLOCK_OFFSET_{j}_{i}', 'TIFF', bidx=bidx)
                count = src.get_tag_item(f'BLOCK_SIZE_{j}_{i}', 'TIFF', bidx=bidx)
                if offset is None or count is None:
                    continue
                if int(offset) + int(count) > size:
                    msg = (
                        f'input raster {path} is truncated or corrupt: block '
                        f'(row {i}, column {j}) of band {bidx} ends at byte '
                        f'{int(offset) + int(count)} but the file has {size} bytes'
                    )
                    raise ValueError(msg)


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
        dtypes: NumPy dtype name of each band.
        block_rows: Height of the raster's blocks (of its first band).
    """

    path: Path
    height: int
    width: int
    count: int
    crs: CRS | None
    transform: Affine
    has_mask: bool
    dtypes: tuple[str, ...] = ()
    block_rows: int = 1

    @property
    def floating(self) -> bool:
        """Whether a band is floating point (its NaN and inf pixels are nodata)."""
        return any(np.dtype(d).kind == 'f' for d in self.dtypes)

    @property
    def has_nodata(self) -> bool:
        """Whether some pixels may be nodata: a mask, or floating-point bands."""
        return self.has_mask or self.floating

    @property
    def block_row_bytes(self) -> int:
        """Bytes of one full-width row of blocks: every band, and the mask if any."""
        pixel = sum(np.dtype(d).itemsize for d in self.dtypes) + int(self.has_mask)
        return self.block_rows * self.width * pixel

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> 'RasterMeta':
        """Read the metadata of a raster and check its blocks (:func:`check_blocks`).

        Args:
            path: Raster file.

        Returns:
            The metadata.

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: If the file cannot be read as a raster or is truncated.
        """
        path = Path(path)
        if not path.is_file():
            msg = f'input raster {path} does not exist or is not a file'
            raise FileNotFoundError(msg)
        try:
            with open_raster(path) as src:
                flags = src.mask_flag_enums
                has_mask = any(MaskFlags.all_valid not in f for f in flags)
                check_blocks(src, path)
                return cls(
                    path=path,
                    height=src.height,
                    width=src.width,
                    count=src.count,
                    crs=src.crs,
                    transform=src.transform,
                    has_mask=has_mask,
                    dtypes=tuple(src.dtypes),
                    block_rows=src.block_shapes[0][0] if src.block_shapes else 1,
                )
        except (rasterio.errors.RasterioError, OSError) as err:
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


def _identity(path: Path) -> tuple[int, int] | None:
    """The device and inode of the file a path names, links followed.

    Args:
        path: A path.

    Returns:
        ``(st_dev, st_ino)``, or None if nothing is there.
    """
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino


class ProtectedFiles(Mapping[str, Path]):
    """Inputs that no output may be, by role, indexed by file identity.

    Each file is looked up (:func:`os.stat`, links followed) once, when it is
    added, so finding whether a path is one of them costs one look-up of that
    path, whatever their number. A file reached through a hard link, a symbolic
    link or another spelling of its path has the same identity; a file missing
    when it is added matches nothing.

    Args:
        files: Paths by role.
    """

    def __init__(
        self, files: Mapping[str, str | os.PathLike[str]] | None = None
    ) -> None:
        self._roles: ChainMap[str, Path] = ChainMap()
        self._ids: ChainMap[tuple[int, int], tuple[str, Path]] = ChainMap()
        self._add(files or {})

    @classmethod
    def of(cls, files: Mapping[str, Path] | None) -> 'ProtectedFiles':
        """The files as :class:`ProtectedFiles`, looked up only if not already.

        Args:
            files: Paths by role, or :class:`ProtectedFiles`.

        Returns:
            ``files`` itself if it is one, else its files looked up.
        """
        return files if isinstance(files, ProtectedFiles) else cls(files)

    def _add(self, files: Mapping[str, str | os.PathLike[str]]) -> None:
        """Add files; a role or a file already here keeps its entry.

        Args:
            files: Paths by role.
        """
        roles, ids = self._roles.maps[-1], self._ids.maps[-1]
        for role, path in files.items():
            path = Path(path)
            if role not in self._roles:
                roles[role] = path
            identity = _identity(path)
            if identity is not None and identity not in self._ids:
                ids[identity] = (role, path)

    def including(self, files: Mapping[str, Path]) -> 'ProtectedFiles':
        """These files and more, sharing this index (only the new ones are looked up).

        Args:
            files: More paths by role; a role or a file already here keeps its
                entry.

        Returns:
            The files of both.
        """
        new = ProtectedFiles()
        new._roles = ChainMap(*self._roles.maps, {})
        new._ids = ChainMap(*self._ids.maps, {})
        new._add(files)
        return new

    def find(self, path: Path) -> tuple[str, Path] | None:
        """Which of the files a path is.

        Args:
            path: A path.

        Returns:
            ``(role, file)``, or None if it is none of them (or does not exist).
        """
        if not any(self._ids.maps):  # (a ChainMap's own truth value counts keys)
            return None
        identity = _identity(path)
        return None if identity is None else self._ids.get(identity)

    def __getitem__(self, role: str) -> Path:
        """The file of a role."""
        return self._roles[role]

    def __iter__(self) -> Iterator[str]:
        """The roles."""
        return iter(self._roles)

    def __len__(self) -> int:
        """The number of roles."""
        return len(self._roles)


def sweep_staging(
    path: Path | Iterable[Path], protected: Mapping[str, Path] | None = None
) -> None:
    """Remove staging files of outputs left by processes that no longer run.

    The staging files of every sidecar of each output are swept too. Staging
    files of a running process (this one included) are kept, and so is any file
    that is one of the *protected* inputs. Each output folder is listed once,
    whatever the number of outputs in it.

    Args:
        path: Class-index output file, or several.
        protected: Inputs that must never be removed, by role (or
            :class:`ProtectedFiles`).
    """
    outputs = [path] if isinstance(path, str | os.PathLike) else list(path)
    index = ProtectedFiles.of(protected)
    by_folder: dict[Path, set[str]] = {}
    for output in outputs:
        for target in output_paths(output, True, True).values():
            by_folder.setdefault(target.parent, set()).add(target.name)
    for folder, names in by_folder.items():
        for target in staged_targets(folder, names):
            sweep_stale(target, keep=lambda p: index.find(p) is not None)


def check_output_free(
    paths: Mapping[str, Path],
    overwrite: bool,
    protected: Mapping[str, Path] | None = None,
) -> None:
    """Refuse to clobber existing outputs or any input, and check the folder exists.

    Args:
        paths: Output files, as from :func:`output_paths`.
        overwrite: Whether existing outputs may be replaced.
        protected: Inputs of the prediction by role (``"input raster"``,
            ``"checkpoint"``, ``"support image"``, ...; :class:`ProtectedFiles`
            looks them up once for many calls); an output or staging file that
            is one of them is refused even with ``overwrite``.

    Raises:
        ValueError: If an output would replace an input.
        FileExistsError: If a file exists and ``overwrite`` is False.
        FileNotFoundError: If an output folder does not exist.
        IsADirectoryError: If an output path is a folder.
    """
    index = ProtectedFiles.of(protected)
    for path in paths.values():
        found = index.find(path) or index.find(staging_path(path))
        if found is not None:
            role, source = found
            msg = (
                f'output {path} is {source} (the {role}): choose another output '
                'path (an input is never overwritten, not even with --overwrite)'
            )
            raise ValueError(msg)
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


class BlockBands:
    """The values each output file takes for a block of blended rows.

    The class map holds the index of the most probable class (``p >= 0.5`` for
    a binary task) and ``class_nodata`` where the input is nodata; the
    probabilities and the uncertainty hold NaN there. These are per-pixel
    operations, so any split of the rows into blocks gives the same values.
    Which pixels have data comes with the block (the windows carried it from
    the input, see :class:`~torchgeo_ssg2.inference.RasterWindowDataset`); the
    input is not read here.

    Args:
        meta: The input raster.
        num_classes: Probability channels K.
        keys: The outputs written: ``"classes"``, optionally ``"probabilities"``
            and ``"uncertainty"``.
    """

    def __init__(self, meta: RasterMeta, num_classes: int, keys: Sequence[str]) -> None:
        self.meta = meta
        self.num_classes = num_classes
        self.keys = tuple(keys)
        n_labels = max(num_classes, 2)
        self.class_dtype = 'uint8' if n_labels <= 255 else 'uint16'
        self.class_nodata = 255 if self.class_dtype == 'uint8' else 65535

    def row_dtype(self) -> np.dtype:
        """One output row of every output as a numpy record (for staging files).

        Returns:
            The record: ``classes`` (W), ``probabilities`` (KxW) and
            ``uncertainty`` (W) for the outputs written.
        """
        width = self.meta.width
        shapes: dict[str, tuple[str, tuple[int, ...]]] = {
            'classes': (self.class_dtype, (width,)),
            'probabilities': ('float32', (self.num_classes, width)),
            'uncertainty': ('float32', (width,)),
        }
        return np.dtype([(key, *shapes[key]) for key in self.keys])

    def to_records(self, bands: Mapping[str, np.ndarray]) -> np.ndarray:
        """The values of a block of rows as one record per row (:meth:`row_dtype`).

        Args:
            bands: What :meth:`__call__` gives for n rows.

        Returns:
            n records.
        """
        records = np.empty(len(bands['classes']), dtype=self.row_dtype())
        for key, values in bands.items():
            records[key] = values.swapaxes(0, 1) if key == 'probabilities' else values
        return records

    def from_records(self, records: np.ndarray) -> dict[str, np.ndarray]:
        """The values of a block of rows from its records (:meth:`to_records`).

        Args:
            records: n records of :meth:`row_dtype`.

        Returns:
            ``classes`` nxW, and ``probabilities`` KxnxW and ``uncertainty`` nxW
            when written.
        """
        return {
            key: np.ascontiguousarray(
                records[key].swapaxes(0, 1) if key == 'probabilities' else records[key]
            )
            for key in self.keys
        }

    def __call__(
        self,
        row_off: int,
        probabilities: np.ndarray,
        uncertainty: np.ndarray | None,
        valid: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """The outputs' values for rows ``row_off:row_off + n``.

        Args:
            row_off: First row of the block.
            probabilities: float32 KxnxW blended probabilities.
            uncertainty: float32 nxW blended uncertainty, or None.
            valid: bool nxW, True where the input has data; required for an
                input that may hold nodata (:attr:`RasterMeta.has_nodata`).

        Returns:
            ``classes`` nxW, and on request ``probabilities`` KxnxW and
            ``uncertainty`` nxW.

        Raises:
            ValueError: If the uncertainty is written but not given, or the
                validity of an input with nodata is missing.
        """
        if self.num_classes == 1:
            classes = (probabilities[0] >= 0.5).astype(self.class_dtype)
        else:
            classes = class_indices(probabilities, self.class_dtype)
        invalid = None
        if self.meta.has_nodata:
            if valid is None:
                msg = (
                    f'input raster {self.meta.path} may hold nodata: rows '
                    f'{row_off}:{row_off + probabilities.shape[1]} need its validity'
                )
                raise ValueError(msg)
            invalid = ~valid
            classes[invalid] = self.class_nodata
        bands = {'classes': classes}
        if 'probabilities' in self.keys:
            probs = probabilities.copy() if invalid is not None else probabilities
            if invalid is not None:
                probs[:, invalid] = np.nan
            bands['probabilities'] = probs
        if 'uncertainty' in self.keys:
            if uncertainty is None:
                msg = 'uncertainty output requested but the model gave none'
                raise ValueError(msg)
            unc = uncertainty.copy() if invalid is not None else uncertainty
            if invalid is not None:
                unc[invalid] = np.nan
            bands['uncertainty'] = unc
        return bands


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
        protected: Inputs besides ``meta.path`` that no output may replace, by
            role (see :func:`check_output_free`).
        class_names: Class names (see :func:`class_labels`).
        palette: RGB colours of the classes (see :func:`class_labels`).
        cog: Write Cloud-Optimized GeoTIFFs with overviews.
        sweep: Remove staging files of the output left by processes that no
            longer run (:func:`sweep_staging`); False where other ranks' strips
            of the output are in place.
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
        protected: Mapping[str, Path] | None = None,
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        cog: bool = False,
        sweep: bool = True,
    ) -> None:
        self.meta = meta
        self.num_classes = num_classes
        self.block_size = block_size
        self.cog = cog
        self.paths = output_paths(output, probabilities, uncertainty)
        protected = ProtectedFiles.of(protected).including({'input raster': meta.path})
        check_output_free(self.paths, overwrite, protected)
        if sweep:
            sweep_staging(self.paths['classes'], protected)
        names, colours = class_labels(num_classes, class_names, palette)
        self.bands = BlockBands(meta, num_classes, tuple(self.paths))
        base: dict[str, Any] = {
            'driver': 'GTiff',
            'width': meta.width,
            'height': meta.height,
            'crs': meta.crs,
            'transform': meta.transform,
            'tiled': True,
            'blockxsize': block_size,
            'blockysize': block_size,
            'compress': COMPRESSION['probabilities'],
            'interleave': 'band',
            'BIGTIFF': 'IF_SAFER',
            'num_threads': gdal_threads(),
        }
        profiles = {
            'classes': base
            | {
                'count': 1,
                'dtype': self.bands.class_dtype,
                'nodata': self.bands.class_nodata,
                'compress': COMPRESSION['classes'],
            },
            'probabilities': base
            | {'count': num_classes, 'dtype': 'float32', 'nodata': float('nan')},
            'uncertainty': base
            | {'count': 1, 'dtype': 'float32', 'nodata': float('nan')},
        }
        listed = ', '.join(f'{k} {name}' for k, name in enumerate(names))
        prob_names = names[1:2] if num_classes == 1 else names[:num_classes]
        descriptions = {
            'classes': (f'class ({listed})',),
            'probabilities': tuple(f'probability of {name}' for name in prob_names),
            'uncertainty': (UNCERTAINTY_DESCRIPTION,),
        }
        tags = {'CLASS_NAMES': json.dumps(list(names))}
        self._tmp: dict[str, Path] = {}
        self._dst: dict[str, Any] = {}
        try:
            for key, path in self.paths.items():
                tmp = staging_path(path)
                self._tmp[key] = tmp
                tmp.unlink(missing_ok=True)
                staging_path(path, suffix='-cog').unlink(missing_ok=True)
                dst = open_raster(tmp, 'w', **profiles[key])
                self._dst[key] = dst
                dst.descriptions = descriptions[key]
                dst.update_tags(**tags)
                if key == 'classes':
                    dst.update_tags(1, **{f'CLASS_{k}': n for k, n in enumerate(names)})
                    dst.write_colormap(
                        1, {k: (*rgb, 255) for k, rgb in enumerate(colours)}
                    )
                elif key == 'probabilities':
                    for b, name in enumerate(prob_names, start=1):
                        dst.update_tags(b, CLASS=name)
        except BaseException:
            self.abort()
            raise

    def write_block(
        self,
        row_off: int,
        probabilities: np.ndarray,
        uncertainty: np.ndarray | None,
        valid: np.ndarray | None = None,
    ) -> None:
        """Write rows ``row_off:row_off + n`` of all outputs.

        Args:
            row_off: First row of the block.
            probabilities: float32 KxnxW blended probabilities.
            uncertainty: float32 nxW blended uncertainty, or None.
            valid: bool nxW, True where the input has data (see
                :class:`BlockBands`).
        """
        bands = self.bands(row_off, probabilities, uncertainty, valid)
        self.write_bands(row_off, bands)

    def write_bands(self, row_off: int, bands: Mapping[str, np.ndarray]) -> None:
        """Write rows ``row_off:row_off + n`` of the outputs' final values.

        Args:
            row_off: First row of the block.
            bands: What :class:`BlockBands` gives for the block.
        """
        n = bands['classes'].shape[0]
        window = Window(0, row_off, self.meta.width, n)
        self._dst['classes'].write(bands['classes'], 1, window=window)
        if 'probabilities' in self._dst:
            self._dst['probabilities'].write(bands['probabilities'], window=window)
        if 'uncertainty' in self._dst:
            self._dst['uncertainty'].write(bands['uncertainty'], 1, window=window)

    def commit(self) -> dict[str, Path]:
        """Close the staging files and move them onto the output paths.

        With ``cog``, each staging file is first copied by GDAL's COG driver
        (which builds the overviews) into a second staging file, and that one is
        moved into place.

        Returns:
            The written files.
        """
        try:
            self._close()
            if self.cog:
                for key, path in self.paths.items():
                    cog = staging_path(path, suffix='-cog')
                    self._tmp[f'{key}-cog'] = cog
                    rasterio.shutil.copy(
                        self._tmp[key],
                        cog,
                        driver='COG',
                        COMPRESS=COMPRESSION[key],
                        BLOCKSIZE=self.block_size,
                        OVERVIEWS='AUTO',
                        RESAMPLING='NEAREST' if key == 'classes' else 'AVERAGE',
                        BIGTIFF='IF_SAFER',
                    )
                    self._tmp.pop(key).unlink()
                    self._tmp[key] = self._tmp.pop(f'{key}-cog')
            for key, path in self.paths.items():
                os.replace(self._tmp[key], path)
                del self._tmp[key]
        finally:
            self.abort()
        return dict(self.paths)

    def abort(self) -> None:
        """Close and delete whatever staging files remain."""
        self._close()
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)
        self._tmp.clear()

    def _close(self) -> None:
        """Close open datasets."""
        for dst in self._dst.values():
            dst.close()
        self._dst.clear()
