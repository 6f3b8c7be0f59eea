import glob
import inspect
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from torch import Tensor
from torch.optim import AdamW, RAdam
from torchgeo.main import main
from torchgeo.tasks import SemanticSegmentation

from torchgeo_ssg2.datamodules import DubaiAerialDataModule
from torchgeo_ssg2.inference.model import load_task
from torchgeo_ssg2.trainers import SSG2Task, normalised_entropy, sequence_uncertainty
from torchgeo_ssg2.trainers.base import MultitaskSegmentationTask

ROOT = os.path.join('tests', 'data', 'dubai', 'data')
CONFIG = os.path.join('tests', 'conf', 'ssg2_dubai.yaml')
NC = 5


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        '--config',
        CONFIG,
        '--trainer.accelerator',
        'cpu',
        '--trainer.default_root_dir',
        str(tmp_path),
        '--trainer.log_every_n_steps',
        '1',
        *extra,
    ]


def _task(**kwargs: Any) -> SSG2Task:
    args: dict[str, Any] = {
        'preset': 'test',
        'num_classes': NC,
        'ignore_index': 255,
        'sequence_length': 2,
    }
    return SSG2Task(**(args | kwargs))


def _batch(b: int = 2, t: int = 2, size: int = 32) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        'image': torch.randn(b, 3, size, size, generator=g),
        'mask': torch.randint(0, NC, (b, size, size), generator=g),
        'support_image': torch.randn(b, t, 3, size, size, generator=g),
        'support_mask': torch.randint(0, NC, (b, t, size, size), generator=g),
    }


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp('ssg2_fit')
    main(
        [
            'fit',
            *_args(root),
            '--trainer.max_steps',
            '1',
            '--trainer.limit_val_batches',
            '1',
        ]
    )
    (path,) = glob.glob(str(root / '**' / '*.ckpt'), recursive=True)
    return path


class TestSSG2TaskCLI:
    def test_fit_test_predict(self, tmp_path: Path) -> None:
        args = _args(tmp_path, '--trainer.fast_dev_run', '1')
        main(['fit', *args])
        main(['test', *args])
        main(['predict', *args])

    def test_checkpoint_round_trip(self, checkpoint: str, tmp_path: Path) -> None:
        saved = torch.load(checkpoint, map_location='cpu', weights_only=False)
        assert saved['global_step'] == 1
        task = SSG2Task.load_from_checkpoint(checkpoint)
        assert task.hparams['num_classes'] == NC
        assert task.hparams['preset'] == 'test'
        # T is given once, by the datamodule: the hyper-parameters keep the
        # config's None and the checkpoint records the T of training
        assert task.hparams['sequence_length'] is None
        assert saved['hyper_parameters']['sequence_length'] is None
        assert saved['sequence_length'] == 2
        assert task.sequence_length == 2
        for key, value in task.state_dict().items():
            assert torch.equal(value, saved['state_dict'][key])
        # evaluation from the checkpoint through the CLI
        main(['test', *_args(tmp_path), '--ckpt_path', checkpoint])

    def test_predict_raster_with_checkpoint_t(
        self, checkpoint: str, tmp_path: Path
    ) -> None:
        # T is not a hyper-parameter of this checkpoint: predict takes it from
        # checkpoint['sequence_length'] (raster supports need it)
        import numpy as np
        import rasterio
        import yaml

        src = tmp_path / 'in.tif'
        pixels = np.random.default_rng(0).integers(0, 255, (3, 64, 64), np.uint8)
        profile = {'driver': 'GTiff', 'count': 3, 'dtype': 'uint8'}
        with rasterio.open(src, 'w', height=64, width=64, **profile) as f:
            f.write(pixels)
        config = yaml.safe_load(Path('experiments', 'predict_ssg2.yaml').read_text())
        config['data']['init_args'] |= {'input': str(src), 'window': 32}
        config['data']['init_args'] |= {'overlap': 0, 'batch_size': 2}
        config['trainer'] |= {'accelerator': 'cpu', 'enable_progress_bar': False}
        out = tmp_path / 'out.tif'
        config['trainer']['callbacks'][0]['init_args']['output'] = str(out)
        conf = tmp_path / 'predict.yaml'
        conf.write_text(yaml.safe_dump(config))
        main(['predict', '--config', str(conf), '--ckpt_path', checkpoint])
        with rasterio.open(out) as f:
            assert (f.height, f.width) == (64, 64)
            assert f.read().max() < NC

    def test_resume(self, checkpoint: str, tmp_path: Path) -> None:
        main(
            [
                'fit',
                *_args(tmp_path),
                '--trainer.max_steps',
                '2',
                '--trainer.limit_val_batches',
                '0',
                '--ckpt_path',
                checkpoint,
            ]
        )
        (path,) = glob.glob(str(tmp_path / '**' / '*.ckpt'), recursive=True)
        resumed = torch.load(path, map_location='cpu', weights_only=False)
        assert resumed['global_step'] == 2

    def test_python_checkpoint_in_cli(self, tmp_path: Path) -> None:
        task = _task()
        dm = DubaiAerialDataModule(
            batch_size=2, patch_size=32, sequence_length=2, root=ROOT
        )
        trainer = Trainer(
            accelerator='cpu',
            max_steps=1,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
        )
        trainer.fit(task, dm)
        path = tmp_path / 'python.ckpt'
        trainer.save_checkpoint(path)
        hparams = torch.load(path, weights_only=False)['hyper_parameters']
        assert hparams['_class_path'] == 'torchgeo_ssg2.trainers.ssg2.SSG2Task'
        assert SSG2Task.load_from_checkpoint(path).hparams['num_classes'] == NC
        main(
            [
                'validate',
                *_args(tmp_path),
                '--ckpt_path',
                str(path),
                '--trainer.limit_val_batches',
                '1',
            ]
        )


