from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchgeo.datasets import RasterDataset
from torchgeo.samplers import GriddedPatchSampler

from torchgeo_ssg2.episodes import (
    EpisodeDataset,
    EpisodeIndex,
    EpisodeSampler,
    GeoEpisodeSampler,
    GeoReader,
    GeoSupportPolicy,
    IndexSupportPolicy,
    ItemReader,
    infer_nodata,
)


class IdDataset(Dataset[dict[str, Any]]):
    """Item i: image and mask filled with i, so an episode reveals its indices."""

    def __init__(self, n: int = 12, channels: int = 2, size: int = 4) -> None:
        self.n = n
        self.channels = channels
        self.size = size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.size
        return {
            'image': torch.full((self.channels, s, s), float(i)),
            'mask': torch.full((s, s), i, dtype=torch.long),
            'id': i,
        }


def support_ids(batch: dict[str, Tensor]) -> list[list[int]]:
    return batch['support_mask'][:, :, 0, 0].tolist()


class TestEpisodeDataset:
    def test_getitem(self) -> None:
        policy = IndexSupportPolicy(12, 3, seed=1)
        ds = EpisodeDataset(ItemReader(IdDataset()), policy)
        assert len(ds) == 12
        ep = ds[EpisodeIndex(4, 0)]
        assert ep['image'].shape == (2, 4, 4)
        assert ep['mask'].shape == (4, 4)
        assert ep['support_image'].shape == (3, 2, 4, 4)
        assert ep['support_mask'].shape == (3, 4, 4)
        assert ep['support_mask'].dtype == torch.long
        assert ep['id'] == 4
        assert ep['support_mask'][:, 0, 0].tolist() == policy.draw(4)
        assert ep['support_image'][:, 0, 0, 0].tolist() == policy.draw(4)

    def test_epoch_travels_with_the_index(self) -> None:
        policy = IndexSupportPolicy(12, 3, seed=1)
        ds = EpisodeDataset(ItemReader(IdDataset()), policy)
        got = ds[EpisodeIndex(4, 2)]['support_mask'][:, 0, 0].tolist()
        assert got == policy.draw(4, 2)
        # A plain key is a target of epoch 0.
        assert ds[4]['support_mask'][:, 0, 0].tolist() == policy.draw(4, 0)

    def test_image_only(self) -> None:
        class NoMask(IdDataset):
            def __getitem__(self, i: int) -> dict[str, Any]:
                return {'image': torch.full((1, 2, 2), float(i))}

        ep = EpisodeDataset(ItemReader(NoMask(4)), IndexSupportPolicy(4, 2))[0]
        assert ep['support_image'].shape == (2, 1, 2, 2)
        assert 'support_mask' not in ep

    def test_epoch_reaches_persistent_workers(self) -> None:
        policy = IndexSupportPolicy(12, 3, seed=4)
        ds = EpisodeDataset(ItemReader(IdDataset()), policy)
        index_sampler = EpisodeSampler(ds, shuffle=True, seed=0)
        loader = DataLoader(
            ds,
            batch_size=4,
            sampler=index_sampler,
            num_workers=2,
            persistent_workers=True,
        )
        for epoch in range(3):
            index_sampler.set_epoch(epoch)
            seen = 0
            for batch in loader:
                for target, supports in zip(
                    batch['id'].tolist(), support_ids(batch), strict=True
                ):
                    assert supports == policy.draw(target, epoch)
                    seen += 1
            assert seen == 12
        # Supports do change between epochs.
        assert any(policy.draw(i, 0) != policy.draw(i, 2) for i in range(12))


class Recorder(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, int, list[int]]] = []

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        for target, supports in zip(
            batch['id'].tolist(), support_ids(batch), strict=True
        ):
            self.seen.append((self.current_epoch, target, supports))
        return (self.weight * batch['image'].mean()).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_lightning_epochs() -> None:
    policy = IndexSupportPolicy(8, 2, seed=2)
    ds = EpisodeDataset(ItemReader(IdDataset(8)), policy)
    loader = DataLoader(
        ds,
        batch_size=4,
        sampler=EpisodeSampler(ds, seed=0),
        num_workers=2,
        persistent_workers=True,
    )
    model = Recorder()
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator='cpu',
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    assert len(model.seen) == 24
    for epoch, target, supports in model.seen:
        assert supports == policy.draw(target, epoch)
    assert {e for e, _, _ in model.seen} == {0, 1, 2}


