from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
import torch
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from torchgeo.main import main

from torchgeo_ssg2.datamodules import RasterEpisodeDataModule
from torchgeo_ssg2.datasets import RasterInputError
from torchgeo_ssg2.episodes import EpisodeAugmentation
from torchgeo_ssg2.inference import predict_raster
from torchgeo_ssg2.normalization import Normalization
from torchgeo_ssg2.trainers import SSG2Task

from .raster_fakes import (
    COLOURS,
    UTM33,
    X0,
    Y0,
    class_mask,
    colour_set,
    image_for,
    two_crs_set,
    write,
)


def make(images: Any, masks: Any, **kwargs: Any) -> RasterEpisodeDataModule:
    options: dict[str, Any] = {
        'num_classes': 3,
        'patch_size': 32,
        'batch_size': 2,
        'sequence_length': 2,
        'length': 4,
        'block_size': 64,
        'statistics_windows': 16,
    }
    options.update(kwargs)
    return RasterEpisodeDataModule(images, masks, **options)


@pytest.fixture
def two_crs(tmp_path: Path) -> dict[str, Path]:
    return two_crs_set(tmp_path / 'set')


def box(window: tuple[slice, slice]) -> shapely.Polygon:
    x, y = window
    return shapely.box(x.start, y.start, x.stop, y.stop)


class TestTwoCRS:
    def test_episodes(self, two_crs: dict[str, Path]) -> None:
        dm = make(str(two_crs['images']), str(two_crs['masks']), bands='RGBN')
        assert dm.images.crs == dm.masks.crs
        assert len(dm.images.index) == len(dm.masks.index) == 2
        dm.setup('fit')
        batch = next(iter(dm.train_dataloader()))
        assert batch['image'].shape == (2, 4, 32, 32)
        assert batch['mask'].shape == (2, 32, 32)
        assert batch['support_image'].shape == (2, 2, 4, 32, 32)
        assert batch['support_mask'].shape == (2, 2, 32, 32)
        assert batch['bounds'].shape == (2, 9)
        assert set(batch['mask'].unique().tolist()) <= {0, 1, 2, 255}
        val = next(iter(dm.val_dataloader()))
        assert val['support_image'].shape == (2, 2, 4, 32, 32)
        assert isinstance(dm.train_aug, EpisodeAugmentation)
        assert isinstance(dm.aug, EpisodeAugmentation)

    def test_blocks_never_straddle(self, two_crs: dict[str, Path]) -> None:
        dm = make(str(two_crs['images']), str(two_crs['masks']), val_fraction=0.3)
        train = dm.split_dataset('train').index.geometry.union_all()
        val = dm.split_dataset('val').index.geometry.union_all()
        assert shapely.intersection(train, val).area == pytest.approx(0, abs=1e-6)
        dm.setup('fit')
        for index in dm.val_sampler:  # type: ignore[union-attr]
            assert box(index.target).covered_by(val.buffer(1e-6))
            for window in dm.val_dataset.policy.draw(index.target, index.epoch):
                assert box(window).covered_by(val.buffer(1e-6))
        for index in dm.train_sampler:  # type: ignore[union-attr]
            assert box(index.target).covered_by(train.buffer(1e-6))
        # Fixed validation supports, new training draws every epoch.
        first = list(dm.val_sampler)  # type: ignore[arg-type]
        dm.val_sampler.set_epoch(2)  # type: ignore[union-attr]
        assert list(dm.val_sampler) == first  # type: ignore[arg-type]
        targets = [i.target for i in dm.train_sampler]  # type: ignore[union-attr]
        dm.train_sampler.set_epoch(1)  # type: ignore[union-attr]
        assert [i.target for i in dm.train_sampler] != targets  # type: ignore[union-attr]

    def test_split_by_file(self, two_crs: dict[str, Path]) -> None:
        dm = make(
            str(two_crs['images']),
            str(two_crs['masks']),
            split_by='file',
            val_fraction=0.5,
        )
        files = {
            split: {Path(p).name for p in dm.split_files(split)}
            for split in ('train', 'val')
        }
        assert len(files['train']) == len(files['val']) == 1
        assert len(dm.split_dataset('train').index) == 1
        assert len(dm.split_dataset('val').index) == 1
        assert files['train'] | files['val'] == {'a.tif', 'b.tif'}

    def test_split_by_file_refuses_overlapping_tiles(self, tmp_path: Path) -> None:
        images, masks = tmp_path / 'images', tmp_path / 'masks'
        images.mkdir()
        masks.mkdir()
        mask = class_mask(128, 128)
        for name, left in (('a.tif', X0), ('b.tif', X0 + 96.0)):  # 32 m shared
            write(images / name, image_for(mask, 3, 'uint8', 0), UTM33, left, Y0)
            write(masks / name, mask, UTM33, left, Y0)
        with pytest.raises(RasterInputError, match=r'same ground .*\.tif'):
            make(str(images), str(masks), split_by='file', val_fraction=0.5)
        # split by block, the same tiles share no ground between splits
        make(str(images), str(masks), val_fraction=0.5, block_size=64)

    def test_explicit_val(self, two_crs: dict[str, Path]) -> None:
        images, masks = two_crs['images'], two_crs['masks']
        dm = make(
            [str(images / 'a.tif')],
            str(masks / 'a.tif'),
            val_images=str(images / 'b.tif'),
            val_masks=str(masks / 'b.tif'),
        )
        assert len(dm.split_dataset('train').index) == 1
        assert dm.split_dataset('test') is dm.split_dataset('val')

    def test_nodata_border(self, two_crs: dict[str, Path]) -> None:
        dm = make(str(two_crs['images']), str(two_crs['masks']))
        assert dm.nodata == 0.0
        dm.setup('fit')
        reader = dm.train_dataset.reader  # type: ignore[union-attr]
        # The left border of a.tif is nodata: its mask pixels are ignored.
        window = (slice(X0, X0 + 32), slice(Y0 - 32, Y0))
        sample = reader.read(window, 0)
        # ... and their bands read as the band means.
        mean = torch.tensor(dm.normalization.mean)[:, None, None]
        nodata = (sample['image'] == mean).all(dim=0)
        assert nodata[:, :16].all() and not nodata[:, 16:].any()
        assert (sample['mask'][nodata] == 255).all()
        assert (sample['mask'][~nodata] != 255).all()

    def test_statistics(self, two_crs: dict[str, Path]) -> None:
        dm = make(str(two_crs['images']), str(two_crs['masks']), statistics_windows=32)
        norm = dm.normalization
        assert norm.dtype == 'uint8' and norm.num_bands == 4
        # Valid pixels average about 100 (nodata 0 is left out), std about 25.
        assert all(abs(m - 100) < 8 for m in norm.mean)
        assert all(15 < s < 40 for s in norm.std)
        assert dm.hparams['normalization'] == norm.to_dict()
        again = make(
            str(two_crs['images']), str(two_crs['masks']), statistics_windows=32
        )
        assert again.normalization == norm  # seeded
        given = make(
            str(two_crs['images']),
            str(two_crs['masks']),
            mean=[1, 2, 3, 4],
            std=[5, 6, 7, 8],
        )
        assert given.normalization.mean == (1.0, 2.0, 3.0, 4.0)


