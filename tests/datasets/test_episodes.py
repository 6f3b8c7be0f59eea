from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from torchgeo_ssg2.datasets import (
    EpisodeDataset,
    EpisodeEpochCallback,
    set_episode_epoch,
)
from torchgeo_ssg2.samplers import EpisodeIndex, EpisodeSampler, SupportIndexSampler


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
        sampler = SupportIndexSampler(12, 3, seed=1)
        ds = EpisodeDataset(IdDataset(), sampler)
        assert len(ds) == 12
        ep = ds[4]
        assert ep['image'].shape == (2, 4, 4)
        assert ep['mask'].shape == (4, 4)
        assert ep['support_image'].shape == (3, 2, 4, 4)
        assert ep['support_mask'].shape == (3, 4, 4)
        assert ep['support_mask'].dtype == torch.long
        assert ep['id'] == 4
        assert ep['support_mask'][:, 0, 0].tolist() == sampler.supports(4)
        assert ep['support_image'][:, 0, 0, 0].tolist() == sampler.supports(4)

    def test_epoch(self) -> None:
        sampler = SupportIndexSampler(12, 3, seed=1)
        ds = EpisodeDataset(IdDataset(), sampler)
        ds.set_epoch(5)
        assert ds.epoch == 5
        assert ds[4]['support_mask'][:, 0, 0].tolist() == sampler.supports(4, 5)
        # A (target, epoch) index overrides the dataset's epoch.
        got = ds[EpisodeIndex(4, 2)]['support_mask'][:, 0, 0].tolist()
        assert got == sampler.supports(4, 2)

    def test_mismatch(self) -> None:
        with pytest.raises(ValueError, match='covers 5 items'):
            EpisodeDataset(IdDataset(12), SupportIndexSampler(5, 2))

    def test_image_only(self) -> None:
        class NoMask(IdDataset):
            def __getitem__(self, i: int) -> dict[str, Any]:
                return {'image': torch.full((1, 2, 2), float(i))}

        ep = EpisodeDataset(NoMask(4), SupportIndexSampler(4, 2))[0]
        assert ep['support_image'].shape == (2, 1, 2, 2)
        assert 'support_mask' not in ep

    @pytest.mark.parametrize('use_sampler', [True, False])
    def test_epoch_reaches_persistent_workers(self, use_sampler: bool) -> None:
        sampler = SupportIndexSampler(12, 3, seed=4)
        ds = EpisodeDataset(IdDataset(), sampler)
        index_sampler = (
            EpisodeSampler(ds, shuffle=True, seed=0) if use_sampler else None
        )
        loader = DataLoader(
            ds,
            batch_size=4,
            sampler=index_sampler,
            num_workers=2,
            persistent_workers=True,
        )
        for epoch in range(3):
            if use_sampler:
                assert index_sampler is not None
                index_sampler.set_epoch(epoch)
            else:
                set_episode_epoch(loader, epoch)
            seen = 0
            for batch in loader:
                for target, supports in zip(
                    batch['id'].tolist(), support_ids(batch), strict=True
                ):
                    assert supports == sampler.supports(target, epoch)
                    seen += 1
            assert seen == 12
        # Supports do change between epochs.
        assert any(sampler.supports(i, 0) != sampler.supports(i, 2) for i in range(12))


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


@pytest.mark.parametrize('use_sampler', [True, False])
def test_lightning_epochs(use_sampler: bool) -> None:
    sampler = SupportIndexSampler(8, 2, seed=2)
    ds = EpisodeDataset(IdDataset(8), sampler)
    loader = DataLoader(
        ds,
        batch_size=4,
        sampler=EpisodeSampler(ds, seed=0) if use_sampler else None,
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
        callbacks=[] if use_sampler else [EpisodeEpochCallback()],
    )
    trainer.fit(model, loader)
    assert len(model.seen) == 24
    for epoch, target, supports in model.seen:
        assert supports == sampler.supports(target, epoch)
    assert {e for e, _, _ in model.seen} == {0, 1, 2}
