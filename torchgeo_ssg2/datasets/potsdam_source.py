"""ISPRS Potsdam: finding and reading the files of the official distribution.

The distribution comes as folders or as the zips it is published in;
:class:`PotsdamSource` finds every tile's image, DSM and label files in either
form, and the readers here open them (with their world files) and decode the
label colours.
"""

import os
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import rasterio
import rasterio.merge
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.transform import Affine
from rasterio.windows import Window
from torchgeo.datasets import (
    DatasetNotFoundError,
)
from torchgeo.datasets.utils import Path

from .potsdam_protocol import ALL_BANDS, BOUNDARY_COLOR, CLASSES, COLORMAP, IGNORE_INDEX

__all__ = (
    'PotsdamLabelError',
    'PotsdamSource',
    'SourceFile',
    'decode_potsdam_labels',
    'open_raster',
    'read_dsm',
    'read_raster',
    'world_file_transform',
)


class PotsdamLabelError(ValueError):
    """A label tile holds colours outside the Potsdam palette."""

    def __init__(self, path: str, colors: Mapping[tuple[int, int, int], int]) -> None:
        """Initialize a new PotsdamLabelError.

        Args:
            path: the label file.
            colors: each unknown RGB colour and its pixel count.
        """
        self.path = path
        self.colors = dict(colors)
        items = sorted(self.colors.items(), key=lambda kv: -kv[1])
        listed = ', '.join(f'RGB{c}: {n} px' for c, n in items[:10])
        more = f' and {len(items) - 10} more colours' if len(items) > 10 else ''
        super().__init__(
            f'{path}: unknown label colours {listed}{more} '
            f'(palette: {dict(zip(CLASSES, COLORMAP, strict=True))}); '
            "pass unknown_colors='ignore' to map them to the ignore index"
        )


def decode_potsdam_labels(
    rgb: np.typing.NDArray[np.uint8],
    path: str = '<array>',
    eroded: bool = False,
    unknown_colors: Literal['error', 'ignore'] = 'error',
) -> np.typing.NDArray[np.uint8]:
    """Decode an RGB label array into class indices in torchgeo's order.

    Args:
        rgb: array of shape (3, H, W), uint8.
        path: the file it came from (for error messages).
        eroded: whether the array comes from the eroded set, whose black boundary
            pixels become :data:`IGNORE_INDEX`.
        unknown_colors: ``"error"`` raises on colours outside the palette,
            ``"ignore"`` maps them to :data:`IGNORE_INDEX`.

    Returns:
        uint8 array of shape (H, W), values 0..5 or :data:`IGNORE_INDEX`.

    Raises:
        PotsdamLabelError: If unknown colours are found and *unknown_colors* is
            ``"error"``.
    """
    code = (rgb[0].astype(np.int32) << 16) | (rgb[1].astype(np.int32) << 8) | rgb[2]
    out = np.full(code.shape, IGNORE_INDEX, dtype=np.uint8)
    known = np.zeros(code.shape, dtype=bool)
    palette = list(enumerate(COLORMAP))
    if eroded:
        palette.append((IGNORE_INDEX, BOUNDARY_COLOR))
    for index, (r, g, b) in palette:
        hit = code == ((r << 16) | (g << 8) | b)
        out[hit] = index
        known |= hit
    if unknown_colors == 'error' and not known.all():
        values, counts = np.unique(code[~known], return_counts=True)
        colors = {
            (int(v >> 16) & 255, int(v >> 8) & 255, int(v) & 255): int(n)
            for v, n in zip(values, counts, strict=True)
        }
        raise PotsdamLabelError(path, colors)
    return out


class SourceFile(NamedTuple):
    """One file of the official distribution, extracted or inside a zip."""

    #: Path rasterio opens (``/vsizip/...`` for a zip member).
    path: str
    #: Path shown in messages (``archive.zip!member`` for a zip member).
    display: str
    #: The zip holding it, if any.
    archive: str | None = None
    #: Its name inside the zip, if any.
    member: str | None = None

    def sidecar(self, suffix: str) -> bytes | None:
        """Read a file beside this one (such as a ``.tfw`` world file).

        Args:
            suffix: the sidecar's suffix, replacing this file's.

        Returns:
            Its bytes, or None where there is no such file.
        """
        if self.archive is not None and self.member is not None:
            name = os.path.splitext(self.member)[0] + suffix
            with zipfile.ZipFile(self.archive) as zf:
                try:
                    return zf.read(name)
                except KeyError:
                    return None
        name = os.path.splitext(self.path)[0] + suffix
        if os.path.isfile(name):
            with open(name, 'rb') as f:
                return f.read()
        return None


