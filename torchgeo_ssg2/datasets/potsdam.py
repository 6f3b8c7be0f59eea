"""ISPRS Potsdam datasets: the official distribution and its prepared GeoTIFF form.

Protocols, classes and tiles are in :mod:`.potsdam_protocol`, file discovery and
reading in :mod:`.potsdam_source`. Two datasets live here:

* :class:`Potsdam`, a :class:`~torchgeo.datasets.NonGeoDataset` that reads the
  official ISPRS distribution, zipped or extracted, one whole 6000x6000 tile per item;
* :class:`PreparedPotsdam`, a :class:`~torchgeo.datasets.RasterDataset` that reads
  windows from the tiled GeoTIFFs written once by
  :func:`torchgeo_ssg2.datasets.prepare.prepare_potsdam`, so that torchgeo's samplers
  (and :class:`torchgeo_ssg2.episodes.GeoEpisodeSampler`) apply and whole tiles
  are never collated.

Class indices follow :class:`torchgeo.datasets.Potsdam2D` (clutter is 0). Two
evaluation protocols are available by name (:data:`PROTOCOLS`):

* ``"geoseg"``: 5 classes, clutter excluded (mapped to the ignore index), tile 7_10
  dropped, evaluation on the eroded labels (``5_Labels_all_noBoundary``), as in
  GeoSeg/UNetFormer;
* ``"full"``: 6 classes including clutter, full labels (``5_Labels_all``) everywhere.
"""

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from rasterio.errors import RasterioError
from rasterio.windows import Window
from torch import Tensor
from torchgeo.datasets import (
    DatasetNotFoundError,
    IntersectionDataset,
    NonGeoDataset,
    RasterDataset,
    RGBBandsMissingError,
)
from torchgeo.datasets.utils import GeoSlice, Path, Sample

from ..plotting import plot_segmentation
from .potsdam_protocol import (
    ALL_BANDS,
    CLASSES,
    COLORMAP,
    IGNORE_INDEX,
    LabelSet,
    PotsdamProtocol,
    _resolve_bands,
    get_protocol,
    split_tiles,
)
from .potsdam_source import (
    PotsdamSource,
    _band_positions,
    decode_potsdam_labels,
    open_raster,
    read_dsm,
    read_raster,
)

__all__ = (
    'Potsdam',
    'PotsdamImages',
    'PotsdamMasks',
    'PreparedPotsdam',
    'ProtocolRemap',
    'prepared_paths',
)


def _display_bands(bands: Sequence[str]) -> list[int]:
    """Indexes of the bands to show: RGB, else the IRRG false colour."""
    for choice in (('R', 'G', 'B'), ('IR', 'R', 'G')):
        if all(b in bands for b in choice):
            return [list(bands).index(b) for b in choice]
    raise RGBBandsMissingError


class _PotsdamPlot:
    """``plot`` of the Potsdam datasets: image (RGB or IRRG), mask, prediction."""

    bands: Sequence[str]
    protocol: Any

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


class Potsdam(_PotsdamPlot, NonGeoDataset):
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


class PotsdamImages(RasterDataset):
    """The prepared 5-band image stacks (R, G, B, IR, DSM; float32)."""

    filename_glob = 'top_potsdam_*_image.tif'
    filename_regex = r'^top_potsdam_(?P<tile>\d+_\d+)_image\.tif$'
    all_bands = ALL_BANDS
    rgb_bands = ('R', 'G', 'B')
    is_image = True


class PotsdamMasks(RasterDataset):
    """The prepared class-index masks (torchgeo's class order; ignore outside)."""

    filename_glob = 'top_potsdam_*_label*.tif'
    is_image = False
    nodata = IGNORE_INDEX


class ProtocolRemap:
    """Sample transform: the mask from torchgeo's class order to a protocol's.

    Args:
        protocol: The protocol.
    """

    def __init__(self, protocol: PotsdamProtocol) -> None:
        self.protocol = protocol

    def __call__(self, sample: Sample) -> Sample:
        """Remap the ``mask`` of a sample.

        Args:
            sample: A sample with ``mask``.

        Returns:
            The sample, its mask in protocol indices.
        """
        sample['mask'] = self.protocol.remap(sample['mask'])
        return sample


class PreparedPotsdam(_PotsdamPlot, IntersectionDataset):
    """ISPRS Potsdam as prepared GeoTIFFs, indexed by geographic windows.

    An :class:`~torchgeo.datasets.IntersectionDataset` of two torchgeo
    ``RasterDataset`` objects, :class:`PotsdamImages` and :class:`PotsdamMasks`
    (the protocol's remapping as the masks' transform), over the tiled, compressed, georeferenced files
    written by :func:`torchgeo_ssg2.datasets.prepare.prepare_potsdam` (or
    ``torchgeo-ssg2 prepare potsdam SRC DST``): a 5-band float32 stack (R, G, B,
    IR, DSM) and two uint8 class-index masks per tile. Only the requested window
    is read, so torchgeo samplers and
    :class:`~torchgeo_ssg2.episodes.GeoEpisodeSampler` apply.

    Samples:

    * ``image``: float32 (C, h, w)
    * ``mask``: long (h, w), protocol class indices or the ignore index (also outside
      the tiles)
    * ``bounds``, ``transform``: float (9,), torchgeo 0.10 layout
    """

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
        images = PotsdamImages(
            paths=[p['image'] for p in paths],
            crs=crs,
            res=res,
            bands=_resolve_bands(bands),
            cache=cache,
        )
        # torchgeo's index skips files that rasterio cannot open: refuse instead.
        self._refuse_skipped(images, [p['image'] for p in paths])
        masks = PotsdamMasks(
            paths=[p[self.labels] for p in paths],
            crs=images.crs,
            res=images.res,
            transforms=ProtocolRemap(self.protocol),
            cache=cache,
        )
        self._refuse_skipped(masks, [p[self.labels] for p in paths])
        self.images, self.masks = images, masks
        self.bands = images.bands
        super().__init__(images, masks, transforms=transforms)

    def _refuse_skipped(self, dataset: RasterDataset, paths: Sequence[str]) -> None:
        """Raise for the first file that torchgeo's index skipped."""
        indexed = set(dataset.index.filepath)
        for path in paths:
            if path not in indexed:
                raise RuntimeError(
                    f'{path}: unreadable raster (truncated or corrupt); '
                    f'rerun `torchgeo-ssg2 prepare potsdam SRC {self.root} --overwrite`'
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
        image = _read_window(self.images, index)
        mask = _read_window(self.masks, index)
        sample: Sample = {
            'image': image['image'].float(),
            'mask': mask['mask'],
            'bounds': image['bounds'],
            'transform': image['transform'],
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


def _read_window(dataset: RasterDataset, index: GeoSlice) -> Sample:
    """Read a window of a RasterDataset; a read error names the files.

    Args:
        dataset: The dataset.
        index: The window.

    Returns:
        The sample.

    Raises:
        RuntimeError: If the window's pixels cannot be read.
    """
    try:
        return dataset[index]
    except RasterioError as err:
        x, y = index[0], index[1]  # type: ignore[index]
        hits = dataset.index.cx[x.start : x.stop, y.start : y.stop]
        files = ', '.join(str(f) for f in hits.filepath)
        raise RuntimeError(
            f'{files}: unreadable pixels in window x {x.start}-{x.stop}, '
            f'y {y.start}-{y.stop} (truncated or corrupt file: {err})'
        ) from err
