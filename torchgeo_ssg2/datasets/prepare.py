"""One-time preparation of datasets into fast, windowed-read GeoTIFFs.

``torchgeo-ssg2 prepare potsdam SRC DST`` (or :func:`prepare_potsdam`) checks every
input of the ISPRS Potsdam distribution first (missing tiles, unreadable zips or
rasters, every pixel of every image, DSM and label read once strip by strip so that a
truncated or corrupt file is found, unknown label colours, size mismatches, missing
georeferencing), and only then writes, per tile:

* ``DST/images/top_potsdam_<tile>_image.tif``: float32 R, G, B, IR, DSM stack;
* ``DST/labels_full/top_potsdam_<tile>_label.tif``: uint8 class indices of
  ``5_Labels_all`` (torchgeo ``Potsdam2D`` order, 255 = ignore);
* ``DST/labels_eroded/top_potsdam_<tile>_label_noBoundary.tif``: the same for
  ``5_Labels_all_noBoundary`` (black boundaries -> 255);
* ``DST/potsdam_prepared.json``: a manifest of the tiles and options.

The GeoTIFFs are tiled (256x256 blocks) and DEFLATE-compressed, in the tile's CRS and
grid. Each file is written under a temporary name and renamed when complete, so an
interrupted run leaves no partial output and a rerun skips what is done.
"""

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.windows import Window
from tqdm import tqdm

from ..staging import staging_path, sweep_stale
from .potsdam import prepared_paths
from .potsdam_protocol import ALL_BANDS, CLASSES, IGNORE_INDEX, TEST_TILES, TRAIN_TILES
from .potsdam_source import (
    PotsdamLabelError,
    PotsdamSource,
    SourceFile,
    _band_positions,
    decode_potsdam_labels,
    open_raster,
    read_dsm,
    read_raster,
    world_file_transform,
)

__all__ = ('PrepareResult', 'add_subcommand', 'prepare_potsdam')

#: Name of the manifest written beside the prepared tiles.
MANIFEST = 'potsdam_prepared.json'

#: Rows processed at once while checking and writing (bounded memory).
_STRIP_ROWS = 512


@dataclass
class PrepareResult:
    """What :func:`prepare_potsdam` did."""

    #: Tiles written by this run.
    written: list[str] = field(default_factory=list)
    #: Tiles whose outputs were already complete.
    skipped: list[str] = field(default_factory=list)
    #: The manifest's path.
    manifest: str = ''


@dataclass
class _TilePlan:
    tile: str
    image: SourceFile
    dsm: SourceFile
    full: SourceFile
    eroded: SourceFile
    height: int = 0
    width: int = 0
    crs: CRS | None = None
    transform: Affine | None = None


def _strips(height: int, width: int) -> list[Window]:
    return [
        Window(0, row, width, min(_STRIP_ROWS, height - row))
        for row in range(0, height, _STRIP_ROWS)
    ]


def _scan(
    source: SourceFile, indexes: Sequence[int] | None = None
) -> Iterator[tuple[Window, np.typing.NDArray[Any]]]:
    """Read every pixel of a raster once, strip by strip (bounded memory).

    Args:
        source: the file.
        indexes: 1-based bands to read (all when None).

    Yields:
        Each strip's window and its pixels.

    Raises:
        RuntimeError: If a strip cannot be read (a truncated or corrupt file); the
            message names the file and the rows.
    """
    with open_raster(source) as ds:
        for window in _strips(ds.height, ds.width):
            try:
                data = ds.read(indexes=indexes, window=window)
            except RasterioError as err:
                rows = f'{window.row_off}-{window.row_off + window.height - 1}'
                raise RuntimeError(
                    f'{source.display}: unreadable pixels in rows {rows} '
                    f'(truncated or corrupt file: {err})'
                ) from err
            yield window, data


