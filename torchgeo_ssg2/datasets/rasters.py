"""A user's own rasters: discovery, mask mapping, input checks and statistics.

Images and masks are given as a folder, a glob, a file or a list of these, or as
a ready :class:`~torchgeo.datasets.RasterDataset`. Every check here reads in
blocks or windows, so memory stays bounded whatever the size of the rasters,
and every error is one line that names the file.
"""

import glob
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
import torch
from rasterio.errors import RasterioError
from torch import Tensor
from torchgeo.datasets import GeoDataset, RasterDataset
from torchgeo.datasets.utils import Sample
from tqdm.auto import tqdm

__all__ = (
    'ImageRasters',
    'MaskMapping',
    'MaskRasters',
    'RasterInputError',
    'RasterSource',
    'check_bands',
    'check_mask_values',
    'check_overlap',
    'open_rasters',
    'raster_files',
    'raster_statistics',
)

#: Images or masks: a folder, a glob, a file, a list of these, or a dataset.
RasterSource = str | Sequence[str] | RasterDataset

#: File name suffixes a folder is searched for.
RASTER_SUFFIXES = ('.tif', '.tiff', '.vrt', '.jp2', '.img')


class RasterInputError(ValueError):
    """An input raster that cannot be trained on; the message names the file."""


class ImageRasters(RasterDataset):
    """Image rasters of any name (``is_image=True``)."""

    filename_glob = '*'
    is_image = True


class MaskRasters(RasterDataset):
    """Mask rasters of any name (``is_image=False``: integer, nearest resampling)."""

    filename_glob = '*'
    is_image = False


def raster_files(
    source: str | os.PathLike[str] | Sequence[Any], what: str
) -> list[str]:
    """The raster files of a folder, a glob, a file or a list of these.

    Args:
        source: The source.
        what: ``'image'`` or ``'mask'``, for messages.

    Returns:
        The files, sorted within each folder or glob, without duplicates.

    Raises:
        RasterInputError: If a path does not exist or nothing is found.
    """
    items = [source] if isinstance(source, str | os.PathLike) else list(source)
    files: list[str] = []
    for item in items:
        path = os.fspath(item)
        if os.path.isdir(path):
            found = sorted(
                str(p)
                for p in Path(path).iterdir()
                if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
            )
        elif glob.has_magic(path):
            found = sorted(p for p in glob.glob(path) if os.path.isfile(p))
        elif os.path.isfile(path):
            found = [path]
        else:
            raise RasterInputError(f'{what} raster not found: {path}')
        if not found:
            raise RasterInputError(f'no {what} rasters found at {path}')
        files += [f for f in found if f not in files]
    if not files:
        raise RasterInputError(f'no {what} rasters given')
    return files


def open_rasters(
    source: RasterSource,
    what: str,
    *,
    is_image: bool,
    crs: Any = None,
    res: float | tuple[float, float] | None = None,
    transforms: Any = None,
) -> RasterDataset:
    """A RasterDataset over a source, every file checked to open first.

    Args:
        source: Folder, glob, file, list, or a RasterDataset (returned as is).
        what: ``'image'`` or ``'mask'``, for messages.
        is_image: Read as images (float) or masks (integer).
        crs: CRS to warp to (default: that of the first file).
        res: Resolution (default: that of the first file).
        transforms: Sample transform of the dataset.

    Returns:
        The dataset.

    Raises:
        RasterInputError: If a file cannot be opened, or a given dataset reads
            the other kind of data.
    """
    if isinstance(source, RasterDataset):
        if source.is_image != is_image:
            kind = 'images' if source.is_image else 'masks'
            raise RasterInputError(
                f'{type(source).__name__} reads {kind}; {what}s need is_image={is_image}'
            )
        return source
    files = raster_files(source, what)
    for path in files:
        try:
            with rasterio.open(path):
                pass
        except RasterioError as error:
            raise RasterInputError(
                f'{what} raster {path} cannot be read: {error}'
            ) from None
    cls = ImageRasters if is_image else MaskRasters
    return cls(paths=files, crs=crs, res=res, transforms=transforms)


def _files(dataset: RasterDataset) -> list[str]:
    return [str(f) for f in dataset.index.filepath]