@contextmanager
def open_raster(source: SourceFile) -> Iterator[DatasetReader]:
    """Open a raster of the distribution with a clear error.

    Args:
        source: the file.

    Yields:
        The open rasterio dataset.

    Raises:
        RuntimeError: If it cannot be opened as a raster.
    """
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NotGeoreferencedWarning)
        try:
            ds = rasterio.open(source.path)
        except RasterioIOError as err:
            raise RuntimeError(f'{source.display}: unreadable raster ({err})') from err
    with ds:
        yield ds


def read_raster(
    source: SourceFile,
    indexes: int | Sequence[int] | None = None,
    window: Window | None = None,
    out_shape: tuple[int, ...] | None = None,
) -> np.typing.NDArray[Any]:
    """Read (part of) a raster of the distribution with a clear error.

    Args:
        source: the file.
        indexes: 1-based band indexes (all bands when None).
        window: the pixel window (all when None).
        out_shape: resample to this shape (bilinear).

    Returns:
        The array.

    Raises:
        RuntimeError: If the file cannot be read.
    """
    with open_raster(source) as ds:
        try:
            kwargs: dict[str, Any] = {'indexes': indexes, 'window': window}
            if out_shape is not None:
                kwargs['out_shape'] = out_shape
                kwargs['resampling'] = rasterio.enums.Resampling.bilinear
            return ds.read(**kwargs)
        except RasterioIOError as err:
            raise RuntimeError(f'{source.display}: unreadable raster ({err})') from err


def world_file_transform(source: SourceFile) -> Affine | None:
    """Read the ``.tfw`` world file beside a tile, if any.

    Args:
        source: the tile.

    Returns:
        The pixel-corner affine transform, or None.

    Raises:
        ValueError: If the world file is malformed.
    """
    data = source.sidecar('.tfw')
    if data is None:
        return None
    try:
        a, d, b, e, c, f = (float(v) for v in data.decode().split())
    except ValueError as err:
        raise ValueError(f'{source.display}: malformed .tfw world file') from err
    # A world file gives the centre of the upper-left pixel.
    return Affine(a, b, c - a / 2 - b / 2, d, e, f - d / 2 - e / 2)