def _check_tile(
    plan: _TilePlan,
    band_count: int,
    crs: CRS | None,
    unknown_colors: Literal['error', 'ignore'],
) -> list[str]:
    """Check one tile's inputs, every pixel of them; fill in its grid.

    Every strip of the image, the DSM and both labels is read once, so that a
    truncated or corrupt file is found here, before anything is written; the
    label colours are checked strip by strip, their unknown colours counted over
    the whole file.

    Returns:
        The problems found, one line each.
    """
    problems: list[str] = []
    try:
        with open_raster(plan.image) as ds:
            plan.height, plan.width = ds.height, ds.width
            if ds.count != band_count:
                problems.append(
                    f'{plan.image.display}: {ds.count} bands, expected {band_count}'
                )
            has_transform = not ds.transform.is_identity
            plan.transform = ds.transform if has_transform else None
            plan.crs = ds.crs
        for _ in _scan(plan.image):
            pass
    except RuntimeError as err:
        return [*problems, str(err)]
    try:
        if plan.transform is None:
            plan.transform = world_file_transform(plan.image)
        with open_raster(plan.dsm) as ds:
            dsm_crs, dsm_transform = ds.crs, ds.transform
            same_grid = (ds.height, ds.width) == (plan.height, plan.width)
        for _ in _scan(plan.dsm, [1]):
            pass
    except (RuntimeError, ValueError) as err:
        problems.append(str(err))
        dsm_crs, dsm_transform, same_grid = None, None, False
    if plan.transform is None and same_grid and dsm_transform is not None:
        plan.transform = None if dsm_transform.is_identity else dsm_transform
    if plan.transform is None:
        problems.append(
            f'{plan.image.display}: no georeferencing (no geotransform, no .tfw world '
            'file, no DSM on the same grid)'
        )
    plan.crs = crs or plan.crs or dsm_crs
    if plan.crs is None:
        problems.append(
            f'{plan.image.display}: no CRS in the tile or its DSM; name it with '
            "crs=... (--crs), e.g. 'EPSG:25833'"
        )
    for part, source in (('full', plan.full), ('eroded', plan.eroded)):
        try:
            with open_raster(source) as ds:
                shape, count = (ds.height, ds.width), ds.count
            if count < 3:
                problems.append(f'{source.display}: {count} band(s), expected RGB')
                continue
            if shape != (plan.height, plan.width):
                problems.append(
                    f'{source.display}: size {shape} differs from the image '
                    f'{plan.image.display} size {(plan.height, plan.width)}'
                )
                continue
            unknown: Counter[tuple[int, int, int]] = Counter()
            for _, rgb in _scan(source, [1, 2, 3]):
                try:
                    decode_potsdam_labels(
                        rgb, source.display, part == 'eroded', unknown_colors
                    )
                except PotsdamLabelError as err:
                    unknown.update(err.colors)
            if unknown:
                problems.append(str(PotsdamLabelError(source.display, unknown)))
        except RuntimeError as err:
            problems.append(str(err))
    return problems