class TestColourMask:
    def test_colour_mapping_uint16(self, tmp_path: Path) -> None:
        paths = colour_set(tmp_path / 'colour')
        mapping = {','.join(map(str, c)): k for c, k in COLOURS.items()}
        dm = make(str(paths['images']), str(paths['masks']), mask_mapping=mapping)
        assert dm.normalization.dtype == 'uint16'
        assert dm.normalization.num_bands == 1
        assert 7000 < dm.normalization.mean[0] < 13000
        dm.setup('fit')
        sample = dm.train_dataset[next(iter(dm.train_sampler))]  # type: ignore[index]
        assert sample['mask'].shape == (32, 32)
        assert sample['support_mask'].shape == (2, 32, 32)
        # The mapped mask equals the class mask the colours were written from.
        window = next(iter(dm.train_sampler)).target  # type: ignore[union-attr]
        x, y = window
        col, row = int(x.start - X0), int(Y0 - y.stop)
        expected = class_mask(128, 128)[0, row : row + 32, col : col + 32]
        assert np.array_equal(sample['mask'].numpy(), expected)

    def test_plain_mapping(self, tmp_path: Path) -> None:
        root = tmp_path / 'plain'
        root.mkdir()
        mask = class_mask(128, 128, 2) * 255
        write(root / 'mask.tif', mask, UTM33, X0, Y0)
        write(root / 'image.tif', image_for(mask // 255, 3, 'uint8', 0), UTM33, X0, Y0)
        dm = make(
            str(root / 'image.tif'),
            str(root / 'mask.tif'),
            num_classes=2,
            mask_mapping={0: 0, 255: 1},
        )
        dm.setup('fit')
        batch = next(iter(dm.train_dataloader()))
        assert set(batch['mask'].unique().tolist()) <= {0, 1}


class TestErrors:
    def test_no_overlapping_mask(self, tmp_path: Path) -> None:
        images, masks = tmp_path / 'images', tmp_path / 'masks'
        images.mkdir()
        masks.mkdir()
        mask = class_mask(64, 64)
        write(images / 'a.tif', image_for(mask, 3, 'uint8', 0), UTM33, X0, Y0)
        write(images / 'far.tif', image_for(mask, 3, 'uint8', 0), UTM33, X0 + 1e4, Y0)
        write(masks / 'a.tif', mask, UTM33, X0, Y0)
        with pytest.raises(RasterInputError, match=r'far\.tif has no overlapping mask'):
            make(str(images), str(masks))

    def test_bands_differ(self, tmp_path: Path) -> None:
        images, masks = tmp_path / 'images', tmp_path / 'masks'
        images.mkdir()
        masks.mkdir()
        mask = class_mask(64, 64)
        write(images / 'a.tif', image_for(mask, 3, 'uint8', 0), UTM33, X0, Y0)
        write(images / 'b.tif', image_for(mask, 4, 'uint8', 0), UTM33, X0 + 64, Y0)
        write(masks / 'a.tif', mask, UTM33, X0, Y0)
        write(masks / 'b.tif', mask, UTM33, X0 + 64, Y0)
        with pytest.raises(RasterInputError, match=r'b\.tif has 4 band\(s\)'):
            make(str(images), str(masks))
        with pytest.raises(RasterInputError, match=r'a\.tif has 3 band\(s\) but 2'):
            make(str(images / 'a.tif'), str(masks / 'a.tif'), bands=['R', 'G'])

    def test_mask_values(self, tmp_path: Path) -> None:
        mask = class_mask(64, 64, 5)
        write(tmp_path / 'mask.tif', mask, UTM33, X0, Y0)
        write(tmp_path / 'image.tif', image_for(mask, 3, 'uint8', 0), UTM33, X0, Y0)
        image, masks = str(tmp_path / 'image.tif'), str(tmp_path / 'mask.tif')
        with pytest.raises(
            RasterInputError, match=r'mask\.tif holds values outside the classes.*3, 4'
        ):
            make(image, masks, num_classes=3)
        with pytest.raises(RasterInputError, match=r'outside mask_mapping: 4'):
            make(image, masks, mask_mapping={0: 0, 1: 1, 2: 2, 3: 255})
        # A colour mask needs three bands.
        with pytest.raises(RasterInputError, match='colour masks need 3'):
            make(image, masks, mask_mapping={'0,0,0': 0})

    def test_smaller_than_a_patch(self, tmp_path: Path) -> None:
        mask = class_mask(24, 40)
        write(tmp_path / 'mask.tif', mask, UTM33, X0, Y0)
        write(tmp_path / 'image.tif', image_for(mask, 3, 'uint8', 0), UTM33, X0, Y0)
        with pytest.raises(
            RasterInputError, match=r'smaller than one patch of 32 px: .*image\.tif'
        ):
            make(str(tmp_path / 'image.tif'), str(tmp_path / 'mask.tif'))

    @pytest.mark.parametrize(
        ('side', 'block_size', 'split'), [(128, 32, 'val'), (48, 64, 'train')]
    )
    def test_no_room_for_supports(
        self, tmp_path: Path, side: int, block_size: int, split: str
    ) -> None:
        # Blocks of one patch leave a validation target no support beside it; a
        # 48-px scene leaves a 32-px training target none.
        mask = class_mask(side, side)
        write(tmp_path / 'mask.tif', mask, UTM33, X0, Y0)
        write(tmp_path / 'image.tif', image_for(mask, 3, 'uint8', 0), UTM33, X0, Y0)
        options: dict[str, Any] = {'block_size': block_size, 'val_fraction': 0.25}
        if split == 'train':
            val = class_mask(128, 128)
            write(tmp_path / 'val_mask.tif', val, UTM33, X0, Y0)
            image = image_for(val, 3, 'uint8', 0)
            write(tmp_path / 'val_image.tif', image, UTM33, X0, Y0)
            options['val_images'] = str(tmp_path / 'val_image.tif')
            options['val_masks'] = str(tmp_path / 'val_mask.tif')
        dm = make(str(tmp_path / 'image.tif'), str(tmp_path / 'mask.tif'), **options)
        with pytest.raises(ValueError, match=f'the {split} split has no room'):
            dm.setup('fit')

    def test_missing_and_unreadable(self, tmp_path: Path) -> None:
        with pytest.raises(RasterInputError, match='image raster not found'):
            make(str(tmp_path / 'nothing'), str(tmp_path))
        (tmp_path / 'empty').mkdir()
        with pytest.raises(RasterInputError, match='no image rasters found'):
            make(str(tmp_path / 'empty'), str(tmp_path))
        (tmp_path / 'broken.tif').write_bytes(b'not a tiff')
        with pytest.raises(RasterInputError, match=r'broken\.tif cannot be read'):
            make(str(tmp_path / 'broken.tif'), str(tmp_path / 'broken.tif'))

    def test_statistics_per_band(
        self, two_crs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        images, masks = str(two_crs['images']), str(two_crs['masks'])

        def no_scan(*args: Any) -> None:
            raise AssertionError('the masks were scanned')

        monkeypatch.setattr(
            'torchgeo_ssg2.datamodules.raster.check_mask_values', no_scan
        )
        with pytest.raises(
            RasterInputError, match=r'a\.tif has 4 band\(s\) but mean and std have 2'
        ):
            make(images, masks, mean=[100, 100], std=[25, 25])
        with pytest.raises(ValueError, match='4 means but 3 stds'):
            make(images, masks, mean=[100] * 4, std=[25] * 3)
        with pytest.raises(ValueError, match='4 bands'):
            make(images, masks, bands='RGBN', mean=[100] * 2, std=[25] * 2)

    def test_one_statistic_for_all_bands(self, two_crs: dict[str, Path]) -> None:
        images, masks = str(two_crs['images']), str(two_crs['masks'])
        dm = make(images, masks, mean=[100], std=[25])
        assert dm.normalization.mean == (100.0,)
        named = make(images, masks, bands='RGBN', mean=[100], std=[25])
        assert named.normalization.mean == (100.0,) * 4
        assert named.normalization.std == (25.0,) * 4
        scalar = make(images, masks, bands='RGBN', mean=100.0, std=25)
        assert scalar.normalization == named.normalization

    def test_arguments(self, two_crs: dict[str, Path]) -> None:
        images, masks = str(two_crs['images']), str(two_crs['masks'])
        with pytest.raises(ValueError, match='val_fraction'):
            make(images, masks, val_fraction=1.5)
        with pytest.raises(ValueError, match='no validation split'):
            make(images, masks, val_fraction=0)
        with pytest.raises(ValueError, match='both mean and std'):
            make(images, masks, mean=[1, 2, 3, 4])
        with pytest.raises(ValueError, match='val_images and val_masks'):
            make(images, masks, val_images=images)
        with pytest.raises(RasterInputError, match='cannot be split'):
            make(images, masks, split_by='file', val_fraction=0.5, test_fraction=0.4)


def test_geotiff_values_are_raw(two_crs: dict[str, Path]) -> None:
    """Batches hold raw values; the datamodule's aug normalises them."""
    dm = make(
        str(two_crs['images']), str(two_crs['masks']), mean=[100] * 4, std=[25] * 4
    )
    dm.setup('validate')
    batch = next(iter(dm.val_dataloader()))
    with rasterio.open(two_crs['images'] / 'a.tif') as src:
        assert batch['image'].max() <= np.iinfo(src.dtypes[0]).max
    out = dm.aug(dict(batch))
    assert torch.allclose(out['image'], (batch['image'] - 100) / 25)


def test_fit_from_template_then_predict(
    two_crs: dict[str, Path], tmp_path: Path
) -> None:
    """The template, edited in paths and classes only, trains; the raster predicts."""
    config = yaml.safe_load(Path('experiments', 'ssg2_rasters.yaml').read_text())
    data = config['data']['init_args']
    data['images'] = str(two_crs['images'])
    data['masks'] = str(two_crs['masks'])
    data['num_classes'] = config['model']['init_args']['num_classes'] = 3
    config['model']['init_args']['in_channels'] = 4
    config['model']['init_args']['labels'] = ['a', 'b', 'c']
    path = tmp_path / 'rasters.yaml'
    path.write_text(yaml.safe_dump(config))
    root = tmp_path / 'run'
    main(
        [
            'fit',
            '--config',
            str(path),
            '--model.init_args.preset',
            'test',
            '--data.init_args.patch_size',
            '32',
            '--data.init_args.batch_size',
            '2',
            '--data.init_args.length',
            '4',
            '--data.init_args.num_workers',
            '0',
            '--data.init_args.block_size',
            '64',
            '--data.init_args.statistics_windows',
            '8',
            '--trainer.accelerator',
            'cpu',
            '--trainer.max_steps',
            '2',
            '--trainer.limit_val_batches',
            '1',
            '--trainer.num_sanity_val_steps',
            '0',
            '--trainer.default_root_dir',
            str(root),
        ]
    )
    (ckpt,) = sorted(root.rglob('*.ckpt'))
    checkpoint = torch.load(ckpt, map_location='cpu', weights_only=True)
    record = Normalization.from_checkpoint(checkpoint)
    assert record is not None and record.num_bands == 4 and record.dtype == 'uint8'
    source = two_crs['images'] / 'b.tif'
    out = tmp_path / 'b_classes.tif'
    predict_raster(str(ckpt), source, out, window=32, overlap=8, progress=False)
    with rasterio.open(source) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs
        assert dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height)
        classes = dst.read(1)
    assert set(np.unique(classes).tolist()) <= {0, 1, 2, 255}


def test_mask_nodata_is_ignored(tmp_path: Path) -> None:
    mask = class_mask(96, 96)
    mask[:, :, :8] = 254
    write(tmp_path / 'mask.tif', mask, UTM33, X0, Y0, nodata=254)
    write(tmp_path / 'image.tif', image_for(mask, 3, 'uint8', 0), UTM33, X0, Y0)
    dm = make(str(tmp_path / 'image.tif'), str(tmp_path / 'mask.tif'), block_size=32)
    dm.setup('fit')
    window = (slice(X0, X0 + 32), slice(Y0 - 32, Y0))
    sample = dm.train_dataset.reader.read(window, 0)  # type: ignore[union-attr]
    assert (sample['mask'][:, :8] == 255).all()
    assert set(sample['mask'][:, 8:].unique().tolist()) <= {0, 1, 2}


def test_float_nan_is_nodata(tmp_path: Path) -> None:
    mask = class_mask(96, 96)
    image = image_for(mask, 2, 'uint8', 0).astype('float32')
    image[:, :, :8] = np.nan
    write(tmp_path / 'mask.tif', mask, UTM33, X0, Y0)
    write(tmp_path / 'image.tif', image, UTM33, X0, Y0)
    dm = make(str(tmp_path / 'image.tif'), str(tmp_path / 'mask.tif'), block_size=32)
    assert np.isnan(dm.nodata)
    assert all(np.isfinite(dm.normalization.mean))
    dm.setup('fit')
    window = (slice(X0, X0 + 32), slice(Y0 - 32, Y0))
    sample = dm.train_dataset.reader.read(window, 0)  # type: ignore[union-attr]
    assert (sample['mask'][:, :8] == 255).all()
    assert (sample['mask'][:, 8:] != 255).all()


NODATA_BLOCK = 40  # rows and columns of the top-left nodata block


def nodata_raster(root: Path, kind: str) -> tuple[np.ndarray, dict[str, Any]]:
    """A 3-band 128 x 128 image with a nodata block, a class mask, and options.

    ``'nan'``: float32 without a nodata value, NaN in the block and in one band
    of one more pixel. ``'uint8'``: uint8 with nodata 0 in the block, and one
    pixel with one band 0 (which has data).

    Returns:
        The H x W nodata pixels, and the datamodule's image and mask arguments.
    """
    root.mkdir()
    mask = class_mask(128, 128)
    image = image_for(mask, 3, 'uint8', 0)
    nodata = np.zeros((128, 128), dtype=bool)
    nodata[:NODATA_BLOCK, :NODATA_BLOCK] = True
    if kind == 'nan':
        image = image.astype('float32') + 0.5
        image[:, nodata] = np.nan
        image[1, 70, 70] = np.nan
        nodata[70, 70] = True
        write(root / 'image.tif', image, UTM33, X0, Y0)
    else:
        image[:, nodata] = 0
        image[1, 70, 70] = 0
        write(root / 'image.tif', image, UTM33, X0, Y0, nodata=0)
    write(root / 'mask.tif', mask, UTM33, X0, Y0)
    options = {'images': str(root / 'image.tif'), 'masks': str(root / 'mask.tif')}
    return nodata, options


def window_nodata(nodata: np.ndarray, bounds: torch.Tensor) -> torch.Tensor:
    """The nodata pixels of the window of a sample's ``bounds``."""
    col = round(float(bounds[0]) - X0)
    row = round(Y0 - float(bounds[4]))
    return torch.from_numpy(nodata[row : row + 32, col : col + 32].copy())


@pytest.mark.parametrize('kind', ['nan', 'uint8'])
def test_nodata_is_band_mean(tmp_path: Path, kind: str) -> None:
    """Nodata pixels of targets and supports are 0 once normalised, and ignored."""
    nodata, options = nodata_raster(tmp_path / 'set', kind)
    dm = make(
        options['images'],
        options['masks'],
        block_size=64,
        val_fraction=0.25,
        test_fraction=0.25,
        length=16,
    )
    dm.setup('fit')
    dm.setup('test')
    mean = torch.tensor(dm.normalization.mean)[None, :, None, None]
    targets = supports = 0
    loaders = {
        'train': dm.train_dataloader(),
        'val': dm.val_dataloader(),
        'test': dm.test_dataloader(),
    }
    for split, loader in loaders.items():
        for batch in loader:
            expected = torch.stack([window_nodata(nodata, b) for b in batch['bounds']])
            assert torch.equal(batch['mask'] == 255, expected)
            ignored = batch['support_mask'] == 255
            raw = batch['support_image'].flatten(0, 1)
            filled = (raw == mean).all(dim=1).unflatten(0, ignored.shape[:2])
            assert torch.equal(filled, ignored)
            out = dm.aug(dict(batch))
            for key in ('image', 'support_image'):
                assert torch.isfinite(out[key]).all(), (split, key)
            assert (out['image'].permute(1, 0, 2, 3)[:, expected] == 0).all()
            assert (out['support_image'].permute(2, 0, 1, 3, 4)[:, ignored] == 0).all()
            assert (out['mask'] == batch['mask']).all()
            assert (out['support_mask'] == batch['support_mask']).all()
            if split == 'train':
                assert dm.train_aug is not None
                aug = dm.train_aug(dict(batch))
                for key in ('image', 'support_image'):
                    assert torch.isfinite(aug[key]).all(), (split, key)
                assert (aug['mask'] == 255).sum() == expected.sum()
            targets += int(expected.sum())
            supports += int(ignored.sum())
    assert targets > 0 and supports > 0  # nodata did reach targets and supports


class LossRecorder(Callback):
    """Keeps the loss of every training step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.losses.append(float(outputs['loss']))


def test_fit_on_nan_raster_has_finite_loss(tmp_path: Path) -> None:
    """A short fit on a raster with NaN keeps a finite loss and finite weights."""
    _, options = nodata_raster(tmp_path / 'set', 'nan')
    dm = make(options['images'], options['masks'], block_size=64, length=8)
    recorder = LossRecorder()
    trainer = Trainer(
        accelerator='cpu',
        max_steps=3,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
        default_root_dir=tmp_path,
    )
    model = SSG2Task(
        preset='test', in_channels=3, num_classes=3, sequence_length=2, ignore_index=255
    )
    trainer.fit(model, datamodule=dm)
    assert len(recorder.losses) == 3
    assert all(np.isfinite(recorder.losses)), recorder.losses
    # A NaN input reaches every weight through BatchNorm and the optimizer.
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), name


def test_statistics_leave_out_inf_as_nan(tmp_path: Path) -> None:
    """Infinite pixels are nodata for the statistics too, as NaN ones."""
    stats = []
    for fill in (np.nan, np.inf):
        root = tmp_path / str(fill)
        root.mkdir()
        mask = class_mask(128, 128)
        image = image_for(mask, 3, 'uint8', 0).astype('float32') + 0.5
        image[:, :NODATA_BLOCK, :NODATA_BLOCK] = fill
        image[2, 70, 70] = -fill
        write(root / 'image.tif', image, UTM33, X0, Y0)
        write(root / 'mask.tif', mask, UTM33, X0, Y0)
        dm = make(str(root / 'image.tif'), str(root / 'mask.tif'), block_size=64)
        stats.append(dm.normalization)
    assert all(np.isfinite(stats[1].mean)) and all(np.isfinite(stats[1].std))
    assert stats[0] == stats[1]