def _trainer(**kwargs: Any) -> Trainer:
    options: dict[str, Any] = {
        'accelerator': 'cpu',
        'max_steps': 1,
        'limit_val_batches': 0,
        'logger': False,
        'enable_checkpointing': False,
        'enable_progress_bar': False,
        'enable_model_summary': False,
    }
    return Trainer(**(options | kwargs))


class TestSequenceLength:
    def test_from_datamodule(self, tmp_path: Path) -> None:
        task = _task(sequence_length=None)
        before = dict(task.hparams)
        dm = DubaiAerialDataModule(
            batch_size=2, patch_size=32, sequence_length=2, root=ROOT
        )
        trainer = _trainer()
        trainer.fit(task, dm)
        assert task.sequence_length == 2
        assert dict(task.hparams) == before
        path = tmp_path / 'task.ckpt'
        trainer.save_checkpoint(path)
        saved = torch.load(path, weights_only=True)
        assert saved['sequence_length'] == 2
        assert saved['hyper_parameters'] == before | {
            '_class_path': 'torchgeo_ssg2.trainers.ssg2.SSG2Task',
            '_instantiator': 'lightning.pytorch.cli.instantiate_module',
        }
        assert SSG2Task.load_from_checkpoint(path).sequence_length == 2
        loaded, _ = load_task(path)
        assert loaded.sequence_length == 2

    def test_datamodule_disagrees(self) -> None:
        task = _task(sequence_length=3)
        dm = DubaiAerialDataModule(
            batch_size=2, patch_size=32, sequence_length=2, root=ROOT
        )
        with pytest.raises(ValueError, match=r'sequence_length=3.*draws sequence_'):
            _trainer().fit(task, dm)

    def test_resume_and_fine_tune_with_another_t(self, tmp_path: Path) -> None:
        """The datamodule's T wins over a checkpoint's, with a warning."""

        def data(t: int) -> DubaiAerialDataModule:
            return DubaiAerialDataModule(
                batch_size=2, patch_size=32, sequence_length=t, root=ROOT
            )

        task = _task(sequence_length=None)
        trainer = _trainer()
        trainer.fit(task, data(2))
        path = tmp_path / 't2.ckpt'
        trainer.save_checkpoint(path)
        # resume (the checkpoint is restored after the datamodule is set up)
        resumed = _task(sequence_length=None)
        trainer = _trainer(max_steps=2)
        with pytest.warns(UserWarning, match=r'sequence_length=2; .*=3'):
            trainer.fit(resumed, data(3), ckpt_path=path)
        assert resumed.sequence_length == 3
        resumed_path = tmp_path / 't3.ckpt'
        trainer.save_checkpoint(resumed_path)
        assert torch.load(resumed_path, weights_only=True)['sequence_length'] == 3
        # fine-tune a loaded task
        loaded = SSG2Task.load_from_checkpoint(path)
        assert loaded.sequence_length == 2
        with pytest.warns(UserWarning, match=r'sequence_length=2; .*=3'):
            _trainer().fit(loaded, data(3))
        assert loaded.sequence_length == 3

    def test_bad_checkpoint_record(self) -> None:
        with pytest.raises(ValueError, match="checkpoint\\['sequence_length'\\]"):
            _task().on_load_checkpoint({'sequence_length': '4'})

    def test_checkpoint_with_smp_names(self, tmp_path: Path) -> None:
        # hyper-parameters as tasks with torchgeo's smp-only arguments saved them
        task = _task()
        hparams = dict(task.hparams) | {
            'model': 'ssg2',
            'num_labels': None,
            'class_weights': None,
            'pos_weight': None,
            '_class_path': 'torchgeo_ssg2.trainers.ssg2.SSG2Task',
        }
        path = tmp_path / 'old.ckpt'
        torch.save({'state_dict': task.state_dict(), 'hyper_parameters': hparams}, path)
        loaded, _ = load_task(path)
        assert loaded.hparams['preset'] == 'test'
        assert loaded.hparams['num_classes'] == NC
        assert loaded.sequence_length == 2
        for key, value in task.state_dict().items():
            assert torch.equal(value, loaded.state_dict()[key])


