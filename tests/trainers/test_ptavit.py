import glob
import os
from pathlib import Path

import pytest
import torch
from torchgeo.main import main

from torchgeo_ssg2.models import PTAViT
from torchgeo_ssg2.trainers import PTAViTTask

CONFIG = os.path.join('tests', 'conf', 'ptavit_dubai.yaml')
NC = 5


def _task() -> PTAViTTask:
    return PTAViTTask(preset='test', num_classes=NC, ignore_index=255)


class TestPTAViTTask:
    def test_fit_test_predict(self, tmp_path: Path) -> None:
        args = [
            '--config',
            CONFIG,
            '--trainer.accelerator',
            'cpu',
            '--trainer.fast_dev_run',
            '1',
            '--trainer.default_root_dir',
            str(tmp_path),
        ]
        main(['fit', *args])
        main(['test', *args])
        main(['predict', *args])

    def test_checkpoint_round_trip(self, tmp_path: Path) -> None:
        main(
            [
                'fit',
                '--config',
                CONFIG,
                '--trainer.accelerator',
                'cpu',
                '--trainer.max_steps',
                '1',
                '--trainer.limit_val_batches',
                '0',
                '--trainer.default_root_dir',
                str(tmp_path),
            ]
        )
        (path,) = glob.glob(str(tmp_path / '**' / '*.ckpt'), recursive=True)
        task = PTAViTTask.load_from_checkpoint(path)
        saved = torch.load(path, map_location='cpu', weights_only=False)
        assert isinstance(task.model, PTAViT)
        hparams = {k: v for k, v in saved['hyper_parameters'].items() if k[0] != '_'}
        assert dict(task.hparams) == hparams
        for key, value in task.state_dict().items():
            assert torch.equal(value, saved['state_dict'][key])

    def test_plain_and_episodic_batches(self) -> None:
        task = _task()
        g = torch.Generator().manual_seed(0)
        plain = {
            'image': torch.randn(2, 3, 32, 32, generator=g),
            'mask': torch.randint(0, NC, (2, 32, 32), generator=g),
        }
        torch.manual_seed(0)
        loss = task.training_step(plain, 0)
        episodic = plain | {'support_image': torch.randn(2, 2, 3, 32, 32)}
        torch.manual_seed(0)
        assert torch.allclose(task.training_step(episodic, 0), loss)
        values = task.train_metrics.compute()
        assert len(values['train_ClasswiseJaccardIndex_0'].shape) == 0
        assert sum(k.startswith('train_ClasswiseF1Score_') for k in values) == NC

    def test_ignore_index(self, monkeypatch: pytest.MonkeyPatch) -> None:
        task = _task()
        g = torch.Generator().manual_seed(0)
        mask = torch.randint(0, NC, (1, 32, 32), generator=g)
        mask[:, :4] = 255
        output = torch.rand(1, 3 * NC, 32, 32, generator=g, requires_grad=True)
        monkeypatch.setattr(task, 'forward', lambda image: output)
        loss = task.training_step({'image': torch.zeros(1, 3, 32, 32), 'mask': mask}, 0)
        loss.backward()
        assert output.grad is not None
        assert (output.grad[:, :, :4] == 0).all()
        assert (output.grad[:, :, 4:] != 0).any()

    def test_predict_step(self) -> None:
        task = _task()
        task.eval()
        with torch.no_grad():
            out = task.predict_step({'image': torch.randn(2, 3, 32, 32)}, 0)
        assert out['probabilities'].shape == (2, NC, 32, 32)
        assert torch.allclose(out['probabilities'].sum(1), torch.ones(2, 32, 32))
        assert out['uncertainty'].shape == (2, 32, 32)
        assert 0 <= out['uncertainty'].min() and out['uncertainty'].max() <= 1
        assert out['bounds'] is None

    def test_shared_signature(self) -> None:
        assert '__init__' not in vars(PTAViTTask)
        assert _task().hparams['model'] is None
        task = PTAViTTask(model='ptavit', preset='test', num_classes=NC)
        assert task.hparams['model'] == 'ptavit'

    def test_invalid(self) -> None:
        with pytest.raises(ValueError, match='ptavit'):
            PTAViTTask(model='ssg2', num_classes=NC)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match='tanimoto'):
            PTAViTTask(loss='ce', num_classes=NC, preset='test')  # type: ignore[arg-type]
