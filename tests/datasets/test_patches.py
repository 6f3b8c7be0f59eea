import pytest
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchgeo.datasets import NonGeoDataset

from torchgeo_ssg2.datasets.patches import GridPatchDataset, RandomPatchDataset, _starts


class Images(NonGeoDataset):
    """Images of different sizes whose pixels encode (image, row, column)."""

    classes = ('a', 'b', 'c')
    ignore_index = 255
    shapes = {'train': [(40, 50), (64, 64), (20, 70)], 'val': [(32, 48), (40, 40)]}

    def __init__(self, split: str = 'train', sized: bool = True) -> None:
        self.split_shapes = self.shapes.get(split, self.shapes['val'])
        if sized:
            self.sizes = list(self.split_shapes)
        self.groups = [f'g{k % 2}' for k in range(len(self.split_shapes))]

    def __len__(self) -> int:
        return len(self.split_shapes)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        h, w = self.split_shapes[index]
        rows = torch.arange(h).view(h, 1).expand(h, w).float()
        cols = torch.arange(w).view(1, w).expand(h, w).float()
        image = torch.stack([torch.full((h, w), float(index)), rows, cols])
        mask = ((rows + cols).long() % 3).clone()
        return {'image': image, 'mask': mask, 'extra': torch.tensor(index)}


class TestStarts:
    def test_flush(self) -> None:
        assert _starts(70, 32, 32) == [0, 32, 38]
        assert _starts(64, 32, 32) == [0, 32]
        assert _starts(20, 32, 32) == [0]
        assert _starts(70, 32, 16) == [0, 16, 32, 38]


class TestRandomPatchDataset:
    def test_shapes_and_length(self) -> None:
        ds = RandomPatchDataset(Images(), 32)
        # ceil-covers: 2*2 + 2*2 + 1*3
        assert len(ds) == 11
        assert ds.table.count(1) == 4
        for i in range(len(ds)):
            sample = ds[i]
            assert sample['image'].shape == (3, 32, 32)
            assert sample['mask'].shape == (32, 32)
            assert set(sample) == {'image', 'mask'}

    def test_crop_matches_source(self) -> None:
        ds = RandomPatchDataset(Images(), 16, length=5)
        for i in range(5):
            s = ds[i]
            k = ds.image_index(i)
            assert (s['image'][0] == k).all()
            top, left = int(s['image'][1, 0, 0]), int(s['image'][2, 0, 0])
            full = Images()[k]
            assert torch.equal(
                s['mask'], full['mask'][top : top + 16, left : left + 16]
            )

    def test_epoch_and_seed(self) -> None:
        ds = RandomPatchDataset(Images(), 16, length=8, seed=3)
        first = [ds[i]['image'] for i in range(8)]
        assert all(torch.equal(a, ds[i]['image']) for i, a in enumerate(first))
        moved = [ds.read(i, 1)['image'] for i in range(8)]
        assert any(not torch.equal(a, b) for a, b in zip(first, moved, strict=True))
        assert torch.equal(ds.read(2, 0)['image'], first[2])
        assert torch.equal(ds.read(2, 1)['image'], moved[2])
        other = RandomPatchDataset(Images(), 16, length=8, seed=4)
        assert any(not torch.equal(other[i]['image'], first[i]) for i in range(8))

    def test_padding(self) -> None:
        ds = RandomPatchDataset(Images(), (32, 32))
        small = [i for i in range(len(ds)) if ds.image_index(i) == 2]
        sample = ds[small[0]]
        assert sample['image'].shape == (3, 32, 32)
        assert (sample['mask'][20:] == 255).all()
        assert (sample['image'][:, 20:] == 0).all()

    def test_padding_without_ignore_index(self) -> None:
        data = Images()
        data.ignore_index = None  # type: ignore[assignment]
        ds = RandomPatchDataset(data, 32)
        small = [i for i in range(len(ds)) if ds.image_index(i) == 2]
        with pytest.raises(ValueError, match='no ignore_index'):
            ds[small[0]]

    def test_without_sizes(self) -> None:
        ds = RandomPatchDataset(Images(sized=False), 32)
        assert ds.sizes == Images.shapes['train']

    def test_groups(self) -> None:
        ds = RandomPatchDataset(Images(), 32)
        assert ds.groups == [f'g{ds.image_index(i) % 2}' for i in range(len(ds))]

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match='length >= 1'):
            RandomPatchDataset(Images(), 32, length=0)
        with pytest.raises(ValueError, match='must be positive'):
            RandomPatchDataset(Images(), 0)
        with pytest.raises(IndexError):
            RandomPatchDataset(Images(), 32)[11]


class TestGridPatchDataset:
    def test_windows(self) -> None:
        ds = GridPatchDataset(Images(), 32)
        # (40, 50): 2x2, (64, 64): 2x2, (20, 70): 1x3
        assert len(ds) == 11
        assert ds.windows[:4] == [(0, 0, 0), (0, 0, 18), (0, 8, 0), (0, 8, 18)]
        covered = torch.zeros(40, 50, dtype=torch.bool)
        for k, top, left in ds.windows:
            if k == 0:
                covered[top : top + 32, left : left + 32] = True
        assert covered.all()

    def test_stride_and_groups(self) -> None:
        ds = GridPatchDataset(Images(), 32, stride=16)
        assert len(ds) > 11
        assert ds.groups == [f'g{k % 2}' for k, _, _ in ds.windows]
        sample = ds[5]
        _, top, left = ds.windows[5]
        assert int(sample['image'][1, 0, 0]) == top
        assert int(sample['image'][2, 0, 0]) == left

    def test_padding(self) -> None:
        ds = GridPatchDataset(Images(), 32)
        sample = ds[10]
        assert (sample['mask'][20:] == 255).all()


def test_short_epoch_draws_from_every_image() -> None:
    class Square(Dataset):
        sizes = [(64, 64)] * 10

        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int) -> dict:
            return {
                'image': torch.full((1, 64, 64), float(i)),
                'mask': torch.full((64, 64), i, dtype=torch.long),
            }

    # 16 patches per image in the table; an epoch of 40 patches must not come
    # from the first three images only.
    ds = RandomPatchDataset(Square(), 16, length=40, seed=0)
    images = {ds.image_index(i) for i in range(len(ds))}
    assert len(images) >= 8
    assert {int(ds[i]['mask'][0, 0]) for i in range(5)} <= set(range(10))
