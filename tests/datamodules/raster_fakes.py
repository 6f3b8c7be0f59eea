"""Fake multi-file GeoTIFF sets for the RasterEpisodeDataModule tests."""

from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_points

#: UTM 33N origin of the first image of a set; pixels of 1 m.
UTM33 = 'EPSG:32633'
UTM32 = 'EPSG:32632'
X0, Y0 = 300000.0, 5000000.0

#: Colour table of the colour masks: colour -> class.
COLOURS = {(255, 255, 255): 0, (0, 0, 255): 1, (0, 255, 0): 2}


def write(
    path: Path,
    data: np.ndarray,
    crs: str,
    left: float,
    top: float,
    nodata: float | None = None,
) -> None:
    """Write a C x H x W array as a tiled GeoTIFF with 1 m pixels."""
    profile = {
        'driver': 'GTiff',
        'height': data.shape[1],
        'width': data.shape[2],
        'count': data.shape[0],
        'dtype': data.dtype.name,
        'crs': crs,
        'transform': from_origin(left, top, 1.0, 1.0),
        'tiled': True,
        'blockxsize': 32,
        'blockysize': 32,
    }
    if nodata is not None:
        profile['nodata'] = nodata
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(data)


def class_mask(height: int, width: int, num_classes: int = 3) -> np.ndarray:
    """A 1 x H x W blocky class-index mask."""
    rows, cols = np.mgrid[0:height, 0:width]
    return ((rows // 16 + cols // 16) % num_classes).astype(np.uint8)[None]


def image_for(mask: np.ndarray, bands: int, dtype: str, seed: int) -> np.ndarray:
    """Image whose values depend on the class (50-150 for uint8, x100 for uint16)."""
    rng = np.random.default_rng(seed)
    scale = 100 if dtype == 'uint16' else 1
    noise = rng.integers(-20, 21, (bands, *mask.shape[1:]))
    data = (100 + 30 * (mask.astype(np.int64) - 1) + noise) * scale
    return data.astype(dtype)


def two_crs_set(root: Path, size: int = 128, border: int = 16) -> dict[str, Path]:
    """Two 4-band uint8 images and class masks, in UTM 33N and UTM 32N.

    The first image has a nodata (0) border of *border* columns on its left; the
    second lies 40 m east of the first, written in the neighbouring UTM zone.

    Returns:
        The image and mask folders.
    """
    images, masks = root / 'images', root / 'masks'
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    mask_a = class_mask(size, size)
    image_a = image_for(mask_a, 4, 'uint8', 0)
    image_a[:, :, :border] = 0
    write(images / 'a.tif', image_a, UTM33, X0, Y0, nodata=0)
    write(masks / 'a.tif', mask_a, UTM33, X0, Y0)
    # The second file's top-left corner, 40 m east of the first, in UTM 32N.
    xs, ys = warp_points(
        CRS.from_string(UTM33), CRS.from_string(UTM32), [X0 + size + 40], [Y0]
    )
    mask_b = class_mask(size, size)
    image_b = image_for(mask_b, 4, 'uint8', 1)
    write(images / 'b.tif', image_b, UTM32, xs[0], ys[0], nodata=0)
    write(masks / 'b.tif', mask_b, UTM32, xs[0], ys[0])
    return {'images': images, 'masks': masks}


def colour_set(root: Path, size: int = 128) -> dict[str, Path]:
    """One 1-band uint16 image with an RGB colour mask (colours of COLOURS)."""
    root.mkdir(parents=True, exist_ok=True)
    mask = class_mask(size, size)
    table = {v: k for k, v in COLOURS.items()}
    colour = np.stack(
        [np.vectorize(lambda c, i=i: table[int(c)][i])(mask[0]) for i in range(3)]
    ).astype(np.uint8)
    write(root / 'image.tif', image_for(mask, 1, 'uint16', 2), UTM33, X0, Y0)
    write(root / 'mask.tif', colour, UTM33, X0, Y0)
    return {'images': root / 'image.tif', 'masks': root / 'mask.tif'}
