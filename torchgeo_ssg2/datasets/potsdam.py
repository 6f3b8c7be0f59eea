"""ISPRS Potsdam: the official distribution and its prepared GeoTIFF form.

Two datasets live here:

* :class:`Potsdam`, a :class:`~torchgeo.datasets.NonGeoDataset` that reads the
  official ISPRS distribution, zipped or extracted, one whole 6000x6000 tile per item;
* :class:`PreparedPotsdam`, a :class:`~torchgeo.datasets.RasterDataset` that reads
  windows from the tiled GeoTIFFs written once by
  :func:`torchgeo_ssg2.datasets.prepare.prepare_potsdam`, so that torchgeo's samplers
  (and :class:`torchgeo_ssg2.samplers.SupportGeoSampler`) apply and whole tiles are
  never collated.

Class indices follow :class:`torchgeo.datasets.Potsdam2D` (clutter is 0). Two
evaluation protocols are available by name (:data:`PROTOCOLS`):

* ``"geoseg"``: 5 classes, clutter excluded (mapped to the ignore index), tile 7_10
  dropped, evaluation on the eroded labels (``5_Labels_all_noBoundary``), as in
  GeoSeg/UNetFormer;
* ``"full"``: 6 classes including clutter, full labels (``5_Labels_all``) everywhere.
"""

import os
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import pandas as pd
import rasterio
import rasterio.merge
import torch
from matplotlib.figure import Figure
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.transform import Affine
from rasterio.windows import Window
from torch import Tensor
from torchgeo.datasets import (
    DatasetNotFoundError,
    NonGeoDataset,
    Potsdam2D,
    RasterDataset,
    RGBBandsMissingError,
)
from torchgeo.datasets.utils import GeoSlice, Path, Sample

from ..plotting import plot_segmentation

__all__ = (
    'BAND_SETS',
    'CLASSES',
    'COLORMAP',
    'IGNORE_INDEX',
    'PROTOCOLS',
    'TEST_TILES',
    'TRAIN_TILES',
    'Potsdam',
    'PotsdamLabelError',
    'PotsdamProtocol',
    'PotsdamSource',
    'PreparedPotsdam',
    'SourceFile',
    'decode_potsdam_labels',
    'get_protocol',
    'prepared_paths',
    'split_tiles',
)

#: Class names, in torchgeo's :class:`~torchgeo.datasets.Potsdam2D` order.
CLASSES: tuple[str, ...] = tuple(Potsdam2D.classes)

#: RGB label colours, in the same order as :data:`CLASSES`.
COLORMAP: tuple[tuple[int, int, int], ...] = tuple(
    (int(r), int(g), int(b)) for r, g, b in Potsdam2D.colormap
)

#: Colour of the boundary pixels of the eroded label set (``5_Labels_all_noBoundary``).
BOUNDARY_COLOR = (0, 0, 0)

#: Mask value for pixels excluded from losses and metrics (eroded boundaries, the
#: clutter class under the ``"geoseg"`` protocol, pixels outside every tile).
IGNORE_INDEX = 255

#: Every band of the SSG2 input, in the order of the prepared image stack.
ALL_BANDS: tuple[str, ...] = ('R', 'G', 'B', 'IR', 'DSM')

#: Named band selections.
BAND_SETS: dict[str, tuple[str, ...]] = {
    'RGB': ('R', 'G', 'B'),
    'IRRG': ('IR', 'R', 'G'),
    'RGBIR': ('R', 'G', 'B', 'IR'),
    'RGBIR+DSM': ('R', 'G', 'B', 'IR', 'DSM'),
}


def _tile_sort_key(tile: str) -> tuple[int, int]:
    a, b = tile.split('_')
    return int(a), int(b)


def _strip(names: Sequence[str]) -> tuple[str, ...]:
    return tuple(
        sorted((n.removeprefix('top_potsdam_') for n in names), key=_tile_sort_key)
    )


#: The 24 tiles of the official training split (``"2_10"`` … ``"7_12"``).
TRAIN_TILES: tuple[str, ...] = _strip(Potsdam2D.splits['train'])

#: The 14 tiles of the official test split.
TEST_TILES: tuple[str, ...] = _strip(Potsdam2D.splits['test'])

#: The tile GeoSeg drops for its "error annotations".
_BAD_TILE = '7_10'