class TestSSG2Task:
    def test_subclass(self) -> None:
        assert issubclass(SSG2Task, SemanticSegmentation)

    def test_hparams(self) -> None:
        task = _task(labels=['a', 'b', 'c', 'd', 'e'])
        for key in (
            'task',
            'num_classes',
            'labels',
            'ignore_index',
            'loss',
            'lr',
            'patience',
            'preset',
            'sequence_length',
            'optimizer',
        ):
            assert key in task.hparams
        for key in ('backbone', 'weights', 'num_labels', 'class_weights'):
            assert key not in task.hparams
        assert task.model.num_outputs == NC + 1

    def test_signature_written_once(self) -> None:
        own = set(inspect.signature(SSG2Task.__init__).parameters)
        assert own == {
            'self',
            'sequence_length',
            'loss_empty',
            'loss_fuzzy_target_null',
            'loss_fuzzy_weight',
            'kwargs',
        }
        shared = set(inspect.signature(MultitaskSegmentationTask.__init__).parameters)
        assert set(_task().hparams) == (own | shared) - {'self', 'kwargs'}

    @pytest.mark.parametrize('name', ['num_labels', 'class_weights', 'pos_weight'])
    def test_smp_arguments_refused(self, name: str) -> None:
        with pytest.raises(TypeError, match=name):
            _task(**{name: None})

    def test_metrics_exclude_null(self) -> None:
        task = _task(labels=['a', 'b', 'c', 'd', 'e'])
        task.training_step(_batch(), 0)
        values = task.train_metrics.compute()
        classwise = [k for k in values if k.startswith('train_ClasswiseJaccardIndex_')]
        assert sorted(classwise) == [
            f'train_ClasswiseJaccardIndex_{c}' for c in 'abcde'
        ]
        for name in ('OverallAccuracy', 'AverageJaccardIndex', 'AverageF1Score'):
            assert f'train_{name}' in values

    def test_ignore_index(self, monkeypatch: pytest.MonkeyPatch) -> None:
        task = _task()
        batch = _batch()
        mask = batch['mask']
        mask[:, :16] = 255
        # a model that is right on valid pixels and wrong on ignored ones
        target = torch.nn.functional.one_hot(mask.clamp(max=NC - 1), NC + 1)
        target = target.permute(0, 3, 1, 2).float()
        target[:, :, :16] = torch.roll(target[:, :, :16], 1, dims=1)
        zeros = torch.zeros(2, 2, 3 * (NC + 1), 32, 32)
        outputs = {
            'target': torch.cat([target, target, target], 1),
            'intersection': zeros,
            'union': zeros,
        }
        monkeypatch.setattr(task.model, 'forward_inference', lambda x, s: outputs)
        del batch['support_mask']
        task.validation_step(batch, 0)
        values = task.val_metrics.compute()
        assert values['val_OverallAccuracy'] == 1
        assert values['val_AverageJaccardIndex'] == 1

    def test_ignored_pixels_get_no_gradient(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        task = _task(loss_fuzzy_weight=1.0)  # every term in the total
        batch = _batch()
        batch['mask'][:, :8] = 255
        b, k, t = 2, NC + 1, 2
        g = torch.Generator().manual_seed(0)
        outputs = {
            'target': torch.rand(b, 3 * k, 32, 32, generator=g),
            'intersection': torch.rand(b, t, 3 * k, 32, 32, generator=g),
            'union': torch.rand(b, t, 3 * k, 32, 32, generator=g),
            'difference': torch.rand(b, t, 3 * k, 32, 32, generator=g),
            'fuzzy_target': torch.rand(b, t, k, 32, 32, generator=g),
            'fuzzy_null': torch.rand(b, t, k, 32, 32, generator=g),
            'sequence': torch.randn(b, t, 8, 32, 32, generator=g),
        }
        for value in outputs.values():
            value.requires_grad_(True)
        monkeypatch.setattr(task, 'forward', lambda image, support: outputs)
        task.training_step(batch, 0).backward()
        for key in ('target', 'intersection', 'union', 'difference', 'fuzzy_target'):
            grad = outputs[key].grad
            assert grad is not None
            assert (grad[..., :8, :] == 0).all(), key
            assert (grad[..., 8:, :] != 0).any(), key

    def test_predict_step(self) -> None:
        task = _task()
        task.eval()
        batch = _batch(b=2, t=3)  # T differs from training's 2
        batch['bounds'] = torch.zeros(2, 9)
        with torch.no_grad():
            out = task.predict_step(batch, 0)
        assert out['probabilities'].shape == (2, NC, 32, 32)
        assert torch.allclose(out['probabilities'].sum(1), torch.ones(2, 32, 32))
        assert out['uncertainty'].shape == (2, 32, 32)
        assert out['uncertainty'].min() >= 0 and out['uncertainty'].max() <= 1
        torch.testing.assert_close(
            out['uncertainty'], normalised_entropy(out['probabilities'])
        )
        assert out['bounds'] is batch['bounds']
        assert out['transform'] is None

    def test_normalised_entropy(self) -> None:
        certain = torch.zeros(1, 4, 2, 2)
        certain[:, 1] = 1
        uniform = torch.full((1, 4, 2, 2), 0.25)
        assert normalised_entropy(certain).max().item() == pytest.approx(0, abs=1e-6)
        assert normalised_entropy(uniform).min().item() == pytest.approx(1)
        assert normalised_entropy(torch.ones(1, 1, 2, 2)).shape == (1, 2, 2)

    def test_sequence_uncertainty(self) -> None:
        inter = torch.zeros(1, 2, 3, 2, 2)
        union = torch.zeros(1, 2, 3, 2, 2)
        # pixel (0, 0): class 0 confirmed by step 1 -> bracket closed
        inter[0, 1, 0, 0, 0] = 1
        union[0, :, 0, 0, 0] = 1
        # pixel (0, 1): target class 1, supports all class 2 -> bracket open
        union[0, :, 1, 0, 1] = 1
        union[0, :, 2, 0, 1] = 1
        # NULL channel (index 2 of 3 here with num_classes=2) is ignored
        u = sequence_uncertainty(inter, union, num_classes=2)
        assert u.shape == (1, 2, 2)
        assert u[0, 0, 0] == 0
        assert u[0, 0, 1] == 1
        assert u[0, 1, 1] == 0

    def test_sequence_length(self) -> None:
        task = _task()
        with pytest.raises(ValueError, match=r'T=3 supports.*sequence_length=2'):
            task.training_step(_batch(t=3), 0)
        task = _task(sequence_length=None)
        task.training_step(_batch(t=1), 0)
        assert task.sequence_length == 1
        assert task.hparams['sequence_length'] is None

    def test_missing_supports(self) -> None:
        task = _task()
        batch = _batch()
        with pytest.raises(ValueError, match='support_mask'):
            task.training_step(
                {k: batch[k] for k in ('image', 'mask', 'support_image')}, 0
            )
        with pytest.raises(ValueError, match='episode batches'):
            task.predict_step({'image': batch['image']}, 0)

    @pytest.mark.parametrize(
        ('kwargs', 'match'),
        [
            ({'task': 'binary'}, 'multiclass'),
            ({'num_classes': None}, 'num_classes'),
            ({'labels': ['a']}, 'labels'),
            ({'ignore_index': 0}, 'ignore_index'),
            ({'model': 'unet'}, 'ssg2'),
            ({'loss': 'ce'}, 'tanimoto'),
            ({'optimizer': 'sgd'}, 'optimizer'),
            ({'lr_schedule': 'step'}, 'lr_schedule'),
            ({'sequence_length': 0}, 'sequence_length'),
            ({'sequence_length': 2.5}, 'sequence_length'),
        ],
    )
    def test_invalid(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            _task(**kwargs)

    def test_optimizers(self) -> None:
        opt = _task().configure_optimizers()
        assert isinstance(opt, RAdam)
        assert opt.defaults['eps'] == 1e-6
        conf = _task(optimizer='adamw', weight_decay=0.01, lr_schedule='plateau')
        out = conf.configure_optimizers()
        assert isinstance(out['optimizer'], AdamW)
        assert out['optimizer'].defaults['weight_decay'] == 0.01
        assert out['lr_scheduler']['monitor'] == 'val_loss'

    def test_cosine_warmup(self) -> None:
        task = _task(lr_schedule='cosine', warmup_steps=2, min_lr=1e-4)
        trainer = Trainer(max_steps=10, accelerator='cpu', logger=False)
        task.trainer = trainer  # type: ignore[assignment]
        monkey = pytest.MonkeyPatch()
        monkey.setattr(Trainer, 'estimated_stepping_batches', 10)
        try:
            out = task.configure_optimizers()
        finally:
            monkey.undo()
        scheduler = out['lr_scheduler']['scheduler']
        lrs = []
        for _ in range(10):
            lrs.append(scheduler.get_last_lr()[0])
            out['optimizer'].step()
            scheduler.step()
        assert lrs[0] == pytest.approx(5e-4)
        assert lrs[1] == pytest.approx(1e-3)
        assert lrs[-1] < lrs[2]
        assert min(lrs) >= 1e-4 - 1e-12
        constant = _task(warmup_steps=4).configure_optimizers()
        assert constant['lr_scheduler']['interval'] == 'step'

    def test_figure_sample(self) -> None:
        task = _task()
        dm = DubaiAerialDataModule(patch_size=32, sequence_length=2, root=ROOT)
        dm.setup('validate')
        batch = {k: v.unsqueeze(0) for k, v in dm.val_dataset[0].items()}
        batch['image'] = (batch['image'] - dm.mean.view(3, 1, 1)) / dm.std.view(3, 1, 1)

        class _Trainer:
            datamodule = dm

        task._trainer = _Trainer()  # type: ignore[assignment]
        task.eval()
        with torch.no_grad():
            outputs = task(batch['image'], batch['support_image'])
        sample = task.figure_sample(batch, outputs)
        assert sample['intersection'].shape == (2, 32, 32)
        assert sample['intersection'].max() <= NC
        assert sample['union'].max() < NC
        assert sample['image'].min() >= -1e-3
        assert sample['image'].max() <= 255 + 1e-3
        fig = dm.plot(sample)
        assert fig is not None
        assert len(fig.axes) == 3 * 4
