import os
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from torchgeo.datasets import DatasetNotFoundError

from torchgeo_ssg2.datasets.dubai import DubaiAerial

ROOT = os.path.join('tests', 'data', 'dubai', 'data')


@pytest.fixture
def dataset() -> DubaiAerial:
    return DubaiAerial(ROOT, split='train')


@pytest.fixture
def copy_root(tmp_path: Path) -> Path:
    root = tmp_path / 'data'
    shutil.copytree(ROOT, root)
    return root


class TestDubaiAerial:
    def test_statistics_are_those_of_the_training_split(self) -> None:
        """The class statistics come from the embedded training images only."""
        train = DubaiAerial(split='train')
        total = np.zeros(3)
        squares = np.zeros(3)
        count = 0
        for i in range(len(train)):
            image = train[i]['image'].double().numpy().reshape(3, -1)
            total += image.sum(axis=1)
            squares += (image * image).sum(axis=1)
            count += image.shape[1]
        mean = total / count
        std = np.sqrt(squares / count - mean * mean)
        np.testing.assert_allclose(DubaiAerial.mean, mean, atol=0.005)
        np.testing.assert_allclose(DubaiAerial.std, std, atol=0.005)

    def test_getitem(self, dataset: DubaiAerial) -> None:
        sample = dataset[0]
        assert sample['image'].shape == (3, 64, 72)
        assert sample['image'].dtype == torch.float32
        assert sample['mask'].shape == (64, 72)
        assert sample['mask'].dtype == torch.int64
        assert set(sample['mask'].unique().tolist()) <= {0, 1, 2, 3, 4, 255}

    def test_ignore_colours(self, dataset: DubaiAerial) -> None:
        # data.py paints the first 4 pixels of row 0 black and ~2 % unlabeled.
        mask = dataset[0]['mask']
        assert (mask[0, :4] == DubaiAerial.ignore_index).all()
        assert (mask == DubaiAerial.ignore_index).sum() > 4

    def test_palette_masks(self) -> None:
        ds = DubaiAerial(ROOT, split='train', tiles=[2])
        assert Image.open(ds.files[0][1]).mode == 'P'
        mask = ds[0]['mask']
        assert mask.shape == (48, 56)
        assert len(set(mask.unique().tolist()) - {255}) == 5

    def test_splits(self) -> None:
        files = {s: DubaiAerial(ROOT, split=s).files for s in ('train', 'val', 'test')}
        assert [len(files[s]) for s in ('train', 'val', 'test')] == [4, 2, 2]
        every = [f for s in files.values() for f in s]
        assert len(set(every)) == len(every) == 8
        # Fixed seed: the split is reproducible; another seed gives another split.
        assert DubaiAerial(ROOT, split='val').files == files['val']
        others = [DubaiAerial(ROOT, split='val', seed=s).files for s in range(1, 6)]
        assert any(o != files['val'] for o in others)

    def test_groups(self, dataset: DubaiAerial) -> None:
        assert dataset.groups == [1, 1, 2, 2]

    def test_tiles(self) -> None:
        ds = DubaiAerial(ROOT, split='train', tiles=[1])
        assert len(ds) == 2
        assert all('tile_1' in image for image, _ in ds.files)

    def test_missing_tile(self) -> None:
        with pytest.raises(ValueError, match=r'tiles \[7\] not found'):
            DubaiAerial(ROOT, tiles=[1, 7])

    def test_not_found(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetNotFoundError, match='Dataset not found'):
            DubaiAerial(tmp_path)

    def test_root_missing(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetNotFoundError, match='Dataset not found'):
            DubaiAerial(root=str(tmp_path / 'does-not-exist'))

    def test_invalid_split(self) -> None:
        with pytest.raises(AssertionError):
            DubaiAerial(ROOT, split='foo')  # type: ignore[arg-type]

    def test_invalid_pct(self) -> None:
        with pytest.raises(ValueError, match='sum to less than 1'):
            DubaiAerial(ROOT, val_pct=0.5, test_pct=0.5)

    def test_unknown_colour(self, copy_root: Path) -> None:
        ds = DubaiAerial(copy_root, split='train', tiles=[1])
        mask_path = ds.files[0][1]
        rgb = np.array(Image.open(mask_path).convert('RGB'))
        rgb[5, 5:8] = (1, 2, 3)
        Image.fromarray(rgb).save(mask_path)
        with pytest.raises(ValueError, match=r'image_part_\d+\.png.*#010203 \(3 px\)'):
            ds[0]

    def test_missing_mask(self, copy_root: Path) -> None:
        os.remove(copy_root / 'tile_1' / 'masks' / 'image_part_002.png')
        with pytest.raises(ValueError, match=r'image_part_002\.jpg: no mask'):
            DubaiAerial(copy_root)

    def test_size_mismatch(self, copy_root: Path) -> None:
        path = copy_root / 'tile_2' / 'masks' / 'image_part_003.png'
        Image.open(path).convert('RGB').crop((0, 0, 20, 20)).save(path)
        with pytest.raises(
            ValueError, match=r'image_part_003\.png: size 20x20 differs'
        ):
            DubaiAerial(copy_root)

    def test_no_images(self, copy_root: Path) -> None:
        shutil.rmtree(copy_root / 'tile_2' / 'images')
        with pytest.raises(ValueError, match=r'no \*\.jpg images'):
            DubaiAerial(copy_root)

    def test_index_error(self, dataset: DubaiAerial) -> None:
        with pytest.raises(IndexError):
            dataset[len(dataset)]

    def test_cache(self) -> None:
        ds = DubaiAerial(ROOT, cache=True)
        first = ds[1]
        assert 1 in ds._cache
        assert torch.equal(ds[1]['image'], first['image'])

    def test_transforms(self) -> None:
        ds = DubaiAerial(ROOT, transforms=lambda s: {**s, 'image': s['image'] / 255})
        assert ds[0]['image'].max() <= 1

    def test_plot(self, dataset: DubaiAerial) -> None:
        sample = dataset[0]
        dataset.plot(sample, suptitle='Test')
        plt.close()
        dataset.plot(sample, show_titles=False)
        plt.close()
        sample['prediction'] = sample['mask'].clone()
        fig = dataset.plot(sample)
        assert len(fig.axes) == 3
        plt.close()

    def test_plot_normalised_image(self, dataset: DubaiAerial) -> None:
        sample = dataset[0]
        sample['image'] = (sample['image'] - 100) / 80
        fig = dataset.plot(sample)
        data = fig.axes[0].images[0].get_array()
        assert 0 <= data.min() and data.max() <= 1
        plt.close()
