from typing import Any

import matplotlib.pyplot as plt
import pytest
import torch
from torch import Tensor
from torchgeo.datasets import NonGeoDataset

from torchgeo_ssg2.datamodules.base import (
    EpisodicNonGeoDataModule,
    statistic_values,
)
from torchgeo_ssg2.datasets import GridPatchDataset, RandomPatchDataset
from torchgeo_ssg2.episodes import (
    EpisodeAugmentation,
    EpisodeDataset,
    EpisodeIndex,
    EpisodeSampler,
    ItemReader,
)
from torchgeo_ssg2.normalization import Normalization
from torchgeo_ssg2.plotting import plot_episode


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


class _Trainer:
    def __init__(self, stage: str) -> None:
        self.training = stage == 'train'
        self.validating = stage == 'val'
        self.sanity_checking = False
        self.testing = stage == 'test'
        self.predicting = stage == 'predict'


class TestEpisodicNonGeoDataModule:
    @pytest.fixture
    def dm(self) -> EpisodicNonGeoDataModule:
        return EpisodicNonGeoDataModule(
            Images, batch_size=2, sequence_length=3, patch_size=16, seed=1
        )

    def test_setup(self, dm: EpisodicNonGeoDataModule) -> None:
        dm.setup('fit')
        assert isinstance(dm.train_dataset, EpisodeDataset)
        assert isinstance(dm.train_dataset.reader, RandomPatchDataset)
        assert isinstance(dm.val_dataset, EpisodeDataset)
        assert isinstance(dm.val_dataset.reader, GridPatchDataset)
        assert not dm.train_dataset.policy.fixed
        assert dm.val_dataset.policy.fixed
        dm.setup('test')
        dm.setup('predict')
        assert isinstance(dm.predict_dataset, EpisodeDataset)
        assert isinstance(dm.test_dataset, EpisodeDataset)

    def test_supports_from_same_split(self, dm: EpisodicNonGeoDataModule) -> None:
        dm.setup('fit')
        episode = dm.val_dataset[0]
        assert episode['support_image'].shape == (3, 3, 16, 16)
        assert episode['support_mask'].shape == (3, 16, 16)
        # channel 0 encodes the image index; val images are 0 and 1 of 'val'
        assert set(episode['support_image'][:, 0].unique().tolist()) <= {0.0, 1.0}
        assert dm.val_dataset.policy.num_items == len(dm.val_dataset.reader)

    def test_train_epoch_varies(self, dm: EpisodicNonGeoDataModule) -> None:
        dm.setup('fit')
        ds = dm.train_dataset
        a = ds[EpisodeIndex(0, 0)]
        b = ds[EpisodeIndex(0, 1)]
        assert torch.equal(ds[EpisodeIndex(0, 0)]['support_image'], a['support_image'])
        assert not torch.equal(a['image'], b['image']) or not torch.equal(
            a['support_image'], b['support_image']
        )
        # the patch position follows the episode's epoch
        assert torch.equal(a['image'], ds.reader.read(0, 0)['image'])
        assert torch.equal(b['image'], ds.reader.read(0, 1)['image'])

    def test_val_fixed(self, dm: EpisodicNonGeoDataModule) -> None:
        dm.setup('fit')
        ds = dm.val_dataset
        a = ds[EpisodeIndex(1, 0)]
        b = ds[EpisodeIndex(1, 5)]
        assert torch.equal(a['support_image'], b['support_image'])

    def test_eval_sequence_length(self) -> None:
        dm = EpisodicNonGeoDataModule(
            Images, sequence_length=2, eval_sequence_length=5, patch_size=16
        )
        dm.setup('fit')
        assert dm.train_dataset[0]['support_image'].shape[0] == 2
        assert dm.val_dataset[0]['support_image'].shape[0] == 5

    def test_same_source(self) -> None:
        dm = EpisodicNonGeoDataModule(
            Images, sequence_length=2, patch_size=16, support_strategy='same_source'
        )
        dm.setup('fit')
        ds = dm.train_dataset
        groups = ds.reader.groups
        for i in range(0, len(ds), 7):
            assert {groups[j] for j in ds.policy.draw(i, 0)} == {groups[i]}

    def test_dataloaders(self, dm: EpisodicNonGeoDataModule) -> None:
        dm.setup('fit')
        train = dm.train_dataloader()
        assert isinstance(train.sampler, EpisodeSampler)
        batch = next(iter(train))
        assert batch['image'].shape == (2, 3, 16, 16)
        assert batch['support_image'].shape == (2, 3, 3, 16, 16)
        assert batch['support_mask'].shape == (2, 3, 16, 16)
        val = next(iter(dm.val_dataloader()))
        assert torch.equal(val['image'][0], dm.val_dataset[0]['image'])
        assert torch.equal(val['image'][1], dm.val_dataset[1]['image'])

    def test_no_patches(self) -> None:
        class Fixed(Images):
            shapes = {'train': [(32, 32)] * 3, 'val': [(32, 32)] * 2}

        dm = EpisodicNonGeoDataModule(Fixed, sequence_length=2)
        dm.setup('fit')
        assert isinstance(dm.train_dataset.reader, ItemReader)
        assert isinstance(dm.train_dataset.reader.dataset, Fixed)
        assert 'extra' in dm.train_dataset[0]

    def test_normalise(self, dm: EpisodicNonGeoDataModule) -> None:
        dm.setup('fit')
        batch = next(iter(dm.val_dataloader()))
        dm.trainer = _Trainer('val')  # type: ignore[assignment]
        out = dm.on_after_batch_transfer(dict(batch), 0)
        assert torch.allclose(out['image'], batch['image'] / 255)
        assert torch.allclose(out['support_image'], batch['support_image'] / 255)
        assert torch.equal(out['mask'], batch['mask'])
        dm.trainer = _Trainer('predict')  # type: ignore[assignment]
        no_mask = {'image': batch['image'], 'support_image': batch['support_image']}
        out = dm.on_after_batch_transfer(no_mask, 0)
        assert set(out) == {'image', 'support_image'}

    def test_no_trainer(self, dm: EpisodicNonGeoDataModule) -> None:
        batch = {'image': torch.ones(1, 3, 8, 8)}
        assert dm.on_after_batch_transfer(batch, 0) is batch

    def test_augmentation_aligned_and_independent(
        self, dm: EpisodicNonGeoDataModule
    ) -> None:
        b, t = 8, 3
        mask = torch.zeros(16, 16, dtype=torch.long)
        mask[:4, :9] = 1
        mask[10:, 12:] = 2
        image = (mask.float() * 255).expand(3, 16, 16)
        batch: dict[str, Any] = {
            'image': image.expand(b, 3, 16, 16).clone(),
            'mask': mask.expand(b, 16, 16).clone(),
            'support_image': image.expand(b, t, 3, 16, 16).clone(),
            'support_mask': mask.expand(b, t, 16, 16).clone(),
        }
        assert isinstance(dm.train_aug, EpisodeAugmentation)
        out = dm.train_aug(batch)
        assert torch.equal(out['image'][:, 0].round().long(), out['mask'])
        assert torch.equal(
            out['support_image'][:, :, 0].round().long(), out['support_mask']
        )
        same = (out['support_mask'] == out['mask'].unsqueeze(1)).flatten(2).all(-1)
        assert not same.all()
        # supports of one episode differ from each other somewhere too
        assert (out['support_mask'] != out['support_mask'][:, :1]).any()

    def test_plot_plain(self, dm: EpisodicNonGeoDataModule) -> None:
        assert dm.plot({'image': torch.zeros(3, 8, 8)}) is None
        dm.setup('fit')
        sample = dm.val_dataset.reader[0]
        sample['prediction'] = sample['mask']
        fig = dm.plot(sample)
        assert fig is not None
        assert len(fig.axes) == 3
        plt.close()

    def test_plot_episode(self, dm: EpisodicNonGeoDataModule) -> None:
        dm.setup('fit')
        sample = dm.val_dataset[0]
        sample['prediction'] = sample['mask']
        sample['uncertainty'] = torch.rand(16, 16)
        sample['intersection'] = torch.randint(0, 4, (3, 16, 16))
        sample['union'] = torch.randint(0, 3, (3, 16, 16))
        fig = dm.plot(sample, suptitle='episode')
        assert fig is not None
        assert len(fig.axes) == 4 * 4
        plt.close()

    def test_plot_episode_defaults(self) -> None:
        sample = {
            'image': torch.rand(1, 8, 8),
            'mask': torch.randint(0, 2, (8, 8)),
            'support_image': torch.rand(2, 1, 8, 8),
        }
        fig = plot_episode(sample, show_titles=False)
        assert len(fig.axes) == 3 * 2
        plt.close()


class TestNormalization:
    def test_scalar_statistics(self) -> None:
        dm = EpisodicNonGeoDataModule(Images, patch_size=16)
        assert dm.normalization == Normalization((0.0,), (255.0,))
        assert dm.hparams['normalization'] == dm.normalization.to_dict()
        assert dm.hparams['mean'] == [0.0]
        assert dm.hparams['std'] == [255.0]

    def test_bands_repeat_scalar(self) -> None:
        class Banded(EpisodicNonGeoDataModule):
            bands = ('a', 'b', 'c')
            input_dtype = 'uint16'

        dm = Banded(Images, patch_size=16)
        assert dm.normalization == Normalization(
            (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), ('a', 'b', 'c'), 'uint16'
        )
        assert dm.hparams['normalization']['bands'] == ['a', 'b', 'c']

    def test_statistic_values(self) -> None:
        assert statistic_values(torch.tensor([107.67, 0.1])) == [107.67, 0.1]
        assert statistic_values(3) == [3.0]