# -- geo episodes -----------------------------------------------------------------

GEO_RES = 1.0
GEO_LEFT, GEO_TOP = 300000.0, 5000000.0
NODATA_COLS = 40  # left columns of the image that are nodata


class FakeImages(RasterDataset):
    filename_glob = 'img_*.tif'
    is_image = True


class FakeMasks(RasterDataset):
    filename_glob = 'mask_*.tif'
    is_image = False


def fake_mask_array(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return ((rows // 8 + 3 * (cols // 8)) % 5).astype(np.uint8)


@pytest.fixture
def geo_pair(tmp_path: Path) -> tuple[RasterDataset, np.ndarray]:
    """A 3-band image with nodata=0 on its left 40 columns, and a class mask."""
    h, w = 96, 128
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, (3, h, w), dtype=np.uint8)
    image[:, :, :NODATA_COLS] = 0
    mask = fake_mask_array(h, w)
    common = {
        'driver': 'GTiff',
        'height': h,
        'width': w,
        'crs': 'EPSG:32631',
        'transform': from_origin(GEO_LEFT, GEO_TOP, GEO_RES, GEO_RES),
        'tiled': True,
        'blockxsize': 32,
        'blockysize': 32,
    }
    with rasterio.open(
        tmp_path / 'img_0.tif', 'w', count=3, dtype='uint8', nodata=0, **common
    ) as dst:
        dst.write(image)
    with rasterio.open(
        tmp_path / 'mask_0.tif', 'w', count=1, dtype='uint8', **common
    ) as dst:
        dst.write(mask[None])
    return FakeImages(paths=tmp_path) & FakeMasks(paths=tmp_path), mask


def window_offsets(window: tuple[slice, slice]) -> tuple[int, int]:
    """(row, col) pixel offset of a window's top-left corner in the fakes."""
    x, y = window
    return round((GEO_TOP - y.stop) / GEO_RES), round((x.start - GEO_LEFT) / GEO_RES)


class CountingReader(ItemReader):
    """An ItemReader that counts its reads."""

    def __init__(self, dataset: Any) -> None:
        super().__init__(dataset)
        self.reads = 0

    def read(self, key: Any, epoch: int) -> dict[str, Any]:
        self.reads += 1
        return super().read(key, epoch)


def geo_episodes(
    dataset: RasterDataset, size: int, t: int, **kwargs: Any
) -> tuple[EpisodeDataset, GeoSupportPolicy]:
    policy = GeoSupportPolicy(dataset, size=size, sequence_length=t, **kwargs)
    return EpisodeDataset(ItemReader(dataset), policy), policy


class TestGeoEpisodes:
    def test_episode(self, geo_pair: tuple[RasterDataset, np.ndarray]) -> None:
        dataset, mask = geo_pair
        episodes, _ = geo_episodes(dataset, 16, 3)
        assert episodes.nodata == 0.0  # inferred from the image file
        for index in GeoEpisodeSampler(dataset, size=16, length=6):
            ep = episodes[index]
            assert ep['image'].shape == (3, 16, 16)
            assert ep['mask'].shape == (16, 16) and ep['mask'].dtype == torch.long
            assert ep['support_image'].shape == (3, 3, 16, 16)
            assert ep['support_mask'].shape == (3, 16, 16)
            assert ep['bounds'].shape == (9,) and ep['transform'].shape == (9,)
            assert ep['bounds'][0] == pytest.approx(index.target[0].start)
            r, c = window_offsets(index.target)
            assert np.array_equal(ep['mask'].numpy(), mask[r : r + 16, c : c + 16])

    def test_nodata_supports_skipped(
        self, geo_pair: tuple[RasterDataset, np.ndarray]
    ) -> None:
        dataset, mask = geo_pair
        policy = GeoSupportPolicy(
            dataset, size=16, sequence_length=3, num_spares=6, seed=1
        )
        reader = CountingReader(dataset)
        episodes = EpisodeDataset(reader, policy, max_nodata_fraction=0.25)
        drawn_bad = 0
        for index in GeoEpisodeSampler(dataset, size=16, length=20, seed=1):
            keys = policy.draw(index.target, index.epoch)
            drawn_bad += sum(
                window_offsets(w)[1] + 16 * 0.75 < NODATA_COLS for w in keys[:3]
            )
            ep = episodes[index]
            crops = [mask[r : r + 16, c : c + 16] for r, c in map(window_offsets, keys)]
            for k in range(3):
                frac = float((ep['support_image'][k] == 0).all(dim=0).float().mean())
                assert frac <= 0.25
                # Each support comes with the mask of one of the drawn windows.
                got = ep['support_mask'][k].numpy()
                assert any(np.array_equal(got, crop) for crop in crops)
        assert drawn_bad > 0  # the policy did propose mostly-nodata windows
        assert reader.reads > 20 * 4  # ... and spares replaced them

    def test_spares_exhausted(self, geo_pair: tuple[RasterDataset, np.ndarray]) -> None:
        dataset, _ = geo_pair
        w = (slice(GEO_LEFT, GEO_LEFT + 16), slice(GEO_TOP - 16, GEO_TOP))
        w2 = (slice(GEO_LEFT, GEO_LEFT + 16), slice(GEO_TOP - 48, GEO_TOP - 32))
        good = (slice(GEO_LEFT + 64, GEO_LEFT + 80), slice(GEO_TOP - 16, GEO_TOP))
        target = (
            slice(GEO_LEFT + 96, GEO_LEFT + 112),
            slice(GEO_TOP - 80, GEO_TOP - 64),
        )

        class Fixed:
            sequence_length, seed, fixed = 2, 0, True

            def draw(self, key: Any, epoch: int = 0) -> list[Any]:
                return [w, good, w2]

        ep = EpisodeDataset(ItemReader(dataset), Fixed())[target]
        # Both nodata windows are rejected; the good one is kept, then the
        # least-nodata of the rejected (the first, all being equal) fills in.
        assert (ep['support_image'][0] != 0).any()
        assert (ep['support_image'][1] == 0).all()

    def test_gridded_targets(self, geo_pair: tuple[RasterDataset, np.ndarray]) -> None:
        dataset, _ = geo_pair
        grid = GriddedPatchSampler(dataset, size=32)
        episodes, _ = geo_episodes(dataset, 32, 2, fixed=True)
        sampler = GeoEpisodeSampler(dataset, size=32, targets=grid, fixed=True)
        indices = list(sampler)
        assert [i.target for i in indices] == [(x, y) for x, y in grid]
        assert episodes[indices[0]]['support_image'].shape == (2, 3, 32, 32)

    def test_dataloader_workers(
        self, geo_pair: tuple[RasterDataset, np.ndarray]
    ) -> None:
        dataset, _ = geo_pair
        episodes, _ = geo_episodes(dataset, 16, 2)
        sampler = GeoEpisodeSampler(dataset, size=16, length=8)
        loader = DataLoader(episodes, batch_size=4, sampler=sampler, num_workers=2)
        batches = list(loader)
        assert len(batches) == 2
        serial = [episodes[i] for i in sampler]
        assert batches[0]['support_image'].shape == (4, 2, 3, 16, 16)
        assert batches[1]['support_mask'].shape == (4, 2, 16, 16)
        assert torch.equal(batches[1]['support_mask'][3], serial[7]['support_mask'])

    def test_errors(self, geo_pair: tuple[RasterDataset, np.ndarray]) -> None:
        policy = GeoSupportPolicy(geo_pair[0], size=16, sequence_length=2)
        with pytest.raises(ValueError, match='max_nodata_fraction'):
            EpisodeDataset(ItemReader(geo_pair[0]), policy, max_nodata_fraction=2)


class TestNodata:
    def test_infer_nodata(self, geo_pair: tuple[RasterDataset, np.ndarray]) -> None:
        dataset, _ = geo_pair
        assert infer_nodata(dataset) == 0.0
        (images, masks) = dataset.datasets
        assert infer_nodata(masks) is None
        assert infer_nodata(masks & masks) is None
        images.nodata = 7
        assert infer_nodata(images) == 7.0

    def test_nodata_fraction_nan_and_mask(
        self, geo_pair: tuple[RasterDataset, np.ndarray]
    ) -> None:
        dataset, _ = geo_pair
        policy = GeoSupportPolicy(dataset, size=16, sequence_length=2)
        geo = EpisodeDataset(
            ItemReader(dataset), policy, nodata=float('nan'), mask_nodata=4
        )
        image = torch.ones(2, 2, 2)
        image[:, 0, 0] = float('nan')
        mask = torch.tensor([[0, 4], [1, 2]])
        assert geo.nodata_fraction({'image': image, 'mask': mask}) == 0.5
        assert geo.nodata_fraction({'image': image}) == 0.25

    def test_negative_epoch(self) -> None:
        ds = EpisodeDataset(ItemReader(IdDataset()), IndexSupportPolicy(12, 2))
        with pytest.raises(ValueError, match='epoch must be >= 0'):
            ds[EpisodeIndex(0, -1)]

    def test_partly_nan_pixel_is_nodata(
        self, geo_pair: tuple[RasterDataset, np.ndarray]
    ) -> None:
        dataset, _ = geo_pair
        policy = GeoSupportPolicy(dataset, size=16, sequence_length=2)
        geo = EpisodeDataset(ItemReader(dataset), policy, nodata=-1.0)
        image = torch.ones(2, 2, 2)
        image[0, 0, 0] = float('nan')
        image[1, 0, 1] = float('inf')
        image[:, 1, 1] = -1
        assert geo.nodata_fraction({'image': image}) == 0.75


def nodata_sample() -> tuple[dict[str, Tensor], Tensor]:
    """A 3 x 2 x 3 sample with nodata -9999, and its H x W nodata pixels."""
    image = torch.arange(1.0, 19.0).reshape(3, 2, 3)
    image[:, 0, 0] = -9999  # every band nodata
    image[0, 0, 1] = -9999  # one band only: the pixel has data
    image[1, 1, 0] = float('nan')
    image[2, 1, 1] = float('inf')
    bad = torch.tensor([[True, False, False], [True, True, False]])
    return {'image': image, 'mask': torch.zeros(2, 3, dtype=torch.long)}, bad


class TestGeoReader:
    def test_nodata_pixels_get_fill_and_ignore_index(self) -> None:
        sample, bad = nodata_sample()
        reader = GeoReader([sample], nodata=-9999, fill=[10.0, 20.0, 30.0])
        out = reader.read(0, 0)
        assert torch.equal(out['mask'] == 255, bad)
        fill = torch.tensor([10.0, 20.0, 30.0])[:, None].expand(3, int(bad.sum()))
        assert torch.equal(out['image'][:, bad], fill)
        assert torch.equal(out['image'][:, ~bad], sample['image'][:, ~bad])
        assert torch.isfinite(out['image']).all()

    def test_one_fill_for_all_bands(self) -> None:
        sample, bad = nodata_sample()
        out = GeoReader([sample], nodata=-9999, fill=[7.0]).read(0, 0)
        assert (out['image'][:, bad] == 7).all()
        assert torch.equal(out['image'][:, ~bad], sample['image'][:, ~bad])

    def test_without_nodata_value_non_finite_is_nodata(self) -> None:
        sample, _ = nodata_sample()
        out = GeoReader([sample], ignore_index=9, fill=torch.zeros(3)).read(0, 0)
        bad = torch.tensor([[False, False, False], [True, True, False]])
        assert torch.equal(out['mask'] == 9, bad)
        assert (out['image'][:, bad] == 0).all()
        assert torch.isfinite(out['image']).all()

    def test_without_fill_the_image_is_as_read(self) -> None:
        sample, bad = nodata_sample()
        out = GeoReader([sample], nodata=-9999).read(0, 0)
        assert torch.equal(out['mask'] == 255, bad)
        assert out['image'] is sample['image']

    def test_wrong_fill_length(self) -> None:
        sample, _ = nodata_sample()
        reader = GeoReader([sample], nodata=-9999, fill=[1.0, 2.0])
        with pytest.raises(ValueError, match='fill has 2 values but the image has 3'):
            reader.read(0, 0)