LabelSet = Literal['full', 'eroded']


@dataclass(frozen=True)
class PotsdamProtocol:
    """An evaluation protocol: which classes are scored and which labels are used.

    Masks are stored in torchgeo's 6-class order (:data:`CLASSES`); :meth:`remap` maps
    them to the protocol's class indices.
    """

    #: The protocol's name, recorded with the metrics it produces.
    name: str
    #: Class names scored under the protocol, in index order.
    classes: tuple[str, ...]
    #: Label colours of those classes (for plotting).
    colormap: tuple[tuple[int, int, int], ...]
    #: For every stored value 0..255 the protocol's class index (or the ignore index).
    lookup: tuple[int, ...] = field(repr=False)
    #: Label set for training.
    train_labels: LabelSet
    #: Label set for validation and test.
    eval_labels: LabelSet
    #: Whether tile 7_10 is dropped from training by default.
    drop_7_10: bool
    #: Value of excluded pixels.
    ignore_index: int = IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        """Number of real classes scored under the protocol."""
        return len(self.classes)

    def labels_for(self, split: str) -> LabelSet:
        """Return the label set a split uses.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            ``"full"`` or ``"eroded"``.
        """
        return self.train_labels if split == 'train' else self.eval_labels

    def remap(self, mask: Tensor) -> Tensor:
        """Map a mask in torchgeo's class order to the protocol's indices.

        Args:
            mask: integer mask of any shape, values in 0..255.

        Returns:
            long tensor of the same shape on the same device.
        """
        lut = torch.tensor(self.lookup, dtype=torch.long, device=mask.device)
        return lut[mask.long()]


def _make_protocol(
    name: str,
    excluded: Sequence[str],
    train_labels: LabelSet,
    eval_labels: LabelSet,
    drop_7_10: bool,
) -> PotsdamProtocol:
    lookup = [IGNORE_INDEX] * 256
    classes: list[str] = []
    colors: list[tuple[int, int, int]] = []
    for i, (cls, color) in enumerate(zip(CLASSES, COLORMAP, strict=True)):
        if cls in excluded:
            continue
        lookup[i] = len(classes)
        classes.append(cls)
        colors.append(color)
    return PotsdamProtocol(
        name=name,
        classes=tuple(classes),
        colormap=tuple(colors),
        lookup=tuple(lookup),
        train_labels=train_labels,
        eval_labels=eval_labels,
        drop_7_10=drop_7_10,
    )


#: The evaluation protocols by name.
PROTOCOLS: dict[str, PotsdamProtocol] = {
    'geoseg': _make_protocol(
        'geoseg', ('Clutter/background',), 'full', 'eroded', drop_7_10=True
    ),
    'full': _make_protocol('full', (), 'full', 'full', drop_7_10=False),
}


