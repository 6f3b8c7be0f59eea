from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch import Tensor
from torch.utils.data import DataLoader

from torchgeo_ssg2.normalization import Normalization
from torchgeo_ssg2.trainers import PTAViTTask, SSG2Task
from torchgeo_ssg2.trainers.base import MultitaskSegmentationTask

NC = 3
NORM = Normalization((10.0, 20.0, 30.0), (2.0, 4.0, 8.0), ('R', 'G', 'B'), 'uint8')


def _task(cls: type[MultitaskSegmentationTask] = PTAViTTask) -> Any:
    kwargs: dict[str, Any] = {'preset': 'test', 'num_classes': NC, 'ignore_index': 255}
    if cls is SSG2Task:
        kwargs['sequence_length'] = 2
    return cls(**kwargs)


def _batches(n: int = 2, b: int = 2, size: int = 32) -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {
            'image': torch.randn(3, size, size, generator=g),
            'mask': torch.randint(0, NC, (size, size), generator=g),
            'support_image': torch.randn(2, 3, size, size, generator=g),
            'support_mask': torch.randint(0, NC, (2, size, size), generator=g),
        }
        for _ in range(n * b)
    ]


def _trainer(tmp_path: Path) -> Trainer:
    return Trainer(
        accelerator='cpu',
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )


class _DataModule(LightningDataModule):
    def __init__(self, normalization: Normalization | None) -> None:
        super().__init__()
        if normalization is not None:
            self.normalization = normalization

    def train_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        return DataLoader(_batches(), batch_size=2)  # type: ignore[arg-type]


class TestNormalizationBuffers:
    def test_unknown(self) -> None:
        task = _task()
        assert task.normalization is None
        assert task.normalization_mean.shape == (0,)
        assert {'normalization_mean', 'normalization_std'} <= set(task.state_dict())
        assert 'normalization' not in task.hparams

    def test_set(self) -> None:
        task = _task()
        task.set_normalization(NORM)
        assert task.normalization == NORM
        assert task.normalization_mean.dtype == torch.float32
        assert task.normalization_mean.tolist() == [10.0, 20.0, 30.0]
        assert task.normalization_std.tolist() == [2.0, 4.0, 8.0]
        assert 'normalization' not in task.hparams

    def test_set_invalid(self) -> None:
        task = _task()
        with pytest.raises(ValueError, match='2 bands but the task has in_channels=3'):
            task.set_normalization(Normalization((1.0, 2.0), (1.0, 1.0)))
        with pytest.raises(TypeError, match='Normalization'):
            task.set_normalization({'mean': [1.0], 'std': [1.0]})
        assert task.normalization is None

    @pytest.mark.parametrize('cls', [PTAViTTask, SSG2Task])
    def test_state_dict_round_trip(self, cls: type[MultitaskSegmentationTask]) -> None:
        task = _task(cls)
        task.set_normalization(NORM)
        other = _task(cls)
        other.load_state_dict(task.state_dict())
        assert other.normalization is not None
        assert other.normalization.mean == NORM.mean
        assert other.normalization.std == NORM.std
        assert torch.equal(other.normalization_std, task.normalization_std)

    @pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
    def test_statistics_stay_float32_in_a_half_precision_module(
        self, dtype: torch.dtype
    ) -> None:
        """Lightning's bf16-true converts the whole module, not the statistics."""
        norm = Normalization(
            (107.67, 107.74, 108.24), (79.44, 78.16, 80.95), ('R', 'G', 'B'), 'uint8'
        )
        task = _task()
        task.set_normalization(norm)
        task.to(dtype=dtype)
        assert next(task.model.parameters()).dtype == dtype
        assert task.normalization_mean.dtype == torch.float32
        assert task.normalization_mean.tolist() == list(
            torch.tensor(norm.mean, dtype=torch.float32).tolist()
        )
        # a checkpoint of the converted task keeps the statistics exactly
        other = _task()
        other.on_load_checkpoint({'normalization': norm.to_dict()})
        other.load_state_dict(task.state_dict())
        assert other.normalization == norm

    def test_state_dict_without_buffers(self) -> None:
        task = _task()
        weights = {k: v for k, v in task.state_dict().items() if 'normal' not in k}
        other = _task()
        other.set_normalization(NORM)
        result = other.load_state_dict(weights)
        assert not result.missing_keys
        assert other.normalization == NORM

    def test_state_dict_unknown_statistics(self) -> None:
        other = _task()
        other.load_state_dict(_task().state_dict())
        assert other.normalization is None

    def test_checkpoint_hooks(self) -> None:
        task = _task()
        task.set_normalization(NORM)
        checkpoint: dict[str, Any] = {'hyper_parameters': dict(task.hparams)}
        task.on_save_checkpoint(checkpoint)
        assert checkpoint['normalization'] == NORM.to_dict()
        other = _task()
        other.on_load_checkpoint(checkpoint)
        assert other.normalization == NORM

    def test_checkpoint_hooks_datamodule_record(self) -> None:
        task = _task()
        task.on_load_checkpoint(
            {'datamodule_hyper_parameters': {'normalization': NORM.to_dict()}}
        )
        assert task.normalization == NORM

    def test_checkpoint_without_statistics(self) -> None:
        task = _task()
        checkpoint: dict[str, Any] = {'hyper_parameters': dict(task.hparams)}
        task.on_save_checkpoint(checkpoint)
        assert 'normalization' not in checkpoint


