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
from rasterio.transform import Affine
from torchgeo.datasets import DatasetNotFoundError, Potsdam2D, RGBBandsMissingError

from torchgeo_ssg2.datasets.potsdam import Potsdam
from torchgeo_ssg2.datasets.potsdam_protocol import (
    BAND_SETS,
    CLASSES,
    COLORMAP,
    IGNORE_INDEX,
    PROTOCOLS,
    TEST_TILES,
    TRAIN_TILES,
    get_protocol,
    split_tiles,
)
from torchgeo_ssg2.datasets.potsdam_source import (
    PotsdamLabelError,
    PotsdamSource,
    SourceFile,
    decode_potsdam_labels,
    read_dsm,
    world_file_transform,
)

ROOT = os.path.join('tests', 'data', 'potsdam')
FOLDERS = ('4_Ortho_RGBIR', '1_DSM', '5_Labels_all', '5_Labels_all_noBoundary')


def copy_extracted(dst: Path) -> Path:
    for folder in FOLDERS:
        shutil.copytree(os.path.join(ROOT, folder), dst / folder)
    return dst


def copy_zips(dst: Path) -> Path:
    dst.mkdir(exist_ok=True)
    for folder in FOLDERS:
        shutil.copy(os.path.join(ROOT, f'{folder}.zip'), dst)
    return dst


