import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from inference_fakes import make_raster, record_opens

from torchgeo_ssg2.inference import output
from torchgeo_ssg2.inference.output import GeoTIFFSink, RasterMeta, class_indices
from torchgeo_ssg2.staging import staging_path


@pytest.mark.parametrize('threads', [1, 2, 3])
@pytest.mark.parametrize('shape', [(2, 5, 7), (6, 40, 33), (12, 17, 1), (5, 70, 9)])
def test_class_indices_equal_argmax(shape: tuple[int, int, int], threads: int) -> None:
    rng = np.random.default_rng(0)
    # few distinct values, so that ties are common: the lower index wins
    probabilities = rng.integers(0, 4, size=shape).astype(np.float32)
    out = class_indices(probabilities, 'uint8', rows=16, threads=threads)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, probabilities.argmax(axis=0))


def test_class_indices_uint16() -> None:
    probabilities = np.zeros((300, 3, 4), dtype=np.float32)
    probabilities[299, 1, 2] = 1.0
    out = class_indices(probabilities, 'uint16')
    assert out.dtype == np.uint16
    assert out[1, 2] == 299 and out.sum() == 299


def test_nodata_comes_with_the_blocks_and_the_input_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_raster(tmp_path / 'in.tif', 20, 24, nodata=0, nodata_border=2)
    meta = RasterMeta.from_file(source)
    assert meta.has_nodata
    opened = record_opens(monkeypatch)
    sink = GeoTIFFSink(meta, tmp_path / 'out.tif', 2, probabilities=True)
    probs = np.full((2, 20, 24), 0.5, dtype=np.float32)
    probs[1] += 0.1
    valid = np.ones((20, 24), dtype=bool)
    valid[:, :3] = False
    with pytest.raises(ValueError, match=r'in\.tif may hold nodata'):
        sink.write_block(0, probs, None)
    sink.write_block(0, probs, None, valid)
    paths = sink.commit()
    assert source not in opened
    with rasterio.open(paths['classes']) as dst:
        classes = dst.read(1)
    with rasterio.open(paths['probabilities']) as dst:
        probabilities = dst.read()
    # the validity given, not the input's border, decides the nodata
    assert (classes[:, :3] == 255).all() and (classes[:, 3:] == 1).all()
    assert np.isnan(probabilities[:, :, :3]).all()
    assert np.isfinite(probabilities[:, :, 3:]).all()


def test_gdal_cache_limit_is_in_megabytes() -> None:
    from rasterio.env import get_gdal_config

    with output.gdal_cache_limit(64):
        # enough for the blocks of a few full-width rows of a large raster
        assert get_gdal_config('GDAL_CACHEMAX') == 64 * 1024 * 1024


def test_gdal_cache_holds_a_row_of_blocks_of_the_widest_input(tmp_path: Path) -> None:
    from rasterio.env import get_gdal_config

    # 4 uint8 bands and a nodata mask, blocks of 16 rows (the fakes' tiles)
    meta = RasterMeta.from_file(make_raster(tmp_path / 'in.tif', 40, 24, 4, nodata=0))
    assert meta.block_rows == 16 and meta.block_row_bytes == 16 * 24 * 5
    wide = RasterMeta(**(vars(meta) | {'width': 2_000_000}))
    narrow = RasterMeta(**(vars(meta) | {'width': 1000}))
    row = 16 * 2_000_000 * 5  # 160 MB: beyond the default cap
    with output.gdal_cache_limit(rasters=[narrow, wide]):
        assert get_gdal_config('GDAL_CACHEMAX') == row * 5 // 4
    with output.gdal_cache_limit(rasters=[narrow]):
        assert get_gdal_config('GDAL_CACHEMAX') == output.GDAL_CACHE_MB * 1024**2
    # a float32 band counts four bytes, no mask none; without a mask each block
    # is decoded once whatever the cap, which stays
    floats = RasterMeta(**(vars(wide) | {'dtypes': ('float32',), 'has_mask': False}))
    assert floats.block_row_bytes == 16 * 2_000_000 * 4
    with output.gdal_cache_limit(rasters=[floats]):
        assert get_gdal_config('GDAL_CACHEMAX') == output.GDAL_CACHE_MB * 1024**2


def test_protected_files_are_found_by_identity(tmp_path: Path) -> None:
    src = make_raster(tmp_path / 'in.tif', 16, 16)
    ckpt = tmp_path / 'model.ckpt'
    ckpt.write_bytes(b'ckpt')
    protected = output.ProtectedFiles(
        {'input raster': src, 'checkpoint': ckpt, 'gone': tmp_path / 'gone.tif'}
    )
    os.link(src, tmp_path / 'hard.tif')
    (tmp_path / 'sym.tif').symlink_to(ckpt)
    (tmp_path / 'sub').mkdir()
    spelled = tmp_path / 'sub' / '..' / 'in.tif'
    assert protected.find(tmp_path / 'hard.tif') == ('input raster', src)
    assert protected.find(spelled) == ('input raster', src)
    assert protected.find(tmp_path / 'sym.tif') == ('checkpoint', ckpt)
    assert protected.find(tmp_path / 'gone.tif') is None
    assert dict(protected) == {
        'input raster': src,
        'checkpoint': ckpt,
        'gone': tmp_path / 'gone.tif',
    }
    for path in (tmp_path / 'hard.tif', spelled):
        with pytest.raises(ValueError, match=rf'is {src} \(the input raster\)'):
            output.check_output_free({'classes': path}, True, protected)
    with pytest.raises(ValueError, match=r'\(the checkpoint\)'):
        output.check_output_free({'classes': tmp_path / 'sym.tif'}, True, protected)
    # a staging file of the output that is an input is refused too
    os.link(ckpt, staging_path(tmp_path / 'o.tif'))
    with pytest.raises(ValueError, match=r'\(the checkpoint\)'):
        output.check_output_free({'classes': tmp_path / 'o.tif'}, True, protected)
    # more files: the ones already there keep their roles
    more = protected.including({'input raster': tmp_path / 'other', 'x': ckpt})
    assert more['input raster'] == src and more['x'] == ckpt
    assert more.find(tmp_path / 'sym.tif') == ('checkpoint', ckpt)


def test_a_sink_looks_up_only_its_own_files_among_many_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = RasterMeta.from_file(make_raster(tmp_path / 'in.tif', 16, 16))
    stat = os.stat
    calls: list[object] = []

    def counted(*args: object, **kwargs: object) -> os.stat_result:
        calls.append(args)
        return stat(*args, **kwargs)  # type: ignore[arg-type]

    looked_up: dict[int, int] = {}
    for n in (50, 100):
        inputs = [tmp_path / f'{n}_{i}.tif' for i in range(n)]
        for path in inputs:
            path.touch()
        protected = output.ProtectedFiles(
            {f'input raster #{i}': path for i, path in enumerate(inputs)}
        )
        calls.clear()
        with monkeypatch.context() as patch:
            patch.setattr(os, 'stat', counted)
            sink = GeoTIFFSink(
                meta, tmp_path / f'out{n}.tif', 2, True, True, protected=protected
            )
        sink.abort()
        looked_up[n] = len(calls)
    assert looked_up[100] == looked_up[50]
