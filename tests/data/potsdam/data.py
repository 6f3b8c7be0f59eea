#!/usr/bin/env python3
"""Write a tiny fake ISPRS Potsdam distribution with the official names and formats.

Layout (both extracted folders and the distributed zips are written):

* ``4_Ortho_RGBIR/top_potsdam_<a>_<b>_RGBIR.tif``: 4-band uint8 TIFF, band order
  R, G, B, IR, *without* embedded georeferencing, plus a ``.tfw`` world file beside
  it (as distributed);
* ``1_DSM/dsm_potsdam_<aa>_<bb>.tif``: 1-band float32 GeoTIFF (metres), zero-padded
  tile numbers, CRS EPSG:25833 (ETRS89 / UTM 33N); ``dsm_potsdam_03_13.tif`` is one
  column narrower than its tile, mimicking the known size defect of the distribution;
* ``5_Labels_all/top_potsdam_<a>_<b>_label.tif``: 3-band uint8 RGB colour labels
  (torchgeo ``Potsdam2D`` palette), not georeferenced;
* ``5_Labels_all_noBoundary/top_potsdam_<a>_<b>_label_noBoundary.tif``: the same with
  class boundaries painted black;
* ``4_Ortho_RGBIR.zip`` and ``1_DSM.zip`` hold their folder; ``5_Labels_all.zip`` and
  ``5_Labels_all_noBoundary.zip`` hold the label files at their top level.

All 38 labelled tiles are written at SIZExSIZE pixels covering the real 300 m tile
footprint (tile <a>_<b>: left = X0 + 300·a, top = Y0 - 300·b; approximate).
"""

import hashlib
import os
import shutil
import warnings
import zipfile

import numpy as np
import rasterio
import rasterio.errors
from rasterio.crs import CRS
from rasterio.transform import from_origin

SIZE = 32
TILE_M = 300.0
RES = TILE_M / SIZE
X0, Y0 = 366000.0, 5811000.0
CRS_ = CRS.from_epsg(25833)
TILES = [
    *[f'{a}_{b}' for a in range(2, 6) for b in range(10, 13)],
    *[f'{a}_{b}' for a in (6, 7) for b in range(7, 13)],
    '2_13', '2_14', '3_13', '3_14', '4_13', '4_14', '4_15', '5_13', '5_14', '5_15',
    '6_13', '6_14', '6_15', '7_13',
]  # fmt: skip
COLORMAP = [
    (255, 0, 0),
    (255, 255, 255),
    (0, 0, 255),
    (0, 255, 255),
    (0, 255, 0),
    (255, 255, 0),
]
HEIGHT = [2.0, 0.0, 15.0, 0.5, 10.0, 1.5]
STAMP = (2018, 1, 1, 0, 0, 0)


def classes_for(rng: np.random.Generator) -> np.ndarray:
    blocks = rng.integers(0, len(COLORMAP), size=(SIZE // 8, SIZE // 8))
    return np.kron(blocks, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)


def boundary(classes: np.ndarray) -> np.ndarray:
    edge = np.zeros(classes.shape, dtype=bool)
    edge[:-1] |= classes[:-1] != classes[1:]
    edge[1:] |= classes[1:] != classes[:-1]
    edge[:, :-1] |= classes[:, :-1] != classes[:, 1:]
    edge[:, 1:] |= classes[:, 1:] != classes[:, :-1]
    return edge


def write(path: str, array: np.ndarray, **profile: object) -> None:
    profile = {
        'driver': 'GTiff',
        'height': array.shape[1],
        'width': array.shape[2],
        'count': array.shape[0],
        'dtype': array.dtype,
        'compress': 'deflate',
        **profile,
    }
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(array)


def zip_folder(folder: str, names: list[str], archive: str, flat: bool) -> None:
    with zipfile.ZipFile(archive, 'w', zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            arcname = name if flat else f'{folder}/{name}'
            info = zipfile.ZipInfo(arcname, date_time=STAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(os.path.join(folder, name), 'rb') as f:
                zf.writestr(info, f.read())


def main() -> None:
    warnings.simplefilter('ignore', rasterio.errors.NotGeoreferencedWarning)
    folders = ['4_Ortho_RGBIR', '1_DSM', '5_Labels_all', '5_Labels_all_noBoundary']
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    for i, tile in enumerate(TILES):
        a, b = (int(v) for v in tile.split('_'))
        rng = np.random.default_rng(i)
        classes = classes_for(rng)
        colors = np.array(COLORMAP, dtype=np.uint8)[classes].transpose(2, 0, 1)
        base = colors.astype(np.float32) * 0.6 + 40
        ir = 60 + 30 * (classes == 4) + 20 * (classes == 3)
        rgbir = np.concatenate([base, ir[None].astype(np.float32)])
        rgbir += (xx + yy)[None] / 4
        write(
            f'4_Ortho_RGBIR/top_potsdam_{tile}_RGBIR.tif',
            np.clip(rgbir, 0, 255).astype(np.uint8),
        )
        left, top = X0 + TILE_M * a, Y0 - TILE_M * b
        with open(f'4_Ortho_RGBIR/top_potsdam_{tile}_RGBIR.tfw', 'w') as f:
            # a, d, b, e, then the centre of the upper-left pixel.
            f.write(f'{RES}\n0.0\n0.0\n{-RES}\n{left + RES / 2}\n{top - RES / 2}\n')
        dsm = 30 + np.array(HEIGHT, dtype=np.float32)[classes] + xx / 16
        width = SIZE - 1 if tile == '3_13' else SIZE
        write(
            f'1_DSM/dsm_potsdam_{a:02d}_{b:02d}.tif',
            dsm[None, :, :width].astype(np.float32),
            crs=CRS_,
            transform=from_origin(left, top, RES, RES),
            predictor=3,
        )
        write(f'5_Labels_all/top_potsdam_{tile}_label.tif', colors)
        eroded = colors.copy()
        eroded[:, boundary(classes)] = 0
        write(
            f'5_Labels_all_noBoundary/top_potsdam_{tile}_label_noBoundary.tif', eroded
        )
    for folder in folders:
        names = sorted(os.listdir(folder))
        zip_folder(folder, names, f'{folder}.zip', flat=folder.startswith('5_'))
        with open(f'{folder}.zip', 'rb') as f:
            print(f'{folder}.zip', hashlib.md5(f.read()).hexdigest())


if __name__ == '__main__':
    main()
