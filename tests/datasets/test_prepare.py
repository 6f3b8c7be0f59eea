import argparse
import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import rasterio
import rasterio.errors
import torch
from rasterio.crs import CRS
from torchgeo.datasets import DatasetNotFoundError
from torchgeo.samplers import GriddedPatchSampler, RandomPatchSampler

import torchgeo_ssg2.datasets.prepare as prepare_module
from torchgeo_ssg2.datasets.potsdam import Potsdam, PreparedPotsdam, prepared_paths
from torchgeo_ssg2.datasets.potsdam_protocol import IGNORE_INDEX
from torchgeo_ssg2.datasets.potsdam_source import PotsdamSource, decode_potsdam_labels
from torchgeo_ssg2.datasets.prepare import MANIFEST, add_subcommand, prepare_potsdam

ROOT = os.path.join('tests', 'data', 'potsdam')
FOLDERS = ('4_Ortho_RGBIR', '1_DSM', '5_Labels_all', '5_Labels_all_noBoundary')
TILES = ['2_10', '2_11', '3_10', '3_13', '7_10']


def copy_extracted(dst: Path) -> Path:
    for folder in FOLDERS:
        shutil.copytree(os.path.join(ROOT, folder), dst / folder)
    return dst


def rewrite(path: Path, array: np.ndarray, **profile: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            base = src.profile
        base.pop('blockxsize', None)
        base.pop('blockysize', None)
        base.update(
            height=array.shape[1], width=array.shape[2], count=array.shape[0], **profile
        )
        with rasterio.open(path, 'w', **base) as dst:
            dst.write(array)


def read(path: str | Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read()


def outputs(dst: Path) -> list[str]:
    return sorted(str(p.relative_to(dst)) for p in dst.rglob('*') if p.is_file())


@pytest.fixture(scope='module')
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp('prepared')
    prepare_potsdam(ROOT, dst, tiles=TILES, block_size=16, progress=False)
    return dst


class TestPrepare:
    def test_outputs(self, prepared: Path) -> None:
        paths = prepared_paths(prepared, '3_13')
        with rasterio.open(paths['image']) as src:
            assert src.count == 5
            assert src.dtypes[0] == 'float32'
            assert src.descriptions == ('R', 'G', 'B', 'IR', 'DSM')
            assert src.profile['tiled'] and src.profile['blockxsize'] == 16
            assert src.compression == rasterio.enums.Compression.deflate
            # CRS from the DSM, transform from the .tfw world file.
            assert src.crs == CRS.from_epsg(25833)
            assert src.transform.c == 366000 + 300 * 3
            assert src.transform.f == 5811000 - 300 * 13
            assert src.res == (300 / 32, 300 / 32)
            image = src.read()
        source = PotsdamSource(ROOT)
        raw = read(source.files['image']['3_13'].path)
        assert np.array_equal(image[:4], raw.astype(np.float32))
        # The 31-column DSM of 3_13 is resampled onto the 32-column grid.
        assert np.isfinite(image[4]).all() and image[4].min() >= 30
        for part in ('full', 'eroded'):
            with rasterio.open(paths[part]) as src:
                assert src.nodata == IGNORE_INDEX and src.dtypes[0] == 'uint8'
                assert src.crs == CRS.from_epsg(25833)
                mask = src.read(1)
            rgb = read(source.files[part]['3_13'].path)
            assert np.array_equal(
                mask, decode_potsdam_labels(rgb, eroded=part == 'eroded')
            )
        manifest = json.loads((prepared / MANIFEST).read_text())
        assert manifest['tiles'] == ['2_10', '2_11', '3_10', '3_13', '7_10']
        assert manifest['bands'] == ['R', 'G', 'B', 'IR', 'DSM']
        assert not list(prepared.rglob('*.partial-*'))

    def test_idempotent(self, tmp_path: Path) -> None:
        first = prepare_potsdam(ROOT, tmp_path, tiles=['2_10'], progress=False)
        assert first.written == ['2_10'] and first.skipped == []
        image = prepared_paths(tmp_path, '2_10')['image']
        stamp = os.stat(image).st_mtime_ns
        second = prepare_potsdam(ROOT, tmp_path, tiles=['2_10', '2_11'], progress=False)
        assert second.written == ['2_11'] and second.skipped == ['2_10']
        assert os.stat(image).st_mtime_ns == stamp
        manifest = json.loads((tmp_path / MANIFEST).read_text())
        assert manifest['tiles'] == ['2_10', '2_11']
        third = prepare_potsdam(
            ROOT, tmp_path, tiles=['2_10'], overwrite=True, progress=False
        )
        assert third.written == ['2_10']
        # An incomplete tile (one output missing) is redone.
        os.remove(prepared_paths(tmp_path, '2_11')['eroded'])
        fourth = prepare_potsdam(ROOT, tmp_path, tiles=['2_10', '2_11'], progress=False)
        assert fourth.written == ['2_11'] and fourth.skipped == ['2_10']

    def test_all_tiles_from_zips(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        src = tmp_path / 'src'
        src.mkdir()
        for folder in FOLDERS:
            shutil.copy(os.path.join(ROOT, f'{folder}.zip'), src)
        monkeypatch.setattr(prepare_module, '_STRIP_ROWS', 12)
        result = prepare_potsdam(
            src, tmp_path / 'dst', tiles=TILES, block_size=16, progress=False
        )
        assert result.written == TILES
        reference = tmp_path / 'ref'
        prepare_potsdam(ROOT, reference, tiles=['3_13'], block_size=16, progress=False)
        for part in ('image', 'full', 'eroded'):
            a = read(prepared_paths(tmp_path / 'dst', '3_13')[part])
            b = read(prepared_paths(reference, '3_13')[part])
            assert np.array_equal(a, b)

    def test_unknown_colours_before_writing(self, tmp_path: Path) -> None:
        src = copy_extracted(tmp_path / 'src')
        label = src / '5_Labels_all' / 'top_potsdam_2_11_label.tif'
        rgb = read(label)
        rgb[:, 5, :4] = np.array([1, 2, 3], dtype=np.uint8)[:, None]
        rgb[:, 30, :2] = np.array([7, 7, 7], dtype=np.uint8)[:, None]
        rewrite(label, rgb)
        dst = tmp_path / 'dst'
        with pytest.raises(ValueError, match='nothing written') as info:
            prepare_potsdam(src, dst, tiles=['2_10', '2_11'], progress=False)
        message = str(info.value)
        assert 'top_potsdam_2_11_label.tif' in message
        assert 'RGB(1, 2, 3): 4 px' in message and 'RGB(7, 7, 7): 2 px' in message
        assert not dst.exists()
        result = prepare_potsdam(
            src, dst, tiles=['2_11'], unknown_colors='ignore', progress=False
        )
        assert result.written == ['2_11']
        mask = read(prepared_paths(dst, '2_11')['full'])[0]
        assert (mask[5, :4] == IGNORE_INDEX).all()

    def test_unknown_colours_counted_over_strips(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Strips of 4 rows: the colours of every strip are counted together.
        monkeypatch.setattr(prepare_module, '_STRIP_ROWS', 4)
        src = copy_extracted(tmp_path / 'src')
        label = src / '5_Labels_all' / 'top_potsdam_2_10_label.tif'
        rgb = read(label)
        rgb[:, 1, :3] = 9
        rgb[:, 30, :5] = 9
        rgb[:, 17, :1] = 8
        rewrite(label, rgb)
        with pytest.raises(ValueError, match='nothing written') as info:
            prepare_potsdam(src, tmp_path / 'dst', tiles=['2_10'], progress=False)
        message = str(info.value)
        assert 'RGB(9, 9, 9): 8 px, RGB(8, 8, 8): 1 px' in message
        assert message.count('top_potsdam_2_10_label.tif') == 1

    def test_truncated_image(self, tmp_path: Path) -> None:
        src = copy_extracted(tmp_path / 'src')
        image = src / '4_Ortho_RGBIR' / 'top_potsdam_2_11_RGBIR.tif'
        image.write_bytes(image.read_bytes()[:-200])
        dst = tmp_path / 'dst'
        with pytest.raises(ValueError, match='nothing written') as info:
            prepare_potsdam(src, dst, tiles=['2_10', '2_11'], progress=False)
        assert 'top_potsdam_2_11_RGBIR.tif: unreadable pixels in rows' in str(
            info.value
        )
        assert not dst.exists()

    def test_problems_listed_together(self, tmp_path: Path) -> None:
        src = copy_extracted(tmp_path / 'src')
        eroded = (
            src / '5_Labels_all_noBoundary' / 'top_potsdam_2_10_label_noBoundary.tif'
        )
        rewrite(eroded, read(eroded)[:, :20])
        full = src / '5_Labels_all' / 'top_potsdam_2_11_label.tif'
        rewrite(full, read(full)[:1])
        image = src / '4_Ortho_RGBIR' / 'top_potsdam_3_10_RGBIR.tif'
        rewrite(image, read(image)[:3])
        (src / '1_DSM' / 'dsm_potsdam_03_13.tif').write_bytes(b'junk')
        (src / '4_Ortho_RGBIR' / 'top_potsdam_7_10_RGBIR.tif').write_bytes(b'junk')
        dst = tmp_path / 'dst'
        with pytest.raises(ValueError) as info:
            prepare_potsdam(src, dst, tiles=TILES, progress=False)
        message = str(info.value)
        assert '6 problem(s)' in message
        assert 'top_potsdam_2_10_label_noBoundary.tif: size (20, 32) differs' in message
        assert 'top_potsdam_2_11_label.tif: 1 band(s), expected RGB' in message
        assert 'top_potsdam_3_10_RGBIR.tif: 3 bands, expected 4' in message
        assert 'dsm_potsdam_03_13.tif: unreadable raster' in message
        assert 'top_potsdam_7_10_RGBIR.tif: unreadable raster' in message
        # Without its DSM, 3_13 has no CRS either.
        assert 'top_potsdam_3_13_RGBIR.tif: no CRS' in message
        assert not dst.exists()

    def test_unreadable_label(self, tmp_path: Path) -> None:
        src = copy_extracted(tmp_path / 'src')
        (src / '5_Labels_all' / 'top_potsdam_2_10_label.tif').write_bytes(b'junk')
        with pytest.raises(
            ValueError, match=r'top_potsdam_2_10_label\.tif: unreadable'
        ):
            prepare_potsdam(src, tmp_path / 'dst', tiles=['2_10'], progress=False)

    def test_missing_tiles(self, tmp_path: Path) -> None:
        src = copy_extracted(tmp_path / 'src')
        os.remove(src / '1_DSM' / 'dsm_potsdam_02_10.tif')
        with pytest.raises(FileNotFoundError, match=r'1_DSM: dsm_potsdam_02_10\.tif'):
            prepare_potsdam(src, tmp_path / 'dst', progress=False)
        assert not (tmp_path / 'dst').exists()
        with pytest.raises(DatasetNotFoundError):
            prepare_potsdam(tmp_path / 'empty', tmp_path / 'dst', progress=False)

    def test_corrupted_zip(self, tmp_path: Path) -> None:
        src = copy_extracted(tmp_path / 'src')
        shutil.rmtree(src / '5_Labels_all')
        (src / '5_Labels_all.zip').write_bytes(b'PK\x03\x04 truncated')
        with pytest.raises(RuntimeError, match=r'5_Labels_all\.zip: unreadable zip'):
            prepare_potsdam(src, tmp_path / 'dst', progress=False)

    def test_corrupted_zip_member(self, tmp_path: Path) -> None:
        src = copy_extracted(tmp_path / 'src')
        shutil.rmtree(src / '1_DSM')
        with zipfile.ZipFile(src / '1_DSM.zip', 'w') as zf:
            zf.writestr('1_DSM/dsm_potsdam_02_10.tif', b'junk')
        with pytest.raises(
            ValueError, match=r'1_DSM\.zip!1_DSM/dsm_potsdam_02_10\.tif'
        ):
            prepare_potsdam(src, tmp_path / 'dst', tiles=['2_10'], progress=False)

    def test_crs(self, tmp_path: Path) -> None:
        src = copy_extracted(tmp_path / 'src')
        dsm = src / '1_DSM' / 'dsm_potsdam_02_10.tif'
        rewrite(dsm, read(dsm), crs=None)
        with pytest.raises(ValueError, match='no CRS in the tile or its DSM'):
            prepare_potsdam(src, tmp_path / 'dst', tiles=['2_10'], progress=False)
        prepare_potsdam(
            src, tmp_path / 'dst', tiles=['2_10'], crs='EPSG:32633', progress=False
        )
        with rasterio.open(prepared_paths(tmp_path / 'dst', '2_10')['image']) as ds:
            assert ds.crs == CRS.from_epsg(32633)
        with pytest.raises(ValueError, match='prepared with options'):
            prepare_potsdam(src, tmp_path / 'dst', tiles=['2_10'], progress=False)

    def test_georeferencing(self, tmp_path: Path) -> None:
        src = copy_extracted(tmp_path / 'src')
        os.remove(src / '4_Ortho_RGBIR' / 'top_potsdam_2_10_RGBIR.tfw')
        # Without a world file the DSM's grid (same size) is used.
        prepare_potsdam(src, tmp_path / 'a', tiles=['2_10'], progress=False)
        with rasterio.open(prepared_paths(tmp_path / 'a', '2_10')['image']) as ds:
            assert ds.transform.c == 366000 + 600
        # The image's own geotransform wins.
        image = src / '4_Ortho_RGBIR' / 'top_potsdam_2_11_RGBIR.tif'
        transform = rasterio.transform.from_origin(1000, 2000, 1, 1)
        rewrite(image, read(image), transform=transform, crs=CRS.from_epsg(32633))
        prepare_potsdam(src, tmp_path / 'b', tiles=['2_11'], progress=False)
        with rasterio.open(prepared_paths(tmp_path / 'b', '2_11')['image']) as ds:
            assert ds.transform == transform and ds.crs == CRS.from_epsg(32633)
        # No world file and a DSM of another size: nothing to georeference with.
        os.remove(src / '4_Ortho_RGBIR' / 'top_potsdam_3_13_RGBIR.tfw')
        with pytest.raises(ValueError, match=r'3_13_RGBIR\.tif: no georeferencing'):
            prepare_potsdam(src, tmp_path / 'c', tiles=['3_13'], progress=False)

    def test_band_order(self, tmp_path: Path) -> None:
        prepare_potsdam(
            ROOT,
            tmp_path,
            tiles=['2_10'],
            band_order=('B', 'G', 'R', 'IR'),
            progress=False,
        )
        raw = read(PotsdamSource(ROOT).files['image']['2_10'].path)
        image = read(prepared_paths(tmp_path, '2_10')['image'])
        assert np.array_equal(image[0], raw[2]) and np.array_equal(image[2], raw[0])

    def test_invalid_arguments(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match='block_size'):
            prepare_potsdam(ROOT, tmp_path, block_size=100)
        with pytest.raises(ValueError, match='unknown_colors'):
            prepare_potsdam(ROOT, tmp_path, unknown_colors='drop')  # type: ignore[arg-type]
        with pytest.raises(ValueError, match='not labelled Potsdam tiles'):
            prepare_potsdam(ROOT, tmp_path, tiles=['1_1'])
        with pytest.raises(ValueError, match='band_order'):
            prepare_potsdam(ROOT, tmp_path, band_order=('R', 'G', 'B', 'B'))

    def test_atomic_write(self, tmp_path: Path) -> None:
        path = str(tmp_path / 'x' / 'out.tif')
        profile = {
            'driver': 'GTiff', 'width': 4, 'height': 4, 'count': 1, 'dtype': 'uint8'
        }  # fmt: skip

        def fail(dst: object) -> None:
            raise OSError('disk full')

        with (
            warnings.catch_warnings(),
            pytest.raises(OSError, match='disk full'),
        ):
            warnings.simplefilter('ignore', rasterio.errors.NotGeoreferencedWarning)
            prepare_module._write_atomic(path, profile, fail)
        assert os.listdir(tmp_path / 'x') == []

    def test_cli(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        parser = argparse.ArgumentParser()
        add_subcommand(parser.add_subparsers(dest='command', required=True))
        args = parser.parse_args(
            ['prepare', 'potsdam', ROOT, str(tmp_path), '--tiles', '2_10', '--quiet']
        )
        assert args.func(args) == 0
        assert 'prepared 1 tile(s), skipped 0' in capsys.readouterr().out
        args = parser.parse_args(
            [
                'prepare',
                'potsdam',
                ROOT,
                str(tmp_path),
                '--tiles',
                '2_10',
                '--block-size',
                '32',
            ]
        )
        assert args.func(args) == 0
        assert 'skipped 1 complete' in capsys.readouterr().out
        args = parser.parse_args(
            ['prepare', 'potsdam', str(tmp_path / 'none'), str(tmp_path / 'x')]
        )
        assert args.func(args) == 2
        err = capsys.readouterr().err
        assert err.startswith('torchgeo-ssg2 prepare potsdam: error: ')
        assert 'Traceback' not in err


class TestPreparedPotsdam:
    def test_random_windows(self, prepared: Path) -> None:
        ds = PreparedPotsdam(prepared, split='train', tiles=['2_11', '3_10'])
        assert len(ds) == 2 and ds.num_classes == 5
        assert ds.crs.to_epsg() == 25833
        sampler = RandomPatchSampler(ds, size=16, length=4, generator=0)
        for index in sampler:
            sample = ds[index]
            assert sample['image'].shape == (5, 16, 16)
            assert sample['image'].dtype == torch.float32
            assert sample['mask'].shape == (16, 16)
            assert sample['mask'].dtype == torch.long
            assert set(sample['mask'].unique().tolist()) <= {0, 1, 2, 3, 4, 255}
            assert sample['bounds'].shape == (9,) and sample['transform'].shape == (9,)

    def test_matches_source(self, prepared: Path) -> None:
        ds = PreparedPotsdam(prepared, split='val', protocol='full', bands='RGBIR')
        reference = Potsdam(ROOT, split='val', protocol='full', bands='RGBIR')
        x, y, _ = ds.bounds
        sample = ds[x.start : x.stop, y.start : y.stop]
        expected = reference[0]
        assert torch.equal(sample['image'], expected['image'])
        assert torch.equal(sample['mask'], expected['mask'])
        # Eroded labels and the geoseg remapping.
        geoseg = PreparedPotsdam(prepared, split='val', cache=False)
        assert geoseg.labels == 'eroded'
        assert torch.equal(
            geoseg[x.start : x.stop, y.start : y.stop]['mask'],
            Potsdam(ROOT, split='val')[0]['mask'],
        )

    def test_window_outside_tiles(self, prepared: Path) -> None:
        ds = PreparedPotsdam(prepared, split='val', protocol='full')
        x, y, _ = ds.bounds
        half = (x.stop - x.start) / 2
        sample = ds[x.start - half : x.stop - half, y.start : y.stop]
        assert (sample['mask'][:, :16] == IGNORE_INDEX).all()
        assert (sample['mask'][:, 16:] != IGNORE_INDEX).all()
        with pytest.raises(IndexError):
            ds[x.start - 3 * half : x.start - 2 * half, y.start : y.stop]

    def test_gridded(self, prepared: Path) -> None:
        ds = PreparedPotsdam(
            prepared, split='test', tiles=['3_13'], protocol='full', bands='RGB',
            transforms=lambda s: {**s, 'image': s['image'] / 255},
        )  # fmt: skip
        sampler = GriddedPatchSampler(ds, size=16)
        samples = [ds[i] for i in sampler]
        assert len(samples) == 4
        assert all(s['image'].shape == (3, 16, 16) for s in samples)
        assert all(s['image'].max() <= 1 for s in samples)

    def test_missing(self, prepared: Path, tmp_path: Path) -> None:
        with pytest.raises(
            FileNotFoundError, match='run `torchgeo-ssg2 prepare potsdam'
        ):
            PreparedPotsdam(prepared, split='train')
        with pytest.raises(DatasetNotFoundError):
            PreparedPotsdam(tmp_path)
        with pytest.raises(ValueError, match='not in split'):
            PreparedPotsdam(prepared, split='val', tiles=['2_11'])
        with pytest.raises(ValueError, match='labels must be'):
            PreparedPotsdam(prepared, split='val', labels='coarse')  # type: ignore[arg-type]

    def test_plot(self, prepared: Path) -> None:
        ds = PreparedPotsdam(prepared, split='val')
        x, y, _ = ds.bounds
        sample = ds[x.start : x.stop, y.start : y.stop]
        sample['prediction'] = sample['mask'].clamp(max=4)
        fig = ds.plot(sample, suptitle='prepared')
        assert len(fig.axes) == 3
        plt.close(fig)


def test_torchgeo_ssg2_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from torchgeo_ssg2.cli import main

    argv = ['prepare', 'potsdam', ROOT, str(tmp_path), '--tiles', '7_13', '--quiet']
    assert main(argv) == 0
    assert 'prepared 1 tile(s)' in capsys.readouterr().out
    assert os.path.isfile(prepared_paths(tmp_path, '7_13')['eroded'])
