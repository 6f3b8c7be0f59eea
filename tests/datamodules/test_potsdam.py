import os
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch
from torchgeo.datasets.utils import unbind_samples
from torchgeo.main import main

from torchgeo_ssg2.datamodules.potsdam import PotsdamDataModule
from torchgeo_ssg2.datasets.potsdam import prepared_paths

ROOT = os.path.join('tests', 'data', 'potsdam')


def trainer(**flags: bool) -> SimpleNamespace:
    names = ('training', 'validating', 'sanity_checking', 'testing', 'predicting')
    return SimpleNamespace(**{n: flags.get(n, False) for n in names})


@pytest.fixture(scope='module')
def prepared(tmp_path_factory: pytest.TempPathFactory) -> str:
    dst = str(tmp_path_factory.mktemp('prepared'))
    PotsdamDataModule(root=ROOT, prepared_root=dst).prepare_data()
    return dst


def make(prepared: str, **kwargs: object) -> PotsdamDataModule:
    options: dict[str, object] = {
        'root': ROOT,
        'prepared_root': prepared,
        'batch_size': 2,
        'patch_size': 16,
        'sequence_length': 3,
        'length': 4,
    }
    options.update(kwargs)
    return PotsdamDataModule(**options)  # type: ignore[arg-type]


class TestPotsdamDataModule:
    def test_prepare_data(self, prepared: str) -> None:
        dm = make(prepared)
        assert len(dm.tiles()) == 37  # geoseg drops 7_10
        image = prepared_paths(prepared, '2_10')['image']
        stamp = os.stat(image).st_mtime_ns
        dm.prepare_data()  # complete: nothing rewritten
        assert os.stat(image).st_mtime_ns == stamp
        assert not os.path.exists(prepared_paths(prepared, '7_10')['image'])
        assert len(make(prepared, protocol='full').tiles()) == 38

    def test_default_prepared_root(self) -> None:
        dm = PotsdamDataModule(root='/data/potsdam')
        assert dm.prepared_root == os.path.join('/data/potsdam', 'prepared')

    def test_train(self, prepared: str) -> None:
        dm = make(prepared)
        dm.setup('fit')
        batch = next(iter(dm.train_dataloader()))
        assert batch['image'].shape == (2, 5, 16, 16)
        assert batch['mask'].shape == (2, 16, 16)
        assert batch['mask'].dtype == torch.long
        assert batch['support_image'].shape == (2, 3, 5, 16, 16)
        assert batch['support_mask'].shape == (2, 3, 16, 16)
        assert batch['bounds'].shape == (2, 9)
        assert set(batch['mask'].unique().tolist()) <= {0, 1, 2, 3, 4, 255}
        assert len(dm.train_sampler) == 4  # type: ignore[arg-type]
        # Draws change with the epoch (Lightning calls set_epoch on the sampler).
        first = [e.target for e in dm.train_sampler]  # type: ignore[union-attr]
        dm.train_sampler.set_epoch(1)  # type: ignore[union-attr]
        assert [e.target for e in dm.train_sampler] != first  # type: ignore[union-attr]

    def test_val_test_predict(self, prepared: str) -> None:
        dm = make(prepared, eval_sequence_length=2)
        dm.setup('validate')
        assert len(dm.val_sampler) == 4  # type: ignore[arg-type]
        batch = next(iter(dm.val_dataloader()))
        assert batch['support_image'].shape == (2, 2, 5, 16, 16)
        # Fixed supports: the same episodes every epoch.
        first = list(dm.val_sampler)  # type: ignore[arg-type]
        dm.val_sampler.set_epoch(3)  # type: ignore[union-attr]
        assert list(dm.val_sampler) == first  # type: ignore[arg-type]
        dm.setup('test')
        assert len(dm.test_sampler) == 14 * 4  # type: ignore[arg-type]
        dm.setup('predict')
        batch = next(iter(dm.predict_dataloader()))
        assert batch['image'].shape == (2, 5, 16, 16)

    def test_protocol(self, prepared: str, tmp_path: Path) -> None:
        # The full protocol trains on tile 7_10 too: a folder of its own.
        dm = make(str(tmp_path), protocol='full', bands='IRRG')
        assert dm.num_classes == 6 and dm.ignore_index == 255
        assert dm.hparams['protocol'] == 'full'
        assert torch.allclose(dm.mean, torch.tensor([97.276, 85.846, 91.777]))
        dm.prepare_data()
        dm.setup('validate')
        batch = next(iter(dm.val_dataloader()))
        assert batch['image'].shape[1] == 3
        assert make(prepared).hparams['protocol'] == 'geoseg'
        assert make(prepared).num_classes == 5

    def test_batch_transfer(self, prepared: str) -> None:
        dm = make(prepared)
        dm.setup('fit')
        batch = next(iter(dm.train_dataloader()))
        assert dm.on_after_batch_transfer(batch, 0) is batch
        for flags in (
            {'training': True},
            {'validating': True},
            {'testing': True},
            {'predicting': True},
        ):
            dm.trainer = trainer(**flags)  # type: ignore[assignment]
            out = dm.on_after_batch_transfer(batch, 0)
            assert out['image'].shape == batch['image'].shape
            assert out['support_image'].shape == batch['support_image'].shape
            assert out['support_mask'].shape == batch['support_mask'].shape
            assert out['image'].abs().mean() < batch['image'].abs().mean()
        dm.trainer = trainer(validating=True)  # type: ignore[assignment]
        expected = (batch['image'] - dm.mean[:, None, None]) / dm.std[:, None, None]
        out = dm.on_after_batch_transfer(batch, 0)
        assert torch.allclose(out['image'], expected, atol=1e-5)
        assert torch.equal(out['mask'], batch['mask'])

    def test_no_augment(self, prepared: str) -> None:
        dm = make(prepared, augment=False)
        assert dm.train_aug is None

    def test_plot(self, prepared: str) -> None:
        dm = make(prepared, bands='RGBIR+DSM')
        dm.setup('validate')
        batch = next(iter(dm.val_dataloader()))
        sample = unbind_samples(batch)[0]
        sample['prediction'] = sample['mask'].clamp(max=4)
        fig = dm.plot(sample)
        assert len(fig.axes) >= 4 * 3
        plt.close(fig)
        plain = {'image': sample['image'], 'mask': sample['mask']}
        fig = dm.plot(plain, suptitle='plain')
        assert len(fig.axes) == 2
        plt.close(fig)

    def test_not_prepared(self, tmp_path: Path) -> None:
        dm = make(str(tmp_path / 'none'), prepare=False)
        dm.prepare_data()
        assert not (tmp_path / 'none').exists()
        with pytest.raises(FileNotFoundError):
            dm.setup('fit')


def print_config(config: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(['fit', '--config', config, '--print_config'])
    assert info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    'config', ['experiments/ssg2_potsdam.yaml', 'experiments/ptavit_potsdam.yaml']
)
def test_experiment_configs(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = print_config(config, capsys)
    assert 'torchgeo_ssg2.datamodules.PotsdamDataModule' in out
    assert 'preset: paper' in out
    assert 'protocol: geoseg' in out


def test_fast_dev_run(prepared: str, tmp_path: Path) -> None:
    main(
        [
            'fit',
            '--config',
            os.path.join('tests', 'conf', 'ssg2_potsdam.yaml'),
            '--trainer.accelerator',
            'cpu',
            '--trainer.fast_dev_run',
            '1',
            '--trainer.default_root_dir',
            str(tmp_path),
            '--data.init_args.prepared_root',
            prepared,
        ]
    )
