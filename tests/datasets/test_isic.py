import os
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from torchgeo.datasets import DatasetNotFoundError

from torchgeo_ssg2.datasets.isic import ISIC2018

ROOT = os.path.join('tests', 'data', 'isic2018')
ROOT_2017 = os.path.join(ROOT, 'isic2017')
ROOT_FOLDER = os.path.join(ROOT, 'isic2017_256')


def copy_2018(dst: Path, zips: bool) -> Path:
    for split in ('Training', 'Validation', 'Test'):
        for folder in (
            f'ISIC2018_Task1-2_{split}_Input',
            f'ISIC2018_Task1_{split}_GroundTruth',
        ):
            if zips:
                shutil.copy(os.path.join(ROOT, f'{folder}.zip'), dst)
            else:
                shutil.copytree(os.path.join(ROOT, folder), dst / folder)
    return dst


class TestISIC2018:
    @pytest.mark.parametrize(
        ('split', 'length'), [('train', 4), ('val', 2), ('test', 2)]
    )
    def test_official_2018(self, split: str, length: int) -> None:
        ds = ISIC2018(ROOT, split=split, size=64)  # type: ignore[arg-type]
        assert ds.layout == '2018'
        assert len(ds) == length
        sample = ds[0]
        assert sample['image'].shape == (3, 64, 64)
        assert sample['image'].dtype == torch.float32
        assert sample['mask'].shape == (64, 64)
        assert sample['mask'].dtype == torch.long
        assert set(sample['mask'].unique().tolist()) == {0, 1}

    def test_mask_matches_png(self) -> None:
        ds = ISIC2018(ROOT, split='val', resize=None)
        _, mask_path = ds.files[0]
        png = np.array(Image.open(mask_path))
        sample = ds[0]
        assert torch.equal(
            sample['mask'], torch.from_numpy((png > 127).astype(np.int64))
        )
        assert sample['image'].shape[1:] == png.shape
        assert sample['image'].max() > 1

    def test_resize_policies(self) -> None:
        # ISIC_0000001 is 36 wide, 48 high.
        stretch = ISIC2018(ROOT, size=(24, 40))[1]
        assert stretch['image'].shape == (3, 24, 40)
        pad = ISIC2018(ROOT, size=48, resize='pad')[1]
        assert pad['image'].shape == (3, 48, 48)
        # 36x48 fits 48x48 as 36 wide: 6 empty columns on each side.
        assert pad['image'][:, :, :6].abs().sum() == 0
        assert pad['image'][:, :, -6:].abs().sum() == 0
        assert pad['mask'][:, :6].sum() == 0
        assert pad['image'][:, :, 6:42].abs().sum() > 0
        native = ISIC2018(ROOT, resize=None)[1]
        assert native['image'].shape == (3, 48, 36)
        same = ISIC2018(ROOT, size=(48, 36))[1]
        assert torch.equal(same['image'], native['image'])

    def test_zips(self, tmp_path: Path) -> None:
        root = copy_2018(tmp_path, zips=True)
        ds = ISIC2018(root, split='test', size=32)
        assert len(ds) == 2
        assert (tmp_path / 'ISIC2018_Task1-2_Test_Input').is_dir()
        reference = ISIC2018(ROOT, split='test', size=32)
        assert torch.equal(ds[1]['mask'], reference[1]['mask'])

    def test_extraction_raced_by_another_process(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A rank whose copy of a folder lands second keeps the first one."""
        from torchgeo_ssg2.datasets import archives

        root = copy_2018(tmp_path, zips=True)
        folder = root / 'ISIC2018_Task1-2_Test_Input'
        rename = os.rename

        def rename_after_the_other_rank(src: str, dst: str) -> None:
            if dst == str(folder) and not folder.exists():
                # the other rank finishes its extraction between the check for
                # the folder and this rank's rename
                shutil.copytree(os.path.join(ROOT, folder.name), folder)
            rename(src, dst)

        monkeypatch.setattr(archives.os, 'rename', rename_after_the_other_rank)
        ds = ISIC2018(root, split='test', size=32)
        assert len(ds) == 2
        assert not [p for p in os.listdir(root) if '.partial-' in p]

    def test_corrupted_zip(self, tmp_path: Path) -> None:
        (tmp_path / 'ISIC2018_Task1-2_Training_Input.zip').write_bytes(b'not a zip')
        with pytest.raises(RuntimeError, match=r'ISIC2018_Task1-2_Training_Input\.zip'):
            ISIC2018(tmp_path)

    def test_not_found(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetNotFoundError):
            ISIC2018(tmp_path)

    def test_missing_mask(self, tmp_path: Path) -> None:
        root = copy_2018(tmp_path, zips=False)
        os.remove(
            root
            / 'ISIC2018_Task1_Training_GroundTruth'
            / 'ISIC_0000002_segmentation.png'
        )
        with pytest.raises(FileNotFoundError, match=r'ISIC_0000002_segmentation\.png'):
            ISIC2018(root)

    def test_missing_split(self, tmp_path: Path) -> None:
        root = copy_2018(tmp_path, zips=False)
        shutil.rmtree(root / 'ISIC2018_Task1-2_Test_Input')
        with pytest.raises(FileNotFoundError, match='split_fractions'):
            ISIC2018(root, split='test')

    def test_empty_split(self, tmp_path: Path) -> None:
        (tmp_path / 'ISIC2018_Task1-2_Training_Input').mkdir()
        with pytest.raises(ValueError, match='holds no images'):
            ISIC2018(tmp_path)

    def test_size_mismatch(self, tmp_path: Path) -> None:
        root = copy_2018(tmp_path, zips=False)
        mask = (
            root
            / 'ISIC2018_Task1_Validation_GroundTruth'
            / 'ISIC_0000004_segmentation.png'
        )
        Image.new('L', (5, 5)).save(mask)
        with pytest.raises(
            ValueError, match=r'ISIC_0000004_segmentation\.png: mask size'
        ):
            ISIC2018(root, split='val')[0]

    def test_isic2017(self) -> None:
        for split in ('train', 'val', 'test'):
            ds = ISIC2018(ROOT_2017, split=split, size=32)  # type: ignore[arg-type]
            assert ds.layout == '2017'
            assert len(ds) == 2  # superpixel PNGs are not items
            assert ds[1]['mask'].shape == (32, 32)

    def test_folder_layout(self) -> None:
        ds = ISIC2018(ROOT_FOLDER, size=32)
        assert ds.layout == 'folder'
        assert len(ds) == 10
        assert ds[0]['image'].shape == (3, 32, 32)
        with pytest.raises(FileNotFoundError, match='split_fractions'):
            ISIC2018(ROOT_FOLDER, split='val')

    def test_index_csv(self, tmp_path: Path) -> None:
        root = tmp_path / 'isic'
        shutil.copytree(ROOT_FOLDER, root)
        (root / 'index.csv').write_text(
            'split,image_id\ntrain,ISIC_0000003\ntrain,ISIC_0000001\nval,ISIC_0000002\n'
        )
        ds = ISIC2018(root)
        assert [os.path.basename(f[0]) for f in ds.files] == [
            'ISIC_0000003.jpg',
            'ISIC_0000001.jpg',
        ]
        (root / 'index.csv').write_text('name\nISIC_0000003\n')
        with pytest.raises(ValueError, match=r'index\.csv'):
            ISIC2018(root)
        (root / 'index.csv').write_text('split,image_id\ntrain,ISIC_0000099\n')
        with pytest.raises(FileNotFoundError, match=r'ISIC_0000099\.jpg'):
            ISIC2018(root)
        os.remove(root / 'index.csv')
        assert len(ISIC2018(root)) == 10

    def test_carved_split(self) -> None:
        kwargs = {'root': ROOT_FOLDER, 'split_fractions': (0.6, 0.2, 0.2), 'size': 32}
        parts = {s: ISIC2018(split=s, **kwargs).files for s in ('train', 'val', 'test')}  # type: ignore[arg-type]
        assert [len(p) for p in parts.values()] == [6, 2, 2]
        names = [f for p in parts.values() for f in p]
        assert len(set(names)) == 10
        again = ISIC2018(split='val', **kwargs)  # type: ignore[arg-type]
        assert again.files == parts['val']
        other = ISIC2018(split='val', split_seed=1, **kwargs)  # type: ignore[arg-type]
        assert other.files != parts['val']
        # Carving also applies to the official layouts (the random-split protocol).
        carved = ISIC2018(ROOT, split='test', split_fractions=(0.5, 0.25, 0.25))
        assert len(carved) == 1

    @pytest.mark.parametrize(
        'fractions', [(0.5, 0.5), (0.5, 0.6, -0.1), (0.5, 0.2, 0.2)]
    )
    def test_bad_fractions(self, fractions: tuple[float, ...]) -> None:
        with pytest.raises(ValueError, match='split_fractions'):
            ISIC2018(ROOT_FOLDER, split_fractions=fractions)

    def test_invalid_arguments(self) -> None:
        with pytest.raises(ValueError, match='split must be'):
            ISIC2018(ROOT, split='training')  # type: ignore[arg-type]
        with pytest.raises(ValueError, match='resize must be'):
            ISIC2018(ROOT, resize='crop')  # type: ignore[arg-type]
        with pytest.raises(ValueError, match='unknown layout'):
            ISIC2018(ROOT, layout='2016')  # type: ignore[arg-type]
        with pytest.raises(DatasetNotFoundError):
            ISIC2018(ROOT, layout='2017')

    def test_transforms(self) -> None:
        ds = ISIC2018(
            ROOT, size=32, transforms=lambda s: {**s, 'image': s['image'] / 255}
        )
        assert ds[0]['image'].max() <= 1

    def test_plot(self) -> None:
        ds = ISIC2018(ROOT, size=32)
        sample = ds[0]
        fig = ds.plot(sample, suptitle='Test')
        assert len(fig.axes) == 2
        plt.close(fig)
        sample['prediction'] = 1 - sample['mask']
        sample['image'] = sample['image'] / 255
        fig = ds.plot(sample, show_titles=False)
        assert len(fig.axes) == 3
        plt.close(fig)