def _write_atomic(path: str, profile: dict[str, Any], fill: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sweep_stale(Path(path))
    tmp = str(staging_path(Path(path)))
    try:
        with rasterio.open(tmp, 'w', **profile) as dst:
            fill(dst)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_tile(
    plan: _TilePlan,
    dst_root: str,
    band_index: dict[str, int],
    unknown_colors: Literal['error', 'ignore'],
    block_size: int,
) -> None:
    paths = prepared_paths(dst_root, plan.tile)
    base = {
        'driver': 'GTiff',
        'height': plan.height,
        'width': plan.width,
        'crs': plan.crs,
        'transform': plan.transform,
        'tiled': True,
        'blockxsize': block_size,
        'blockysize': block_size,
        'compress': 'deflate',
    }
    windows = _strips(plan.height, plan.width)
    shape = (plan.height, plan.width)
    dsm = read_dsm(plan.dsm, shape)

    def fill_image(dst: Any) -> None:
        for window in windows:
            spectral = read_raster(
                plan.image, [band_index[b] for b in ALL_BANDS[:4]], window=window
            ).astype(np.float32)
            rows, cols = window.toslices()
            dst.write(np.concatenate([spectral, dsm[None, rows, cols]]), window=window)
        dst.descriptions = ALL_BANDS

    _write_atomic(
        paths['image'],
        {
            **base,
            'count': len(ALL_BANDS),
            'dtype': 'float32',
            'predictor': 3,
            'BIGTIFF': 'IF_SAFER',
        },
        fill_image,
    )
    for part, source in (('full', plan.full), ('eroded', plan.eroded)):

        def fill_mask(dst: Any, part: str = part, source: SourceFile = source) -> None:
            for window in windows:
                rgb = read_raster(source, [1, 2, 3], window=window)
                decoded = decode_potsdam_labels(
                    rgb, source.display, part == 'eroded', unknown_colors
                )
                dst.write(decoded[None], window=window)

        _write_atomic(
            paths[part],
            {**base, 'count': 1, 'dtype': 'uint8', 'nodata': IGNORE_INDEX},
            fill_mask,
        )


def _complete(dst_root: str, tile: str) -> bool:
    return all(os.path.isfile(p) for p in prepared_paths(dst_root, tile).values())


def prepare_potsdam(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    tiles: Sequence[str] | None = None,
    band_order: Sequence[str] = ('R', 'G', 'B', 'IR'),
    crs: str | CRS | None = None,
    unknown_colors: Literal['error', 'ignore'] = 'error',
    block_size: int = 256,
    overwrite: bool = False,
    progress: bool = True,
) -> PrepareResult:
    """Convert the ISPRS Potsdam distribution into tiled GeoTIFFs.

    Every input is checked before anything is written; all problems are reported
    together.

    Args:
        src: folder holding the distribution (folders or zips, see
            :class:`~torchgeo_ssg2.datasets.potsdam_source.PotsdamSource`).
        dst: output folder.
        tiles: tiles to prepare (default: the 38 labelled tiles, 24 train + 14 test).
        band_order: band order of the ``*_RGBIR.tif`` files.
        crs: CRS to assign where the tiles carry none (never guessed).
        unknown_colors: ``"error"`` or ``"ignore"`` (map to the ignore index).
        block_size: GeoTIFF block size in pixels (a multiple of 16).
        overwrite: rewrite complete outputs instead of skipping them.
        progress: show tqdm progress bars.

    Returns:
        The tiles written and skipped, and the manifest's path.

    Raises:
        DatasetNotFoundError: If nothing of the distribution is found.
        FileNotFoundError: If input files are missing (all are listed).
        RuntimeError: If a zip archive is unreadable.
        ValueError: If inputs are invalid (all problems are listed) or an option is
            invalid or contradicts an existing manifest.
    """
    src, dst = str(src), str(dst)
    if block_size <= 0 or block_size % 16:
        raise ValueError(
            f'block_size must be a positive multiple of 16, not {block_size}'
        )
    if unknown_colors not in ('error', 'ignore'):
        raise ValueError("unknown_colors must be 'error' or 'ignore'")
    band_index = _band_positions(band_order)
    user_crs = CRS.from_user_input(crs) if crs is not None else None
    tiles = tuple(tiles) if tiles is not None else (*TRAIN_TILES, *TEST_TILES)
    unknown = [t for t in tiles if t not in TRAIN_TILES + TEST_TILES]
    if unknown:
        raise ValueError(f'tiles {unknown} are not labelled Potsdam tiles')

    manifest_path = os.path.join(dst, MANIFEST)
    options = {
        'band_order': list(band_order),
        'unknown_colors': unknown_colors,
        'crs': user_crs.to_string() if user_crs is not None else None,
    }
    previous: dict[str, Any] = {}
    if os.path.isfile(manifest_path):
        with open(manifest_path) as f:
            previous = json.load(f)
        if not overwrite and previous.get('options') != options:
            raise ValueError(
                f'{manifest_path}: prepared with options {previous.get("options")}, '
                f'not {options}; pass overwrite=True (--overwrite) to rewrite'
            )

    source = PotsdamSource(src)
    source.require(tiles, ('image', 'dsm', 'full', 'eroded'))
    result = PrepareResult(manifest=manifest_path)
    plans = []
    for tile in tiles:
        if not overwrite and _complete(dst, tile):
            result.skipped.append(tile)
            continue
        files = {part: source.files[part][tile] for part in source.parts}
        plans.append(_TilePlan(tile, **files))

    problems: list[str] = []
    for plan in tqdm(plans, desc='checking Potsdam tiles', disable=not progress):
        problems += _check_tile(plan, len(band_index), user_crs, unknown_colors)
    if problems:
        raise ValueError(
            f'ISPRS Potsdam under {src!r}: {len(problems)} problem(s), nothing written:\n'
            + '\n'.join(f'  - {p}' for p in problems)
        )

    for plan in tqdm(plans, desc='writing Potsdam tiles', disable=not progress):
        _write_tile(plan, dst, band_index, unknown_colors, block_size)
        result.written.append(plan.tile)

    done = sorted(
        set(previous.get('tiles', [])) | set(result.written) | set(result.skipped),
        key=lambda t: tuple(int(v) for v in t.split('_')),
    )
    manifest = {
        'dataset': 'ISPRS Potsdam',
        'source': os.path.abspath(src),
        'tiles': done,
        'bands': list(ALL_BANDS),
        'classes': list(CLASSES),
        'ignore_index': IGNORE_INDEX,
        'options': options,
    }
    os.makedirs(dst, exist_ok=True)
    sweep_stale(Path(manifest_path))
    tmp = staging_path(Path(manifest_path))
    try:
        with open(tmp, 'w') as f:
            json.dump(manifest, f, indent=2)
        os.replace(tmp, manifest_path)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def _run_potsdam(args: argparse.Namespace) -> int:
    """Run ``prepare potsdam``; errors go to stderr without a traceback.

    Returns:
        0 on success, 2 for invalid or missing inputs and options (nothing
        written), 1 when writing fails.
    """
    try:
        result = prepare_potsdam(
            args.src,
            args.dst,
            tiles=args.tiles,
            band_order=args.band_order,
            crs=args.crs,
            unknown_colors=args.unknown_colors,
            block_size=args.block_size,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f'torchgeo-ssg2 prepare potsdam: error: {err}', file=sys.stderr)
        return 2
    except OSError as err:
        print(f'torchgeo-ssg2 prepare potsdam: error: {err}', file=sys.stderr)
        return 1
    print(
        f'prepared {len(result.written)} tile(s), skipped {len(result.skipped)} '
        f'complete tile(s); manifest: {result.manifest}'
    )
    return 0


def add_subcommand(subparsers: Any) -> None:
    """Register ``prepare potsdam SRC DST`` on the ``torchgeo-ssg2`` parser.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers``.
    """
    prepare = subparsers.add_parser(
        'prepare', help='convert a dataset distribution into tiled GeoTIFFs'
    )
    datasets = prepare.add_subparsers(dest='dataset', required=True)
    potsdam = datasets.add_parser(
        'potsdam',
        help='ISPRS Potsdam (4_Ortho_RGBIR, 1_DSM, 5_Labels_all, '
        '5_Labels_all_noBoundary; folders or zips)',
    )
    potsdam.add_argument('src', help='folder holding the distribution')
    potsdam.add_argument('dst', help='output folder')
    potsdam.add_argument(
        '--tiles', nargs='+', help='tiles such as 2_10 (default: all 38)'
    )
    potsdam.add_argument(
        '--band-order',
        nargs=4,
        default=['R', 'G', 'B', 'IR'],
        metavar='BAND',
        help='band order of the *_RGBIR.tif files (default: R G B IR)',
    )
    potsdam.add_argument('--crs', help='CRS for tiles that carry none, e.g. EPSG:25833')
    potsdam.add_argument(
        '--unknown-colors',
        choices=('error', 'ignore'),
        default='error',
        help='what to do with label colours outside the palette',
    )
    potsdam.add_argument('--block-size', type=int, default=256)
    potsdam.add_argument('--overwrite', action='store_true')
    potsdam.add_argument('--quiet', action='store_true', help='no progress bars')
    potsdam.set_defaults(func=_run_potsdam)