def get_protocol(protocol: str | PotsdamProtocol) -> PotsdamProtocol:
    """Look a protocol up by name.

    Args:
        protocol: a name from :data:`PROTOCOLS` or a protocol.

    Returns:
        The protocol.

    Raises:
        ValueError: If the name is unknown.
    """
    if isinstance(protocol, PotsdamProtocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(
            f'unknown Potsdam protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}'
        )
    return PROTOCOLS[protocol]


def split_tiles(
    split: str, val_tiles: Sequence[str] = ('2_10',), drop_7_10: bool = False
) -> tuple[str, ...]:
    """Return the tiles of a split.

    Args:
        split: ``"train"`` (the official 24 training tiles less the validation tiles
            and, optionally, 7_10), ``"val"`` (the validation tiles) or ``"test"``
            (the official 14 test tiles).
        val_tiles: tiles taken out of the official training split for validation.
        drop_7_10: whether to drop tile 7_10 (erroneous annotations) from training.

    Returns:
        Tile ids such as ``"2_10"``.

    Raises:
        ValueError: If the split is unknown or a validation tile is not an official
            training tile.
    """
    unknown = [t for t in val_tiles if t not in TRAIN_TILES]
    if unknown:
        raise ValueError(
            f'validation tiles {unknown} are not official training tiles {TRAIN_TILES}'
        )
    if split == 'train':
        return tuple(
            t
            for t in TRAIN_TILES
            if t not in val_tiles and not (drop_7_10 and t == _BAD_TILE)
        )
    if split == 'val':
        return tuple(val_tiles)
    if split == 'test':
        return TEST_TILES
    raise ValueError(f"unknown split {split!r}; choose 'train', 'val' or 'test'")


def _resolve_bands(bands: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(bands, str):
        if bands not in BAND_SETS:
            raise ValueError(
                f'unknown band set {bands!r}; choose one of {sorted(BAND_SETS)} '
                f'or a sequence of {ALL_BANDS}'
            )
        return BAND_SETS[bands]
    bands = tuple(bands)
    bad = [b for b in bands if b not in ALL_BANDS]
    if bad or not bands:
        raise ValueError(f'invalid bands {bands!r}; each must be one of {ALL_BANDS}')
    return bands


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


def _display_bands(bands: Sequence[str]) -> list[int]:
    """Indexes of the bands to show: RGB, else the IRRG false colour."""
    for choice in (('R', 'G', 'B'), ('IR', 'R', 'G')):
        if all(b in bands for b in choice):
            return [list(bands).index(b) for b in choice]
    raise RGBBandsMissingError


class Potsdam(NonGeoDataset):
    """ISPRS Potsdam 2D semantic labelling, read from the official distribution.

    Reads ``4_Ortho_RGBIR``, ``1_DSM``, ``5_Labels_all`` and
    ``5_Labels_all_noBoundary``, as folders or as the distributed zips (read in
    place); see :class:`PotsdamSource` for the file names. One item is one whole tile
    (6000x6000 pixels at 5 cm): use this class to inspect tiles or to evaluate whole
    tiles; train from :class:`PreparedPotsdam`.

    Dataset features:

    * 38 true orthophoto tiles (24 training, 14 test), R, G, B, IR at 5 cm
    * a digital surface model (metres) per tile, resampled to the tile grid where its
      size differs (a known defect of the distribution)
    * 6 classes (torchgeo's :class:`~torchgeo.datasets.Potsdam2D` order), full and
      eroded (boundary-free) label sets

    Samples:

    * ``image``: float32 (C, H, W), raw values (0-255 for R/G/B/IR, metres for DSM)
    * ``mask``: long (H, W), protocol class indices or :data:`IGNORE_INDEX`
    """

    all_bands = ALL_BANDS
    rgb_bands = ('R', 'G', 'B')
    classes = CLASSES
    colormap = COLORMAP

    def __init__(
        self,
        root: Path = 'data',
        split: Literal['train', 'val', 'test'] = 'train',
        bands: str | Sequence[str] = 'RGBIR+DSM',
        protocol: str | PotsdamProtocol = 'geoseg',
        val_tiles: Sequence[str] = ('2_10',),
        drop_7_10: bool | None = None,
        labels: LabelSet | None = None,
        band_order: Sequence[str] = ('R', 'G', 'B', 'IR'),
        unknown_colors: Literal['error', 'ignore'] = 'error',
        transforms: Callable[[Sample], Sample] | None = None,
    ) -> None:
        """Initialize a new Potsdam instance.

        Args:
            root: folder holding the distribution (folders or zips).
            split: ``"train"``, ``"val"`` or ``"test"`` (see :func:`split_tiles`).
            bands: a name from :data:`BAND_SETS` (``"RGB"``, ``"IRRG"``, ``"RGBIR"``,
                ``"RGBIR+DSM"``) or a sequence of band names.
            protocol: ``"geoseg"`` or ``"full"`` (see :data:`PROTOCOLS`).
            val_tiles: official training tiles held out for validation.
            drop_7_10: drop tile 7_10 from training (default: the protocol's choice).
            labels: ``"full"`` or ``"eroded"`` (default: the protocol's choice for
                the split).
            band_order: order of the bands in the ``*_RGBIR.tif`` files.
            unknown_colors: ``"error"`` or ``"ignore"`` (map to the ignore index).
            transforms: a function/transform that takes a sample and returns it
                transformed.

        Raises:
            DatasetNotFoundError: If no part of the distribution is found.
            FileNotFoundError: If a file the split needs is absent.
            RuntimeError: If a zip is unreadable.
            ValueError: If an argument is invalid.
        """
        self.root = root
        self.split = split
        self.protocol = get_protocol(protocol)
        self.bands = _resolve_bands(bands)
        self.labels: LabelSet = labels or self.protocol.labels_for(split)
        if self.labels not in ('full', 'eroded'):
            raise ValueError(f"labels must be 'full' or 'eroded', not {labels!r}")
        if unknown_colors not in ('error', 'ignore'):
            raise ValueError("unknown_colors must be 'error' or 'ignore'")
        self.unknown_colors = unknown_colors
        drop = self.protocol.drop_7_10 if drop_7_10 is None else drop_7_10
        self.tiles = split_tiles(split, tuple(val_tiles), drop)
        if not self.tiles:
            raise ValueError(f'split {split!r} has no tiles')
        self._band_index = _band_positions(band_order)
        self.transforms = transforms
        self.source = PotsdamSource(root)
        parts = ['image', self.labels]
        if 'DSM' in self.bands:
            parts.append('dsm')
        self.source.require(self.tiles, parts)

    @property
    def num_classes(self) -> int:
        """Number of classes under the protocol."""
        return self.protocol.num_classes

    def __len__(self) -> int:
        """Return the number of tiles in the split.

        Returns:
            Number of tiles.
        """
        return len(self.tiles)

    def __getitem__(self, index: int) -> Sample:
        """Return one whole tile.

        Args:
            index: position of the tile in :attr:`tiles`.

        Returns:
            ``{"image": float (C, H, W), "mask": long (H, W)}``.
        """
        tile = self.tiles[index]
        image = self.read_image(tile)
        mask = self.read_mask(tile, image.shape[-2:])
        sample: Sample = {'image': image, 'mask': self.protocol.remap(mask)}
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def read_image(self, tile: str, window: Window | None = None) -> Tensor:
        """Read the selected bands of a tile.

        Args:
            tile: tile id.
            window: optional pixel window.

        Returns:
            float32 (C, H, W).
        """
        source = self.source.files['image'][tile]
        with open_raster(source) as ds:
            shape = (ds.height, ds.width)
        spectral = [b for b in self.bands if b != 'DSM']
        arrays: dict[str, np.typing.NDArray[Any]] = {}
        if spectral:
            data = read_raster(
                source, [self._band_index[b] for b in spectral], window=window
            )
            arrays.update(zip(spectral, data, strict=True))
        if 'DSM' in self.bands:
            arrays['DSM'] = read_dsm(self.source.files['dsm'][tile], shape, window)
        return torch.from_numpy(
            np.stack([arrays[b].astype(np.float32) for b in self.bands])
        )

    def read_mask(self, tile: str, shape: Sequence[int]) -> Tensor:
        """Read and decode a tile's labels (torchgeo order, before :meth:`remap`).

        Args:
            tile: tile id.
            shape: (H, W) of the tile's image.

        Returns:
            uint8 (H, W).

        Raises:
            ValueError: If the label tile's size differs from the image's.
        """
        source = self.source.files[self.labels][tile]
        rgb = read_raster(source, [1, 2, 3])
        if tuple(rgb.shape[1:]) != tuple(shape):
            raise ValueError(
                f'{source.display}: label size {tuple(rgb.shape[1:])} differs from '
                f'the image size {tuple(shape)}'
            )
        decoded = decode_potsdam_labels(
            rgb, source.display, self.labels == 'eroded', self.unknown_colors
        )
        return torch.from_numpy(decoded)

    def plot(
        self,
        sample: Sample,
        show_titles: bool = True,
        suptitle: str | None = None,
        alpha: float = 0.5,
    ) -> Figure:
        """Plot a sample: image, mask and optional prediction.

        Args:
            sample: a sample from :meth:`__getitem__`, optionally with
                ``"prediction"`` (H, W).
            show_titles: whether to title the panels.
            suptitle: optional figure title.
            alpha: opacity of the overlays.

        Returns:
            The figure.

        Raises:
            RGBBandsMissingError: If neither RGB nor IRRG bands are present.
        """
        idx = _display_bands(self.bands)
        return plot_segmentation(
            sample['image'][idx],
            sample['mask'],
            self.protocol.colormap,
            sample.get('prediction'),
            show_titles,
            suptitle,
            alpha,
            stretch=True,
        )


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


def prepared_paths(root: Path, tile: str) -> dict[str, str]:
    """Return the paths :func:`~torchgeo_ssg2.datasets.prepare.prepare_potsdam` writes.

    Args:
        root: the prepared folder.
        tile: tile id.

    Returns:
        ``{"image": ..., "full": ..., "eroded": ...}``.
    """
    root = str(root)
    return {
        'image': os.path.join(root, 'images', f'top_potsdam_{tile}_image.tif'),
        'full': os.path.join(root, 'labels_full', f'top_potsdam_{tile}_label.tif'),
        'eroded': os.path.join(
            root, 'labels_eroded', f'top_potsdam_{tile}_label_noBoundary.tif'
        ),
    }


class PreparedPotsdam(RasterDataset):
    """ISPRS Potsdam as prepared GeoTIFFs, indexed by geographic windows.

    Reads the tiled, compressed, georeferenced files written by
    :func:`torchgeo_ssg2.datasets.prepare.prepare_potsdam` (or
    ``torchgeo-ssg2 prepare potsdam SRC DST``): a 5-band float32 stack
    (R, G, B, IR, DSM) and two uint8 class-index masks per tile. Only the requested
    window is read, so torchgeo samplers (``RandomPatchSampler``,
    ``GriddedPatchSampler``) and :class:`torchgeo_ssg2.samplers.SupportGeoSampler`
    apply.

    Samples:

    * ``image``: float32 (C, h, w)
    * ``mask``: long (h, w), protocol class indices or the ignore index (also outside
      the tiles)
    * ``bounds``, ``transform``: float (9,), torchgeo 0.10 layout
    """

    filename_glob = 'top_potsdam_*_image.tif'
    filename_regex = r'^top_potsdam_(?P<tile>\d+_\d+)_image\.tif$'
    all_bands = ALL_BANDS
    rgb_bands = ('R', 'G', 'B')
    is_image = True

    def __init__(
        self,
        root: Path = 'data',
        split: Literal['train', 'val', 'test'] = 'train',
        bands: str | Sequence[str] = 'RGBIR+DSM',
        protocol: str | PotsdamProtocol = 'geoseg',
        val_tiles: Sequence[str] = ('2_10',),
        drop_7_10: bool | None = None,
        labels: LabelSet | None = None,
        tiles: Sequence[str] | None = None,
        crs: Any = None,
        res: float | tuple[float, float] | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
        cache: bool = True,
    ) -> None:
        """Initialize a new PreparedPotsdam instance.

        Args:
            root: the prepared folder.
            split: ``"train"``, ``"val"`` or ``"test"`` (see :func:`split_tiles`).
            bands: a name from :data:`BAND_SETS` or a sequence of band names.
            protocol: ``"geoseg"`` or ``"full"`` (see :data:`PROTOCOLS`).
            val_tiles: official training tiles held out for validation.
            drop_7_10: drop tile 7_10 from training (default: the protocol's choice).
            labels: ``"full"`` or ``"eroded"`` (default: the protocol's choice).
            tiles: restrict the split to these tiles (default: all of the split).
            crs: CRS to warp to (default: the files').
            res: resolution (default: the files').
            transforms: a function/transform that takes a sample and returns it
                transformed.
            cache: cache open file handles.

        Raises:
            DatasetNotFoundError: If no prepared tile is found.
            FileNotFoundError: If a prepared file of the split is absent.
            RuntimeError: If a prepared file cannot be opened (truncated or
                corrupt; the message names it).
            ValueError: If an argument is invalid.
        """
        self.root = root
        self.split = split
        self.protocol = get_protocol(protocol)
        self.labels: LabelSet = labels or self.protocol.labels_for(split)
        if self.labels not in ('full', 'eroded'):
            raise ValueError(f"labels must be 'full' or 'eroded', not {labels!r}")
        drop = self.protocol.drop_7_10 if drop_7_10 is None else drop_7_10
        split_set = split_tiles(split, tuple(val_tiles), drop)
        if tiles is not None:
            outside = [t for t in tiles if t not in split_set]
            if outside:
                raise ValueError(f'tiles {outside} are not in split {split!r}')
            split_set = tuple(tiles)
        self.tiles = split_set
        paths = [prepared_paths(root, t) for t in self.tiles]
        present = [p for p in paths if os.path.isfile(p['image'])]
        if not present:
            raise DatasetNotFoundError(self)
        missing = [
            p[part]
            for p in paths
            for part in ('image', self.labels)
            if not os.path.isfile(p[part])
        ]
        if missing:
            raise FileNotFoundError(
                f'prepared Potsdam under {str(root)!r} lacks {len(missing)} file(s) of '
                f'split {split!r}: {missing}; run `torchgeo-ssg2 prepare potsdam SRC '
                f'{root}`'
            )
        self._mask_paths = {p['image']: p[self.labels] for p in paths}
        super().__init__(
            paths=[p['image'] for p in paths],
            crs=crs,
            res=res,
            bands=_resolve_bands(bands),
            transforms=transforms,
            cache=cache,
        )
        # torchgeo's index skips files that rasterio cannot open: refuse instead.
        indexed = set(self.index.filepath)
        for p in paths:
            unreadable = [] if p['image'] in indexed else [p['image']]
            try:
                with rasterio.open(p[self.labels]):
                    pass
            except RasterioError:
                unreadable.append(p[self.labels])
            if unreadable:
                raise RuntimeError(
                    f'{unreadable[0]}: unreadable raster (truncated or corrupt); '
                    f'rerun `torchgeo-ssg2 prepare potsdam SRC {root} --overwrite`'
                )

    @property
    def num_classes(self) -> int:
        """Number of classes under the protocol."""
        return self.protocol.num_classes

    def __getitem__(self, index: GeoSlice) -> Sample:
        """Read the image and mask inside a geographic window.

        Args:
            index: ``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax:tres]``.

        Returns:
            ``{"image", "mask", "bounds", "transform"}``.

        Raises:
            IndexError: If the window misses every tile.
            RuntimeError: If the window's pixels cannot be read (the message names
                the files and the window).
        """
        x, y, t = self._disambiguate_slice(index)
        df = self.index.iloc[self.index.index.overlaps(pd.Interval(t.start, t.stop))]
        df = df.iloc[:: t.step]
        df = df.cx[x.start : x.stop, y.start : y.stop]
        if df.empty:
            raise IndexError(
                f'index: {index} not found in dataset with bounds: {self.bounds}'
            )
        files = list(df.filepath)
        try:
            image = self._merge_or_stack(
                files, index, self.band_indexes, out_crs=self.crs
            )
        except RasterioError as err:
            raise RuntimeError(
                f'{", ".join(files)}: unreadable pixels in window x {x.start}-'
                f'{x.stop}, y {y.start}-{y.stop} (truncated or corrupt file: {err})'
            ) from err
        masks = [self._mask_paths[fp] for fp in files]
        try:
            handles = [
                self._cached_load_warp_file(path, self.crs)
                if self.cache
                else self._load_warp_file(path, self.crs)
                for path in masks
            ]
            mask, _ = rasterio.merge.merge(
                handles,
                bounds=(x.start, y.start, x.stop, y.stop),
                res=(x.step, y.step),
                indexes=[1],
                nodata=IGNORE_INDEX,
                resampling=rasterio.enums.Resampling.nearest,
            )
        except RasterioError as err:
            raise RuntimeError(
                f'{", ".join(masks)}: unreadable pixels in window x {x.start}-'
                f'{x.stop}, y {y.start}-{y.stop} (truncated or corrupt file: {err})'
            ) from err
        transform = rasterio.transform.from_origin(x.start, y.stop, x.step, y.step)
        sample: Sample = {
            'image': image.float(),
            'mask': self.protocol.remap(torch.from_numpy(mask[0].astype(np.int64))),
            'bounds': self._slice_to_tensor(index),
            'transform': torch.tensor(transform),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def plot(
        self,
        sample: Sample,
        show_titles: bool = True,
        suptitle: str | None = None,
        alpha: float = 0.5,
    ) -> Figure:
        """Plot a sample: image, mask and optional prediction.

        Args:
            sample: a sample from :meth:`__getitem__`, optionally with
                ``"prediction"`` (h, w).
            show_titles: whether to title the panels.
            suptitle: optional figure title.
            alpha: opacity of the overlays.

        Returns:
            The figure.

        Raises:
            RGBBandsMissingError: If neither RGB nor IRRG bands are present.
        """
        idx = _display_bands(self.bands)
        return plot_segmentation(
            sample['image'][idx],
            sample['mask'],
            self.protocol.colormap,
            sample.get('prediction'),
            show_titles,
            suptitle,
            alpha,
            stretch=True,
        )
