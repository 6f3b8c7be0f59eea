import pytest
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchgeo.datasets import NonGeoDataset

from torchgeo_ssg2.datasets.patches import GridPatchDataset, RandomPatchDataset, _starts
from torchgeo_ssg2.episodes import (
    EpisodeDataset,
    EpisodeIndex,
    Footprint,
    IndexStrategy,
    IndexSupportPolicy,
)


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


def test_patch_positions_and_support_draws_are_independent() -> None:
    """The position of a patch and its supports come from different streams."""
    patches = RandomPatchDataset(Images(), 8, length=3000, seed=0)
    policy = IndexSupportPolicy(len(patches), 1, seed=0)
    tops = [float(patches._corner(i, 0)[1]) for i in range(len(patches))]
    first = [float(policy.draw(i, 0)[0]) for i in range(len(patches))]
    correlation = torch.corrcoef(torch.tensor([tops, first]))[0, 1]
    assert abs(float(correlation)) < 0.1


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


def pixel_window(image: Tensor) -> tuple[int, slice, slice]:
    """Image index, rows and columns of a patch of :class:`Images`, from its pixels."""
    k, rows, cols = int(image[0, 0, 0]), image[1, :, 0], image[2, 0, :]
    return (
        k,
        slice(int(rows[0]), int(rows[-1]) + 1),
        slice(int(cols[0]), int(cols[-1]) + 1),
    )


def pixels_shared(a: Tensor, b: Tensor) -> bool:
    """Whether two unpadded patches of :class:`Images` share a pixel."""
    (ka, ra, ca), (kb, rb, cb) = pixel_window(a), pixel_window(b)
    return (
        ka == kb
        and max(ra.start, rb.start) < min(ra.stop, rb.stop)
        and max(ca.start, cb.start) < min(ca.stop, cb.stop)
    )


class TestFootprint:
    def test_random_matches_read(self) -> None:
        ds = RandomPatchDataset(Images(), (16, 12), seed=5)
        for i in range(len(ds)):
            for epoch in (0, 3):
                k, rows, cols = pixel_window(ds.read(i, epoch)['image'])
                assert ds.footprint(i, epoch) == Footprint(k, (cols, rows))
        with pytest.raises(IndexError):
            ds.footprint(len(ds))

    def test_grid_matches_windows(self) -> None:
        ds = GridPatchDataset(Images(), 16)
        for i, (k, top, left) in enumerate(ds.windows):
            window = (slice(left, left + 16), slice(top, top + 16))
            assert ds.footprint(i) == ds.footprint(i, 7) == Footprint(k, window)
            assert pixel_window(ds[i]['image']) == (k, window[1], window[0])

    def test_footprint_includes_padding(self) -> None:
        ds = GridPatchDataset(Images(), 32)
        # Image 2 is 20 x 70: its windows are padded to 32 rows.
        assert ds.footprint(10) == Footprint(2, (slice(38, 70), slice(0, 32)))


@pytest.mark.parametrize('strategy', ['random', 'same_source'])
class TestSupportsAvoidTarget:
    """No support shares a pixel with its target (edges may touch)."""

    def test_random_patches(self, strategy: IndexStrategy) -> None:
        reader = RandomPatchDataset(Images(), 16, seed=1)
        policy = IndexSupportPolicy(
            len(reader),
            4,
            strategy,
            groups=reader.groups,
            seed=2,
            footprints=reader.footprint,
        )
        episodes = EpisodeDataset(reader, policy)
        same_image = 0
        for epoch in range(8):
            for i in range(len(reader)):
                episode = episodes[EpisodeIndex(i, epoch)]
                for support in episode['support_image']:
                    assert not pixels_shared(episode['image'], support)
                    same_image += int(support[0, 0, 0] == episode['image'][0, 0, 0])
        # Other windows of the target's image are still drawn.
        assert same_image > 0

    def test_grid_windows(self, strategy: IndexStrategy) -> None:
        reader = GridPatchDataset(Images(), 16)
        for seed in range(4):
            policy = IndexSupportPolicy(
                len(reader),
                4,
                strategy,
                groups=reader.groups,
                seed=seed,
                fixed=True,
                footprints=reader.footprint,
            )
            episodes = EpisodeDataset(reader, policy)
            for i in range(len(reader)):
                episode = episodes[i]
                for support in episode['support_image']:
                    assert not pixels_shared(episode['image'], support)
