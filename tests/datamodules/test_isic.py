import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch
from torchgeo.datasets.utils import unbind_samples
from torchgeo.main import main

from torchgeo_ssg2.datamodules.isic import ISIC2018DataModule

ROOT = os.path.join('tests', 'data', 'isic2018')


def make(**kwargs: object) -> ISIC2018DataModule:
    options: dict[str, object] = {
        'root': ROOT,
        'batch_size': 2,
        'size': 32,
        'sequence_length': 2,
    }
    options.update(kwargs)
    return ISIC2018DataModule(**options)  # type: ignore[arg-type]


class TestISIC2018DataModule:
    def test_prepare_data_extracts_the_zips(self, tmp_path: Path) -> None:
        for name in os.listdir(ROOT):
            if name.endswith('.zip'):
                shutil.copy(os.path.join(ROOT, name), tmp_path)
        dm = make(root=str(tmp_path))
        dm.prepare_data()
        extracted = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
        assert extracted == sorted(
            name[:-4] for name in os.listdir(ROOT) if name.endswith('.zip')
        )
        dm.setup('fit')
        assert len(dm.val_dataset) == 2  # type: ignore[arg-type]
        # a distribution without training images still prepares
        empty = make(root=str(tmp_path))
        shutil.rmtree(tmp_path / 'ISIC2018_Task1-2_Training_Input')
        for zip_file in tmp_path.glob('*Training_Input.zip'):
            zip_file.unlink()
        empty.prepare_data()

    def test_official_splits(self) -> None:
        dm = make()
        dm.setup('fit')
        batch = next(iter(dm.train_dataloader()))
        assert batch['image'].shape == (2, 3, 32, 32)
        assert batch['mask'].shape == (2, 32, 32)
        assert batch['mask'].dtype == torch.long
        assert batch['support_image'].shape == (2, 2, 3, 32, 32)
        assert batch['support_mask'].shape == (2, 2, 32, 32)
        assert set(batch['mask'].unique().tolist()) <= {0, 1}
        assert len(dm.val_dataset) == 2  # type: ignore[arg-type]
        dm.setup('test')
        assert len(dm.test_dataset) == 2  # type: ignore[arg-type]

    def test_carved_folder(self) -> None:
        dm = make(
            root=os.path.join(ROOT, 'isic2017_256'),
            split_fractions=(0.6, 0.2, 0.2),
            eval_sequence_length=3,
            resize='pad',
        )
        dm.setup('fit')
        assert len(dm.train_dataset) == 6  # type: ignore[arg-type]
        batch = next(iter(dm.val_dataloader()))
        assert batch['support_image'].shape == (2, 3, 3, 32, 32)
        # Supports come from the same split, never the target itself.
        sampler = dm.val_dataset.policy  # type: ignore[union-attr]
        assert sampler.draw(0) == sampler.draw(0, epoch=5)
        assert 0 not in sampler.draw(0)

    def test_normalisation(self) -> None:
        dm = make()
        dm.setup('fit')
        batch = next(iter(dm.val_dataloader()))
        dm.trainer = SimpleNamespace(  # type: ignore[assignment]
            training=False, validating=True, sanity_checking=False, testing=False
        )
        out = dm.on_after_batch_transfer(dict(batch), 0)
        expected = (batch['image'] - dm.mean[:, None, None]) / dm.std[:, None, None]
        assert torch.allclose(out['image'], expected, atol=1e-5)

    def test_plot(self) -> None:
        dm = make()
        dm.setup('fit')
        batch = next(iter(dm.val_dataloader()))
        sample = unbind_samples(batch)[0]
        fig = dm.plot(sample)
        assert fig is not None
        plt.close(fig)
        fig = dm.plot({'image': sample['image'], 'mask': sample['mask']})
        assert fig is not None and len(fig.axes) == 2
        plt.close(fig)

    def test_missing_split(self) -> None:
        dm = make(root=os.path.join(ROOT, 'isic2017_256'))
        with pytest.raises(FileNotFoundError, match='split_fractions'):
            dm.setup('fit')


def test_experiment_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(['fit', '--config', 'experiments/ssg2_isic.yaml', '--print_config'])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert 'torchgeo_ssg2.datamodules.ISIC2018DataModule' in out
    assert 'num_classes: 2' in out
