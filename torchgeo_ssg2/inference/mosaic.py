"""GDAL VRT mosaics tying together the predictions of many rasters."""

import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..staging import staging_path
from .output import open_raster

__all__ = ('mosaic_problem', 'write_mosaics', 'write_vrt')

#: GDAL's name of each NumPy dtype a prediction is written in.
_GDAL_TYPES = {'uint8': 'Byte', 'uint16': 'UInt16', 'float32': 'Float32'}


def _crs_key(crs: object) -> str:
    """A file-name-safe label of a CRS (``EPSG_32640``, ``none``).

    Args:
        crs: A rasterio CRS or None.

    Returns:
        The label.
    """
    if crs is None:
        return 'none'
    text = crs.to_string()  # type: ignore[attr-defined]
    return re.sub(r'[^A-Za-z0-9]+', '_', text).strip('_')[:40] or 'crs'


def mosaic_problem(transform: Any) -> str | None:
    """Why a raster with this geotransform cannot go in a VRT mosaic, if it cannot.

    A mosaic places each raster by its transform, which must be north-up
    (no rotation, pixels growing east and south). A raster without
    georeferencing has the identity transform (rows growing downwards in pixel
    space), which places nothing.

    Args:
        transform: The raster's affine transform.

    Returns:
        The reason, or None when the raster fits a mosaic.
    """
    t = transform
    if t.b or t.d or t.a <= 0 or t.e >= 0:
        return 'is not north-up (a rotated or pixel-space grid)'
    return None


def write_vrt(files: Sequence[Path], vrt: Path) -> Path:
    """Write a VRT mosaic of rasters that share a CRS, band count and dtype.

    The mosaic covers the union of the files' extents at the finest pixel size
    among them; each file is placed where its transform says (north-up
    transforms only), with its nodata, colour table, band descriptions and
    metadata taken from the first file. Paths are stored relative to the VRT.
    The VRT is written to a staging file and renamed, like every output.

    Args:
        files: The rasters.
        vrt: The VRT to write.

    Returns:
        ``vrt``.

    Raises:
        ValueError: If the files differ in CRS, bands or dtype, or one is
            rotated.
    """
    metas = []
    for path in files:
        with open_raster(path) as src:
            metas.append(
                {
                    'path': path,
                    'crs': src.crs,
                    'count': src.count,
                    'dtype': src.dtypes[0],
                    'transform': src.transform,
                    'width': src.width,
                    'height': src.height,
                    'nodata': src.nodata,
                    'descriptions': src.descriptions,
                    'colormap': src.colormap(1)
                    if src.dtypes[0] == 'uint8' and src.count == 1
                    else None,
                    'tags': src.tags(),
                    'band_tags': [src.tags(b) for b in src.indexes],
                }
            )
    first = metas[0]
    for m in metas:
        problem = mosaic_problem(m['transform'])
        if problem is not None:
            msg = f'{m["path"]} {problem}: it cannot go in a VRT mosaic'
            raise ValueError(msg)
        for key in ('crs', 'count', 'dtype'):
            if m[key] != first[key]:
                msg = (
                    f'{m["path"]} differs from {first["path"]} in {key}: not one mosaic'
                )
                raise ValueError(msg)
    res_x = min(m['transform'].a for m in metas)
    res_y = min(-m['transform'].e for m in metas)
    left = min(m['transform'].c for m in metas)
    top = max(m['transform'].f for m in metas)
    right = max(m['transform'].c + m['transform'].a * m['width'] for m in metas)
    bottom = min(m['transform'].f + m['transform'].e * m['height'] for m in metas)
    width = round((right - left) / res_x)
    height = round((top - bottom) / res_y)
    root = ET.Element('VRTDataset', rasterXSize=str(width), rasterYSize=str(height))
    if first['crs'] is not None:
        ET.SubElement(root, 'SRS').text = first['crs'].to_wkt()
    ET.SubElement(root, 'GeoTransform').text = ', '.join(
        repr(float(v)) for v in (left, res_x, 0.0, top, 0.0, -res_y)
    )
    if first['tags']:
        _metadata(root, first['tags'])
    for band in range(1, first['count'] + 1):
        vband = ET.SubElement(
            root,
            'VRTRasterBand',
            dataType=_GDAL_TYPES.get(first['dtype'], 'Float32'),
            band=str(band),
        )
        description = first['descriptions'][band - 1]
        if description:
            ET.SubElement(vband, 'Description').text = description
        if first['band_tags'][band - 1]:
            _metadata(vband, first['band_tags'][band - 1])
        nodata = first['nodata']
        if nodata is not None:
            ET.SubElement(vband, 'NoDataValue').text = (
                'nan' if np.isnan(nodata) else repr(float(nodata))
            )
        if first['colormap'] is not None:
            ET.SubElement(vband, 'ColorInterp').text = 'Palette'
            table = ET.SubElement(vband, 'ColorTable')
            for index in range(max(first['colormap']) + 1):
                r, g, b, a = first['colormap'].get(index, (0, 0, 0, 0))
                ET.SubElement(
                    table, 'Entry', c1=str(r), c2=str(g), c3=str(b), c4=str(a)
                )
        for m in metas:
            t = m['transform']
            source = ET.SubElement(vband, 'ComplexSource')
            rel = os.path.relpath(Path(m['path']).resolve(), vrt.parent.resolve())
            ET.SubElement(source, 'SourceFilename', relativeToVRT='1').text = rel
            ET.SubElement(source, 'SourceBand').text = str(band)
            ET.SubElement(
                source,
                'SrcRect',
                xOff='0',
                yOff='0',
                xSize=str(m['width']),
                ySize=str(m['height']),
            )
            ET.SubElement(
                source,
                'DstRect',
                xOff=repr((t.c - left) / res_x),
                yOff=repr((top - t.f) / res_y),
                xSize=repr(m['width'] * t.a / res_x),
                ySize=repr(m['height'] * -t.e / res_y),
            )
            if nodata is not None:
                ET.SubElement(source, 'NODATA').text = (
                    'nan' if np.isnan(nodata) else repr(float(nodata))
                )
    ET.indent(root)
    staging = staging_path(vrt)
    try:
        ET.ElementTree(root).write(staging, encoding='unicode')
        os.replace(staging, vrt)
    finally:
        staging.unlink(missing_ok=True)
    return vrt


