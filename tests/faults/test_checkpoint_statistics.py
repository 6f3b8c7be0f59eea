"""A short real ``Trainer.fit`` with each datamodule writes its statistics."""

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer
from torchgeo.main import main

from torchgeo_ssg2.datamodules import (
    DubaiAerialDataModule,
    ISIC2018DataModule,
    PotsdamDataModule,
)
from torchgeo_ssg2.normalization import Normalization
from torchgeo_ssg2.trainers import SSG2Task

DATA = os.path.join('tests', 'data')


def _fit(tmp_path: Path, datamodule: LightningDataModule, **task: Any) -> Path:
    model = SSG2Task(preset='test', sequence_length=2, ignore_index=255, **task)
    trainer = Trainer(
        accelerator='cpu',
        max_steps=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=datamodule)
    paths = sorted(tmp_path.rglob('*.ckpt'))
    assert len(paths) == 1
    return paths[0]


def _check(path: Path, expected: Normalization) -> None:
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    assert Normalization.from_checkpoint(ckpt) == expected
    assert ckpt['normalization'] == expected.to_dict()
    datamodule = ckpt['datamodule_hyper_parameters']
    assert datamodule['normalization'] == expected.to_dict()
    assert datamodule['mean'] == list(expected.mean)
    assert datamodule['std'] == list(expected.std)
    state = ckpt['state_dict']
    assert torch.equal(
        state['normalization_mean'], torch.tensor(expected.mean, dtype=torch.float32)
    )
    assert 'normalization' not in ckpt['hyper_parameters']
    assert 'mean' not in ckpt['hyper_parameters']


def test_dubai(tmp_path: Path) -> None:
    dm = DubaiAerialDataModule(
        root=os.path.join(DATA, 'dubai', 'data'),
        batch_size=2,
        patch_size=32,
        sequence_length=2,
        length=2,
    )
    expected = Normalization(
        (105.52, 105.49, 105.80), (79.21, 78.10, 81.26), ('R', 'G', 'B'), 'uint8'
    )
    assert dm.normalization == expected
    _check(_fit(tmp_path, dm, num_classes=6), expected)


def test_isic(tmp_path: Path) -> None:
    dm = ISIC2018DataModule(
        root=os.path.join(DATA, 'isic2018'), batch_size=2, size=32, sequence_length=2
    )
    expected = Normalization(
        (180.503, 150.847, 139.466), (39.19, 41.307, 45.015), ('R', 'G', 'B'), 'uint8'
    )
    assert dm.normalization == expected
    _check(_fit(tmp_path, dm, num_classes=2), expected)


@pytest.fixture(scope='module')
def prepared(tmp_path_factory: pytest.TempPathFactory) -> str:
    dst = str(tmp_path_factory.mktemp('prepared'))
    PotsdamDataModule(
        root=os.path.join(DATA, 'potsdam'), prepared_root=dst
    ).prepare_data()
    return dst


def test_potsdam(tmp_path: Path, prepared: str) -> None:
    dm = PotsdamDataModule(
        root=os.path.join(DATA, 'potsdam'),
        prepared_root=prepared,
        bands='IRRG',
        val_tiles=('2_10', '2_11'),
        batch_size=2,
        patch_size=32,
        sequence_length=2,
        length=2,
    )
    assert dm.normalization == Normalization(
        (97.276, 85.846, 91.777), (35.686, 35.466, 34.85), ('IR', 'R', 'G'), 'float32'
    )
    _check(_fit(tmp_path, dm, num_classes=dm.num_classes), dm.normalization)


def test_potsdam_cli(tmp_path: Path, prepared: str) -> None:
    """``torchgeo fit`` (LightningCLI) writes the statistics of all five bands."""
    main(
        [
            'fit',
            '--config',
            os.path.join('tests', 'conf', 'ssg2_potsdam.yaml'),
            '--trainer.accelerator',
            'cpu',
            '--trainer.max_steps',
            '1',
            '--trainer.limit_val_batches',
            '1',
            '--trainer.num_sanity_val_steps',
            '0',
            '--trainer.default_root_dir',
            str(tmp_path),
            '--data.init_args.prepared_root',
            prepared,
        ]
    )
    (path,) = tmp_path.rglob('*.ckpt')
    expected = Normalization(
        (85.846, 91.777, 84.993, 97.276, 38.462),
        (35.466, 34.85, 36.257, 35.686, 6.216),
        ('R', 'G', 'B', 'IR', 'DSM'),
        'float32',
    )
    _check(path, expected)