class TestMetrics:
    def test_two_classes_log_the_thresholded_jaccard(self) -> None:
        task = PTAViTTask(preset='test', num_classes=2, ignore_index=255)
        assert 'ThresholdedJaccard' in task.val_metrics
        assert 'ThresholdedJaccard' in task.test_metrics
        mask = torch.zeros(3, 16, 16, dtype=torch.long)
        mask[0, 4:12, 4:12] = 1  # a lesion found exactly
        mask[1, :8] = 1  # a lesion found in half: IoU 0.5 < 0.65 scores 0
        mask[2, 0, 0] = 255  # no lesion, nothing predicted: 1
        maps = torch.zeros(3, 6, 16, 16)
        maps[:, 0] = 1.0
        maps[0, 1] = (mask[0] == 1).float() * 2
        maps[1, 1, :4] = 2.0
        task.update_metrics('val', maps, mask)
        values = task.val_metrics.compute()
        assert values['val_ThresholdedJaccard'].item() == pytest.approx(2 / 3)

    def test_more_classes_do_not(self) -> None:
        assert 'ThresholdedJaccard' not in _task().val_metrics


class TestFit:
    def _fit_and_save(
        self, tmp_path: Path, task: Any, datamodule: LightningDataModule | None
    ) -> dict[str, Any]:
        trainer = _trainer(tmp_path)
        if datamodule is None:
            loader = DataLoader(_batches(), batch_size=2)  # type: ignore[arg-type]
            trainer.fit(task, train_dataloaders=loader)
        else:
            trainer.fit(task, datamodule=datamodule)
        path = tmp_path / 'task.ckpt'
        trainer.save_checkpoint(path)
        return torch.load(path, map_location='cpu', weights_only=True)  # type: ignore[no-any-return]

    def test_no_datamodule_set_by_hand(self, tmp_path: Path) -> None:
        task = _task()
        task.set_normalization(NORM)
        ckpt = self._fit_and_save(tmp_path, task, None)
        assert ckpt['normalization'] == NORM.to_dict()
        assert Normalization.from_checkpoint(ckpt) == NORM
        assert ckpt['state_dict']['normalization_mean'].tolist() == list(NORM.mean)
        assert 'normalization' not in ckpt['hyper_parameters']
        loaded = PTAViTTask(
            **{
                k: v
                for k, v in ckpt['hyper_parameters'].items()
                if not k.startswith('_')
            }
        )
        loaded.on_load_checkpoint(ckpt)
        loaded.load_state_dict(ckpt['state_dict'])
        assert loaded.normalization == NORM

    def test_no_datamodule_no_statistics(self, tmp_path: Path) -> None:
        task = _task()
        with pytest.warns(UserWarning, match='set_normalization'):
            ckpt = self._fit_and_save(tmp_path, task, None)
        assert Normalization.from_checkpoint(ckpt) is None

    def test_datamodule_statistics(self, tmp_path: Path) -> None:
        task = _task(SSG2Task)
        ckpt = self._fit_and_save(tmp_path, task, _DataModule(NORM))
        assert task.normalization == NORM
        assert Normalization.from_checkpoint(ckpt) == NORM

    def test_datamodule_overrides_hand_set(self, tmp_path: Path) -> None:
        task = _task()
        task.set_normalization(Normalization((0.0,), (255.0,)))
        with pytest.warns(UserWarning, match="the datamodule's are kept"):
            self._fit_and_save(tmp_path, task, _DataModule(NORM))
        assert task.normalization == NORM


class TestBatchNormBatch:
    @pytest.mark.parametrize('cls', [PTAViTTask, SSG2Task])
    def test_one_value_per_channel(self, cls: type[MultitaskSegmentationTask]) -> None:
        task = _task(cls)
        task.train()
        batch = {'image': torch.zeros(1, 3, 32, 32)}
        with pytest.raises(ValueError, match='batch size of at least 2 or patches'):
            task.on_train_batch_start(batch, 0)

    @pytest.mark.parametrize(('b', 'size'), [(2, 32), (1, 64)])
    def test_enough_values(self, b: int, size: int) -> None:
        task = _task()
        task.train()
        task.on_train_batch_start({'image': torch.zeros(b, 3, size, size)}, 0)

    def test_eval_mode(self) -> None:
        task = _task()
        task.eval()
        task.on_train_batch_start({'image': torch.zeros(1, 3, 32, 32)}, 0)

    @pytest.mark.parametrize('cls', [PTAViTTask, SSG2Task])
    def test_sync_batchnorm_refused(
        self, cls: type[MultitaskSegmentationTask], tmp_path: Path
    ) -> None:
        trainer = Trainer(
            accelerator='cpu',
            max_steps=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            sync_batchnorm=True,
            default_root_dir=tmp_path,
        )
        task = _task(cls)
        with pytest.raises(ValueError, match=r'trainer\.sync_batchnorm: false'):
            trainer.fit(task, datamodule=_DataModule(NORM))
        assert task.global_step == 0

    def test_in_fit(self, tmp_path: Path) -> None:
        task = _task()
        task.set_normalization(NORM)
        loader = DataLoader(_batches(n=1, b=1), batch_size=1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match='BatchNorm cannot compute'):
            _trainer(tmp_path).fit(task, train_dataloaders=loader)