class PotsdamSource:
    """The files of the official ISPRS Potsdam distribution under one root.

    Each part is looked for as a folder ``root/<part>/`` (searched recursively), else
    as the distributed archive ``root/<part>.zip`` (read in place, never extracted);
    label tiles directly under ``root`` (torchgeo's extracted layout) are accepted too.

    ============  ============================  ======================================
    part          folder / zip                  file name
    ============  ============================  ======================================
    ``image``     ``4_Ortho_RGBIR``             ``top_potsdam_2_10_RGBIR.tif`` (+.tfw)
    ``dsm``       ``1_DSM``                     ``dsm_potsdam_02_10.tif``
    ``full``      ``5_Labels_all``              ``top_potsdam_2_10_label.tif``
    ``eroded``    ``5_Labels_all_noBoundary``   ``top_potsdam_2_10_label_noBoundary.tif``
    ============  ============================  ======================================
    """

    #: part -> (folder or zip stem, file-name pattern with the tile's two numbers).
    parts: ClassVar[dict[str, tuple[str, str]]] = {
        'image': ('4_Ortho_RGBIR', r'top_potsdam_(\d+)_(\d+)_RGBIR\.tif'),
        'dsm': ('1_DSM', r'dsm_potsdam_(\d+)_(\d+)\.tif'),
        'full': ('5_Labels_all', r'top_potsdam_(\d+)_(\d+)_label\.tif'),
        'eroded': (
            '5_Labels_all_noBoundary',
            r'top_potsdam_(\d+)_(\d+)_label_noBoundary\.tif',
        ),
    }

    def __init__(self, root: Path) -> None:
        """Index the distribution.

        Args:
            root: folder holding the distribution.

        Raises:
            RuntimeError: If a zip of the distribution is unreadable.
        """
        self.root = str(root)
        self.files: dict[str, dict[str, SourceFile]] = {}
        for part, (folder, pattern) in self.parts.items():
            self.files[part] = self._find(folder, re.compile(pattern + '$'), part)

    @staticmethod
    def _key(match: re.Match[str]) -> str:
        return f'{int(match.group(1))}_{int(match.group(2))}'

    def _find(
        self, folder: str, pattern: re.Pattern[str], part: str
    ) -> dict[str, SourceFile]:
        found: dict[str, SourceFile] = {}
        directory = os.path.join(self.root, folder)
        archive = directory + '.zip'
        if os.path.isdir(directory):
            for dirpath, _, filenames in sorted(os.walk(directory)):
                for name in sorted(filenames):
                    match = pattern.match(name)
                    if match:
                        path = os.path.join(dirpath, name)
                        found.setdefault(self._key(match), SourceFile(path, path))
        elif os.path.isfile(archive):
            try:
                with zipfile.ZipFile(archive) as zf:
                    names = zf.namelist()
            except (zipfile.BadZipFile, OSError) as err:
                raise RuntimeError(
                    f'{archive}: unreadable zip archive ({err})'
                ) from err
            absolute = os.path.abspath(archive)
            for member in sorted(names):
                match = pattern.match(os.path.basename(member))
                if match:
                    found.setdefault(
                        self._key(match),
                        SourceFile(
                            f'/vsizip/{absolute}/{member}',
                            f'{archive}!{member}',
                            absolute,
                            member,
                        ),
                    )
        elif part in ('full', 'eroded') and os.path.isdir(self.root):
            for name in sorted(os.listdir(self.root)):
                match = pattern.match(name)
                if match:
                    path = os.path.join(self.root, name)
                    found.setdefault(self._key(match), SourceFile(path, path))
        return found

    def missing(self, tiles: Sequence[str], parts: Sequence[str]) -> list[str]:
        """List the expected files that are absent.

        Args:
            tiles: tile ids.
            parts: parts of the distribution (keys of :attr:`parts`).

        Returns:
            One ``"<folder>: <file name>"`` line per absent file.
        """
        lines = []
        for part in parts:
            folder = self.parts[part][0]
            for tile in tiles:
                if tile not in self.files[part]:
                    lines.append(f'{folder}: {self.expected_name(part, tile)}')
        return lines

    @staticmethod
    def expected_name(part: str, tile: str) -> str:
        """Return the official file name of a part of a tile.

        Args:
            part: key of :attr:`parts`.
            tile: tile id such as ``"2_10"``.

        Returns:
            The file name.
        """
        a, b = (int(v) for v in tile.split('_'))
        return {
            'image': f'top_potsdam_{a}_{b}_RGBIR.tif',
            'dsm': f'dsm_potsdam_{a:02d}_{b:02d}.tif',
            'full': f'top_potsdam_{a}_{b}_label.tif',
            'eroded': f'top_potsdam_{a}_{b}_label_noBoundary.tif',
        }[part]

    def require(self, tiles: Sequence[str], parts: Sequence[str]) -> None:
        """Raise if any expected file is absent.

        Args:
            tiles: tile ids.
            parts: parts of the distribution.

        Raises:
            DatasetNotFoundError: If no file of the distribution was found at all.
            FileNotFoundError: If some files are absent (all are listed).
        """
        if not any(self.files[p] for p in self.parts):
            raise DatasetNotFoundError(self)
        missing = self.missing(tiles, parts)
        if missing:
            raise FileNotFoundError(
                f'ISPRS Potsdam under {self.root!r}: {len(missing)} missing file(s): '
                + '; '.join(missing)
            )


def _band_positions(band_order: Sequence[str]) -> dict[str, int]:
    order = tuple(band_order)
    if sorted(order) != sorted(ALL_BANDS[:4]):
        raise ValueError(
            f'band_order {order!r} must be a permutation of {ALL_BANDS[:4]}'
        )
    return {band: i + 1 for i, band in enumerate(order)}


def read_dsm(
    source: SourceFile, shape: Sequence[int], window: Window | None = None
) -> np.typing.NDArray[np.float32]:
    """Read a DSM on its tile's pixel grid.

    A DSM whose size differs from its tile (a known defect of the distribution) is
    resampled (bilinear) to the tile's size.

    Args:
        source: the DSM file.
        shape: (H, W) of the tile.
        window: optional pixel window of the tile.

    Returns:
        float32 (H, W) or the window's shape.
    """
    with open_raster(source) as ds:
        same = (ds.height, ds.width) == tuple(shape)
    if same:
        return read_raster(source, 1, window=window).astype(np.float32)
    full = read_raster(source, 1, out_shape=tuple(shape)).astype(np.float32)
    if window is None:
        return full
    rows, cols = window.toslices()
    return full[rows, cols]