def check_bands(images: RasterDataset, bands: Sequence[str] | None) -> tuple[int, str]:
    """Check that every image file has the same band count and dtype.

    Args:
        images: The image rasters.
        bands: Band names, when given (their number must match).

    Returns:
        The number of bands read (the dataset's band selection, if it has one)
        and the NumPy dtype name of the files.

    Raises:
        RasterInputError: Naming the first file that differs.
    """
    files = _files(images)
    with rasterio.open(files[0]) as src:
        count, dtype = src.count, src.dtypes[0]
    read = len(images.bands) if images.bands else count
    if bands is not None and len(bands) != read:
        raise RasterInputError(
            f'image {files[0]} has {read} band(s) but {len(bands)} band names '
            f'were given: {list(bands)}'
        )
    for path in files[1:]:
        with rasterio.open(path) as src:
            if src.count != count:
                raise RasterInputError(
                    f'image {path} has {src.count} band(s) but {files[0]} has {count}'
                )
            if src.dtypes[0] != dtype:
                raise RasterInputError(
                    f'image {path} is {src.dtypes[0]} but {files[0]} is {dtype}'
                )
    return read, dtype


def check_overlap(images: RasterDataset, masks: RasterDataset) -> None:
    """Check that every image file overlaps some mask file.

    Args:
        images: The image rasters.
        masks: The mask rasters (in the images' CRS).

    Raises:
        RasterInputError: Naming the first image without a mask.
    """
    footprint = masks.index.geometry.union_all()
    for path, geometry in zip(
        images.index.filepath, images.index.geometry, strict=True
    ):
        if shapely.intersection(geometry, footprint).area <= 0:
            raise RasterInputError(f'image {path} has no overlapping mask')


def _pack_rgb(values: np.ndarray) -> np.ndarray:
    """Pack (3, ...) 8-bit colours into one integer per pixel."""
    v = values.astype(np.int64)
    return (v[0] << 16) | (v[1] << 8) | v[2]


def _colour_key(key: Any) -> int | None:
    """The packed colour of a mapping key, or None for a plain value.

    Colours are written ``'R,G,B'``, ``'#RRGGBB'`` or as a 3-sequence.
    """
    if isinstance(key, str):
        text = key.strip()
        if text.startswith('#') and len(text) == 7:
            return int(text[1:], 16)
        if ',' in text:
            parts = [int(p) for p in text.split(',')]
            if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
                raise ValueError(f'mask_mapping colour {key!r} must be R,G,B in 0-255')
            return (parts[0] << 16) | (parts[1] << 8) | parts[2]
        return None
    if isinstance(key, Sequence):
        parts = [int(p) for p in key]
        if len(parts) != 3:
            raise ValueError(f'mask_mapping colour {key!r} must have 3 values')
        return (parts[0] << 16) | (parts[1] << 8) | parts[2]
    return None


class MaskMapping:
    """Maps raw mask values (or RGB colours) to class indices, as a transform.

    Args:
        mapping: Raw value -> class (``{0: 0, 255: 1}``), or colour -> class
            with colours as ``'R,G,B'``, ``'#RRGGBB'`` or 3-sequences (a colour
            mask has 3 bands). Class values must lie in ``[0, num_classes)`` or
            be *ignore_index*.
        num_classes: Number of classes.
        ignore_index: Class of raw values outside the mapping.

    Raises:
        ValueError: If the mapping is empty, mixes colours and values, or maps
            to a class out of range.
    """

    def __init__(
        self, mapping: Mapping[Any, int], num_classes: int, ignore_index: int = 255
    ) -> None:
        if not mapping:
            raise ValueError('mask_mapping is empty')
        colours = [_colour_key(k) for k in mapping]
        self.colour = colours[0] is not None
        if any((c is not None) != self.colour for c in colours):
            raise ValueError('mask_mapping mixes colours and plain values')
        raw = colours if self.colour else [int(k) for k in mapping]
        classes = [int(v) for v in mapping.values()]
        for value in classes:
            if not (0 <= value < num_classes or value == ignore_index):
                raise ValueError(
                    f'mask_mapping maps to class {value}, outside [0, {num_classes}) '
                    f'and not ignore_index {ignore_index}'
                )
        order = np.argsort(raw)
        self.keys = torch.tensor(np.asarray(raw, dtype=np.int64)[order])
        self.values = torch.tensor(np.asarray(classes, dtype=np.int64)[order])
        self.ignore_index = int(ignore_index)

    @property
    def raw_values(self) -> set[int]:
        """The raw values (packed colours) the mapping knows."""
        return set(self.keys.tolist())

    def map(self, mask: Tensor) -> Tensor:
        """Map a raw mask.

        Args:
            mask: ``H x W`` raw values, or ``3 x H x W`` colours.

        Returns:
            ``H x W`` class indices (long); unknown values become ignore_index.
        """
        raw = mask.long()
        if self.colour:
            raw = (
                (raw[..., 0, :, :] << 16) | (raw[..., 1, :, :] << 8) | raw[..., 2, :, :]
            )
        pos = torch.searchsorted(self.keys, raw).clamp_max(len(self.keys) - 1)
        found = self.keys[pos] == raw
        return torch.where(found, self.values[pos], self.ignore_index)

    def __call__(self, sample: Sample) -> Sample:
        """Map the ``mask`` of a sample.

        Args:
            sample: A sample with ``mask``.

        Returns:
            The sample with its mask mapped.
        """
        sample['mask'] = self.map(sample['mask'])
        return sample


