import os

import matplotlib.pyplot as plt
import pytest
import torch

from torchgeo_ssg2.datamodules import DubaiAerialDataModule
from torchgeo_ssg2.datasets import DubaiAerial, GridPatchDataset, RandomPatchDataset
from torchgeo_ssg2.episodes import footprints_overlap

ROOT = os.path.join('tests', 'data', 'dubai', 'data')


class _Trainer:
    training = True
    validating = sanity_checking = testing = predicting = False


class TestDubaiAerialDataModule:
    @pytest.fixture
    def dm(self) -> DubaiAerialDataModule:
        return DubaiAerialDataModule(
            batch_size=2, patch_size=32, sequence_length=2, root=ROOT
        )

    def test_setup(self, dm: DubaiAerialDataModule) -> None:
        dm.setup('fit')
        train = dm.train_dataset.reader
        val = dm.val_dataset.reader
        assert isinstance(train, RandomPatchDataset)
        assert isinstance(val, GridPatchDataset)
        assert isinstance(train.dataset, DubaiAerial)
        assert train.dataset.split == 'train'
        assert val.dataset.split == 'val'
        assert train.dataset.cache
        # tile_1: 64x72 -> 2x3 windows, tile_2: 48x56 -> 2x2 windows
        assert len(val) == 6 + 4
        assert len(train) == 2 * 6 + 2 * 4
        dm.setup('test')
        assert dm.test_dataset.reader.dataset.split == 'test'

    def test_batch(self, dm: DubaiAerialDataModule) -> None:
        dm.setup('fit')
        batch = next(iter(dm.train_dataloader()))
        assert batch['image'].shape == (2, 3, 32, 32)
        assert batch['mask'].shape == (2, 32, 32)
        assert batch['support_image'].shape == (2, 2, 3, 32, 32)
        assert batch['support_mask'].shape == (2, 2, 32, 32)
        dm.trainer = _Trainer()  # type: ignore[assignment]
        out = dm.on_after_batch_transfer(batch, 0)
        assert out['image'].abs().max() < 5
        assert set(out['mask'].unique().tolist()) <= {0, 1, 2, 3, 4, 255}

    def test_kwargs(self) -> None:
        dm = DubaiAerialDataModule(patch_size=32, root=ROOT, tiles=[2], cache=False)
        dm.setup('fit')
        base = dm.val_dataset.reader.dataset
        assert not base.cache
        assert base.groups == [2]

    def test_same_source(self) -> None:
        dm = DubaiAerialDataModule(
            patch_size=32, sequence_length=2, root=ROOT, support_strategy='same_source'
        )
        dm.setup('fit')
        episodes = dm.train_dataset
        groups = episodes.reader.groups
        assert set(groups) == {1, 2}
        for i in range(len(episodes)):
            assert {groups[j] for j in episodes.policy.draw(i, 3)} == {groups[i]}

    @pytest.mark.parametrize('strategy', ['random', 'same_source'])
    def test_supports_share_no_pixel_with_the_target(self, strategy: str) -> None:
        dm = DubaiAerialDataModule(
            patch_size=32, sequence_length=3, root=ROOT, support_strategy=strategy
        )
        dm.setup('fit')
        for episodes, epochs in ((dm.train_dataset, (0, 1, 2)), (dm.val_dataset, (0,))):
            reader, policy = episodes.reader, episodes.policy
            for epoch in epochs:
                for i in range(len(episodes)):
                    target = reader.footprint(i, epoch)
                    for j in policy.draw(i, epoch):
                        assert not footprints_overlap(
                            reader.footprint(j, epoch), target
                        )

    def test_plot(self, dm: DubaiAerialDataModule) -> None:
        dm.setup('validate')
        sample = dm.val_dataset[0]
        sample['prediction'] = sample['mask'].clone()
        fig = dm.plot(sample)
        assert fig is not None
        plt.close()
        plain = {k: sample[k] for k in ('image', 'mask', 'prediction')}
        fig = dm.plot(plain)
        assert fig is not None
        assert len(fig.axes) == 3
        plt.close()

    def test_mean_std(self) -> None:
        assert torch.allclose(
            DubaiAerialDataModule.mean, torch.tensor(DubaiAerial.mean)
        )