def write_label(path: Path, rgb: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', rasterio.errors.NotGeoreferencedWarning)
        _write_label(path, rgb)


def _write_label(path: Path, rgb: np.ndarray) -> None:
    with rasterio.open(
        path,
        'w',
        driver='GTiff',
        width=rgb.shape[2],
        height=rgb.shape[1],
        count=3,
        dtype='uint8',
    ) as dst:
        dst.write(rgb)


def read_rgb(path: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read()


class TestConstants:
    def test_torchgeo_order(self) -> None:
        assert CLASSES == tuple(Potsdam2D.classes)
        assert COLORMAP == tuple(tuple(c) for c in Potsdam2D.colormap)
        assert CLASSES[0] == 'Clutter/background'

    def test_official_splits(self) -> None:
        assert len(TRAIN_TILES) == 24
        assert len(TEST_TILES) == 14
        assert not set(TRAIN_TILES) & set(TEST_TILES)
        assert TRAIN_TILES[0] == '2_10'

    def test_split_tiles(self) -> None:
        assert len(split_tiles('train')) == 23
        assert len(split_tiles('train', drop_7_10=True)) == 22
        assert '7_10' not in split_tiles('train', drop_7_10=True)
        assert split_tiles('val') == ('2_10',)
        assert split_tiles('val', ('2_11', '3_10')) == ('2_11', '3_10')
        assert '2_11' not in split_tiles('train', ('2_11',))
        assert split_tiles('test') == TEST_TILES
        with pytest.raises(ValueError, match='not official training tiles'):
            split_tiles('val', ('2_13',))
        with pytest.raises(ValueError, match='unknown split'):
            split_tiles('trainval')

    def test_protocols(self) -> None:
        geoseg, full = PROTOCOLS['geoseg'], PROTOCOLS['full']
        assert geoseg.num_classes == 5 and 'Clutter/background' not in geoseg.classes
        assert full.num_classes == 6 and full.classes == CLASSES
        assert geoseg.labels_for('train') == 'full'
        assert geoseg.labels_for('test') == 'eroded'
        assert full.labels_for('val') == 'full'
        assert geoseg.drop_7_10 and not full.drop_7_10
        mask = torch.tensor([0, 1, 2, 3, 4, 5, IGNORE_INDEX], dtype=torch.uint8)
        assert geoseg.remap(mask).tolist() == [255, 0, 1, 2, 3, 4, 255]
        assert full.remap(mask).tolist() == [0, 1, 2, 3, 4, 5, 255]
        assert geoseg.remap(mask).dtype == torch.long
        assert get_protocol(full) is full
        assert get_protocol('geoseg') is geoseg
        with pytest.raises(ValueError, match='unknown Potsdam protocol'):
            get_protocol('mmseg')


class TestDecode:
    def rgb(self, colors: list[tuple[int, int, int]]) -> np.ndarray:
        return np.array(colors, dtype=np.uint8).T[:, None, :]

    def test_palette(self) -> None:
        out = decode_potsdam_labels(self.rgb(list(COLORMAP)))
        assert out.tolist() == [[0, 1, 2, 3, 4, 5]]

    def test_boundary(self) -> None:
        rgb = self.rgb([(0, 0, 0), (255, 0, 0)])
        assert decode_potsdam_labels(rgb, eroded=True).tolist() == [[255, 0]]
        with pytest.raises(PotsdamLabelError, match=r'RGB\(0, 0, 0\): 1 px'):
            decode_potsdam_labels(rgb, 'x.tif')

    def test_unknown(self) -> None:
        rgb = self.rgb([(1, 2, 3), (1, 2, 3), (255, 0, 0), (9, 9, 9)])
        with pytest.raises(PotsdamLabelError) as info:
            decode_potsdam_labels(rgb, 'tile.tif')
        assert info.value.path == 'tile.tif'
        assert info.value.colors == {(1, 2, 3): 2, (9, 9, 9): 1}
        assert 'tile.tif' in str(info.value)
        assert 'RGB(1, 2, 3): 2 px' in str(info.value)
        out = decode_potsdam_labels(rgb, unknown_colors='ignore')
        assert out.tolist() == [[255, 255, 0, 255]]

    def test_many_unknown(self) -> None:
        rgb = self.rgb([(i, 1, 1) for i in range(12)])
        with pytest.raises(PotsdamLabelError, match='and 2 more colours'):
            decode_potsdam_labels(rgb)


class TestSource:
    def test_extracted(self) -> None:
        source = PotsdamSource(ROOT)
        for part in source.parts:
            assert len(source.files[part]) == 38
        dsm = source.files['dsm']['2_10']
        assert dsm.display.endswith('dsm_potsdam_02_10.tif')
        assert source.missing(['2_10'], list(source.parts)) == []

    def test_zips(self, tmp_path: Path) -> None:
        source = PotsdamSource(copy_zips(tmp_path))
        image = source.files['image']['6_7']
        assert image.path.startswith('/vsizip/')
        assert image.display.endswith(
            '4_Ortho_RGBIR.zip!4_Ortho_RGBIR/top_potsdam_6_7_RGBIR.tif'
        )
        assert source.files['full']['6_7'].member == 'top_potsdam_6_7_label.tif'
        assert world_file_transform(image) == world_file_transform(
            PotsdamSource(ROOT).files['image']['6_7']
        )
        assert image.sidecar('.xyz') is None

    def test_labels_at_root(self, tmp_path: Path) -> None:
        for name in ('5_Labels_all.zip', '5_Labels_all_noBoundary.zip'):
            with zipfile.ZipFile(os.path.join(ROOT, name)) as zf:
                zf.extractall(tmp_path)
        source = PotsdamSource(tmp_path)
        assert len(source.files['full']) == 38
        assert len(source.files['eroded']) == 38
        assert source.files['image'] == {}

    def test_corrupted_zip(self, tmp_path: Path) -> None:
        (tmp_path / '1_DSM.zip').write_bytes(b'not a zip')
        with pytest.raises(RuntimeError, match=r'1_DSM\.zip: unreadable zip'):
            PotsdamSource(tmp_path)

    def test_not_found(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetNotFoundError):
            PotsdamSource(tmp_path).require(['2_10'], ['image'])
        with pytest.raises(DatasetNotFoundError):
            PotsdamSource(tmp_path / 'absent').require(['2_10'], ['image'])

    def test_missing(self, tmp_path: Path) -> None:
        root = copy_extracted(tmp_path)
        os.remove(root / '1_DSM' / 'dsm_potsdam_02_11.tif')
        os.remove(root / '5_Labels_all' / 'top_potsdam_7_7_label.tif')
        with pytest.raises(FileNotFoundError) as info:
            PotsdamSource(root).require(TRAIN_TILES, ['image', 'dsm', 'full'])
        assert '1_DSM: dsm_potsdam_02_11.tif' in str(info.value)
        assert '5_Labels_all: top_potsdam_7_7_label.tif' in str(info.value)
        assert '2 missing' in str(info.value)

    def test_world_file(self, tmp_path: Path) -> None:
        tif = tmp_path / 'a.tif'
        (tmp_path / 'a.tfw').write_text('2\n0\n0\n-2\n101\n199\n')
        assert world_file_transform(SourceFile(str(tif), str(tif))) == Affine(
            2, 0, 100, 0, -2, 200
        )
        (tmp_path / 'a.tfw').write_text('2\n0\n0\n')
        with pytest.raises(ValueError, match='malformed'):
            world_file_transform(SourceFile(str(tif), str(tif)))
        other = tmp_path / 'b.tif'
        assert world_file_transform(SourceFile(str(other), str(other))) is None


class TestPotsdam:
    @pytest.mark.parametrize(
        ('split', 'protocol', 'length'),
        [
            ('train', 'geoseg', 22),
            ('train', 'full', 23),
            ('val', 'geoseg', 1),
            ('test', 'full', 14),
        ],
    )
    def test_len(self, split: str, protocol: str, length: int) -> None:
        ds = Potsdam(ROOT, split=split, protocol=protocol)  # type: ignore[arg-type]
        assert len(ds) == length
        assert ds.num_classes == PROTOCOLS[protocol].num_classes

    @pytest.mark.parametrize('bands', list(BAND_SETS))
    def test_getitem(self, bands: str) -> None:
        ds = Potsdam(ROOT, bands=bands)
        sample = ds[0]
        assert sample['image'].shape == (len(BAND_SETS[bands]), 32, 32)
        assert sample['image'].dtype == torch.float32
        assert sample['mask'].shape == (32, 32)
        assert sample['mask'].dtype == torch.long
        assert set(sample['mask'].unique().tolist()) <= {0, 1, 2, 3, 4, 255}

    def test_band_values(self) -> None:
        ds = Potsdam(ROOT, bands='IRRG', protocol='full')
        tile = ds.tiles[0]
        with rasterio.open(ds.source.files['image'][tile].path) as src:
            raw = src.read().astype(np.float32)
        assert torch.equal(ds[0]['image'], torch.from_numpy(raw[[3, 0, 1]]))
        swapped = Potsdam(ROOT, bands=('R',), band_order=('IR', 'G', 'B', 'R'))
        assert torch.equal(swapped[0]['image'][0], torch.from_numpy(raw[3]))
        with pytest.raises(ValueError, match='band_order'):
            Potsdam(ROOT, band_order=('R', 'G', 'B'))

    def test_protocol_masks(self) -> None:
        full = Potsdam(ROOT, split='test', protocol='full')
        geoseg = Potsdam(ROOT, split='test', protocol='geoseg', labels='full')
        a, b = full[0]['mask'], geoseg[0]['mask']
        assert torch.equal(b[a == 0], torch.full_like(b[a == 0], 255))
        assert torch.equal(b[a > 0], a[a > 0] - 1)

    def test_eroded(self) -> None:
        full = Potsdam(ROOT, split='val', protocol='full')
        eroded = Potsdam(ROOT, split='val', protocol='full', labels='eroded')
        a, b = full[0]['mask'], eroded[0]['mask']
        boundary = b == IGNORE_INDEX
        assert 0 < boundary.sum() < boundary.numel()
        assert torch.equal(a[~boundary], b[~boundary])
        assert Potsdam(ROOT, split='val').labels == 'eroded'

    def test_dsm_resampled(self) -> None:
        ds = Potsdam(ROOT, split='test', bands=('DSM',), protocol='full')
        sample = ds[ds.tiles.index('3_13')]
        assert sample['image'].shape == (1, 32, 32)
        assert torch.isfinite(sample['image']).all()
        assert sample['image'].min() >= 30

    def test_read_dsm_window(self) -> None:
        dsm = PotsdamSource(ROOT).files['dsm']['3_13']
        full = read_dsm(dsm, (32, 32))
        window = rasterio.windows.Window(4, 8, 10, 6)
        assert np.array_equal(read_dsm(dsm, (32, 32), window), full[8:14, 4:14])

    def test_zips(self, tmp_path: Path) -> None:
        ds = Potsdam(copy_zips(tmp_path), split='val')
        reference = Potsdam(ROOT, split='val')
        assert torch.equal(ds[0]['image'], reference[0]['image'])
        assert torch.equal(ds[0]['mask'], reference[0]['mask'])
        assert not (tmp_path / '4_Ortho_RGBIR').exists()

    def test_transforms(self) -> None:
        ds = Potsdam(
            ROOT, split='val', transforms=lambda s: {**s, 'extra': torch.ones(1)}
        )
        assert 'extra' in ds[0]

    def test_unknown_colour(self, tmp_path: Path) -> None:
        root = copy_extracted(tmp_path)
        path = root / '5_Labels_all' / 'top_potsdam_2_10_label.tif'
        rgb = read_rgb(str(path))
        rgb[:, 0, :3] = np.array([10, 20, 30], dtype=np.uint8)[:, None]
        write_label(path, rgb)
        ds = Potsdam(root, split='val', labels='full')
        with pytest.raises(PotsdamLabelError) as info:
            ds[0]
        message = str(info.value)
        assert 'top_potsdam_2_10_label.tif' in message
        assert 'RGB(10, 20, 30): 3 px' in message
        ignored = Potsdam(
            root, split='val', protocol='full', labels='full', unknown_colors='ignore'
        )
        assert (ignored[0]['mask'][0, :3] == IGNORE_INDEX).all()

    def test_label_size_mismatch(self, tmp_path: Path) -> None:
        root = copy_extracted(tmp_path)
        path = (
            root / '5_Labels_all_noBoundary' / 'top_potsdam_2_10_label_noBoundary.tif'
        )
        write_label(path, read_rgb(str(path))[:, :30])
        with pytest.raises(ValueError, match=r'label size \(30, 32\) differs'):
            Potsdam(root, split='val')[0]

    def test_unreadable_raster(self, tmp_path: Path) -> None:
        root = copy_extracted(tmp_path)
        (root / '4_Ortho_RGBIR' / 'top_potsdam_2_10_RGBIR.tif').write_bytes(b'junk')
        with pytest.raises(
            RuntimeError, match=r'top_potsdam_2_10_RGBIR\.tif: unreadable'
        ):
            Potsdam(root, split='val')[0]

    def test_corrupted_zip_member(self, tmp_path: Path) -> None:
        root = copy_zips(tmp_path)
        with zipfile.ZipFile(root / '4_Ortho_RGBIR.zip', 'w') as zf:
            zf.writestr('4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif', b'junk')
        with pytest.raises(
            RuntimeError, match=r'4_Ortho_RGBIR\.zip!4_Ortho_RGBIR/top_potsdam_2_10'
        ):
            Potsdam(root, split='val')[0]

    def test_read_error(self, tmp_path: Path) -> None:
        root = copy_extracted(tmp_path)
        path = root / '4_Ortho_RGBIR' / 'top_potsdam_2_10_RGBIR.tif'
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(RuntimeError, match='unreadable raster'):
            Potsdam(root, split='val')[0]

    def test_missing(self, tmp_path: Path) -> None:
        root = copy_extracted(tmp_path)
        os.remove(root / '1_DSM' / 'dsm_potsdam_02_10.tif')
        with pytest.raises(FileNotFoundError, match=r'dsm_potsdam_02_10\.tif'):
            Potsdam(root, split='val')
        assert len(Potsdam(root, split='val', bands='RGBIR')) == 1

    def test_not_found(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetNotFoundError):
            Potsdam(tmp_path)

    def test_invalid_arguments(self) -> None:
        with pytest.raises(ValueError, match='unknown band set'):
            Potsdam(ROOT, bands='NIR')
        with pytest.raises(ValueError, match='invalid bands'):
            Potsdam(ROOT, bands=('R', 'SWIR'))
        with pytest.raises(ValueError, match='invalid bands'):
            Potsdam(ROOT, bands=())
        with pytest.raises(ValueError, match='labels must be'):
            Potsdam(ROOT, labels='coarse')  # type: ignore[arg-type]
        with pytest.raises(ValueError, match='unknown_colors'):
            Potsdam(ROOT, unknown_colors='drop')  # type: ignore[arg-type]
        with pytest.raises(ValueError, match='has no tiles'):
            Potsdam(ROOT, split='val', val_tiles=())
        with pytest.raises(ValueError, match='unknown split'):
            Potsdam(ROOT, split='trainval')  # type: ignore[arg-type]

    @pytest.mark.parametrize('bands', ['RGB', 'IRRG', 'RGBIR+DSM'])
    def test_plot(self, bands: str) -> None:
        ds = Potsdam(ROOT, split='val', bands=bands)
        sample = ds[0]
        fig = ds.plot(sample, suptitle='Test')
        assert len(fig.axes) == 2
        plt.close(fig)
        sample['prediction'] = sample['mask'].clone()
        fig = ds.plot(sample, show_titles=False)
        assert len(fig.axes) == 3
        plt.close(fig)

    def test_plot_rgb_missing(self) -> None:
        ds = Potsdam(ROOT, split='val', bands=('DSM', 'IR'))
        with pytest.raises(RGBBandsMissingError):
            ds.plot(ds[0])