def check_mask_values(
    masks: RasterDataset,
    num_classes: int,
    ignore_index: int,
    mapping: MaskMapping | None = None,
) -> None:
    """Check every mask value against the classes or the mapping, block by block.

    Allowed: the mapping's raw values (or ``[0, num_classes)`` and *ignore_index*
    without a mapping) and the file's nodata value.

    Args:
        masks: The mask rasters.
        num_classes: Number of classes.
        ignore_index: The ignored class.
        mapping: The raw value -> class mapping, if any.

    Raises:
        RasterInputError: Naming the first mask with a value outside them.
    """
    if mapping is None:
        allowed = set(range(num_classes)) | {ignore_index}
        described = f'the classes [0, {num_classes}) and ignore_index {ignore_index}'
    else:
        allowed = mapping.raw_values
        described = 'mask_mapping'
    for path in _files(masks):
        with rasterio.open(path) as src:
            colour = mapping is not None and mapping.colour
            if colour and src.count != 3:
                raise RasterInputError(
                    f'mask {path} has {src.count} band(s); colour masks need 3'
                )
            if not colour and src.count != 1:
                raise RasterInputError(
                    f'mask {path} has {src.count} bands; give a colour mask_mapping '
                    'for an RGB mask'
                )
            ok = set(allowed)
            if src.nodata is not None and not colour:
                ok.add(int(src.nodata))
            seen: set[int] = set()
            for _, window in src.block_windows(1):
                data = src.read(window=window)
                values = _pack_rgb(data) if colour else data[0].astype(np.int64)
                seen.update(np.unique(values).tolist())
            bad = sorted(seen - ok)
            if bad:
                shown = [_describe(v, colour) for v in bad[:8]]
                more = f' and {len(bad) - 8} more' if len(bad) > 8 else ''
                raise RasterInputError(
                    f'mask {path} holds values outside {described}: '
                    f'{", ".join(shown)}{more}'
                )


def _describe(value: int, colour: bool) -> str:
    if colour:
        return f'({value >> 16}, {(value >> 8) & 255}, {value & 255})'
    return str(value)


def raster_statistics(
    images: GeoDataset,
    windows: Sequence[tuple[slice, slice]],
    nodata: float | None,
    progress: bool = True,
) -> tuple[list[float], list[float]]:
    """Per-band mean and std of image windows, in bounded memory.

    Windows are read one at a time; per band, the count, the sum and the sum of
    squares of the valid pixels (not all bands equal to *nodata*, no band NaN or
    infinite) are accumulated in float64 around a shift (the first window's mean)
    for numerical stability.

    Args:
        images: The image dataset, indexed by windows.
        windows: The windows to read.
        nodata: Image nodata value, or None.
        progress: Show a progress bar.

    Returns:
        ``(mean, std)``, one value per band.

    Raises:
        RasterInputError: If no valid pixel is found.
    """
    count = 0
    shift: np.ndarray | None = None
    total: np.ndarray | None = None
    squares: np.ndarray | None = None
    for window in tqdm(
        windows, desc='image statistics', unit='window', disable=not progress
    ):
        image = images[window]['image'].double().flatten(1).numpy()
        valid = np.isfinite(image).all(axis=0)  # NaN and inf are nodata
        if nodata is not None and not math.isnan(nodata):
            valid &= ~(image == nodata).all(axis=0)
        pixels = image[:, valid]
        if pixels.shape[1] == 0:
            continue
        if shift is None:
            shift = pixels.mean(axis=1)
            total = np.zeros_like(shift)
            squares = np.zeros_like(shift)
        assert total is not None and squares is not None
        centred = pixels - shift[:, None]
        total += centred.sum(axis=1)
        squares += (centred * centred).sum(axis=1)
        count += pixels.shape[1]
    if shift is None or total is None or squares is None:
        raise RasterInputError(
            'no valid image pixel in the windows read for the statistics '
            f'(nodata {nodata}); give mean and std'
        )
    mean = total / count
    var = np.maximum(squares / count - mean * mean, 0.0)
    std = np.sqrt(var)
    std[std == 0] = 1.0
    return (mean + shift).tolist(), std.tolist()