def _metadata(element: ET.Element, tags: Mapping[str, str]) -> None:
    """Add a GDAL ``<Metadata>`` block.

    Args:
        element: The dataset or band element.
        tags: Key-value pairs.
    """
    metadata = ET.SubElement(element, 'Metadata')
    for key, value in tags.items():
        ET.SubElement(metadata, 'MDI', key=key).text = value


def write_mosaics(results: Sequence[Mapping[str, Path]], folder: Path) -> list[Path]:
    """One VRT per output role and CRS over the predictions of many rasters.

    ``mosaic.vrt`` ties the class maps together (``mosaic_probabilities.vrt`` and
    ``mosaic_uncertainty.vrt`` the sidecars); when the rasters have several CRS,
    each CRS gets its own files, ``mosaic_<CRS>.vrt``. Rasters that no mosaic
    can place (:func:`mosaic_problem`: rotated grids, or no georeferencing) are
    left out, with a warning that names them; their outputs are written as
    usual.

    Args:
        results: The files of each raster by role, as the writer returns them.
        folder: Where the mosaics go.

    Returns:
        The VRT files written.
    """
    groups: dict[tuple[str, str], list[Path]] = {}
    left_out: list[tuple[Path, str]] = []
    for paths in results:
        for role, path in paths.items():
            with open_raster(path) as src:
                crs, problem = _crs_key(src.crs), mosaic_problem(src.transform)
            if problem is not None:
                if role == 'classes':
                    left_out.append((path, problem))
                continue
            groups.setdefault((role, crs), []).append(path)
    if left_out:
        shown = '; '.join(f'{path} {problem}' for path, problem in left_out[:3])
        more = f' and {len(left_out) - 3} more' if len(left_out) > 3 else ''
        warnings.warn(
            f'{len(left_out)} prediction(s) left out of the VRT mosaics: {shown}{more}',
            UserWarning,
            stacklevel=2,
        )
    several = len({crs for _, crs in groups}) > 1
    written = []
    for (role, crs), files in sorted(groups.items()):
        name = 'mosaic' + ('' if role == 'classes' else f'_{role}')
        name += f'_{crs}' if several else ''
        written.append(write_vrt(files, folder / f'{name}.vrt'))
    return written
