"""Both front doors (predict_raster / torchgeo-ssg2 predict and torchgeo predict)."""

import json
import os
from pathlib import Path
from typing import Any

import pytest
import rasterio
import torch
import yaml
from inference_fakes import TRANSFORM, PixelTask, make_raster, read, save_checkpoint
from lightning.pytorch import Trainer
from torchgeo.main import main as torchgeo_main

from torchgeo_ssg2.cli import main as ssg2_main
from torchgeo_ssg2.inference import (
    RasterPredictDataModule,
    RasterPredictionWriter,
    predict_raster,
)
from torchgeo_ssg2.inference.output import UNCERTAINTY_DESCRIPTION
from torchgeo_ssg2.samplers import SupportBank
from torchgeo_ssg2.trainers import PTAViTTask, SSG2Task

ROOT = Path(__file__).parents[2]


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def same_files(a: dict[str, Path], b: dict[str, Path]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key].read_bytes() == b[key].read_bytes(), key


def lightning_predict(
    task: Any,
    raster: Path,
    out: Path,
    callbacks: tuple = (),
    ckpt_path: Path | None = None,
    **kwargs: Any,
) -> dict:
    writer = RasterPredictionWriter(
        str(out),
        probabilities=kwargs.pop('probabilities', False),
        uncertainty=kwargs.pop('uncertainty', False),
    )
    trainer = Trainer(
        accelerator='cpu',
        devices=1,
        logger=False,
        callbacks=[writer, *callbacks],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    dm = RasterPredictDataModule(str(raster), **kwargs)
    # nothing kept in memory
    assert trainer.predict(task, datamodule=dm, ckpt_path=ckpt_path) is None
    return writer.written


def test_trainer_predict_equals_predict_raster(raster: Path, tmp_path: Path) -> None:
    task = PixelTask()
    kwargs = {'window': 32, 'overlap': 8, 'batch_size': 3, 'mean': 0, 'std': 255}
    a = predict_raster(
        task,
        raster,
        tmp_path / 'a.tif',
        probabilities=True,
        uncertainty=True,
        progress=False,
        **kwargs,
    )
    b = lightning_predict(
        task, raster, tmp_path / 'b.tif', probabilities=True, uncertainty=True, **kwargs
    )
    same_files(a, b)
    assert listing(tmp_path) == {
        'in.tif',
        'a.tif',
        'a_probabilities.tif',
        'a_uncertainty.tif',
        'b.tif',
        'b_probabilities.tif',
        'b_uncertainty.tif',
    }


def test_writer_refuses_existing_output(raster: Path, tmp_path: Path) -> None:
    (tmp_path / 'b.tif').write_bytes(b'precious')
    with pytest.raises(FileExistsError):
        lightning_predict(PixelTask(), raster, tmp_path / 'b.tif', window=32)
    assert (tmp_path / 'b.tif').read_bytes() == b'precious'


def test_writer_cleans_up_on_error(raster: Path, tmp_path: Path) -> None:
    before = listing(tmp_path)
    with pytest.raises(RuntimeError, match='model failed'):
        lightning_predict(
            PixelTask(fail_after=1),
            raster,
            tmp_path / 'b.tif',
            window=32,
            overlap=8,
            batch_size=1,
            mean=0,
            std=255,
        )
    assert listing(tmp_path) == before


def test_datamodule_checks_bands_before_predicting(
    raster: Path, tmp_path: Path
) -> None:
    task = PixelTask(in_channels=5)
    with pytest.raises(ValueError, match='in_channels=5'):
        lightning_predict(task, raster, tmp_path / 'b.tif', window=32)
    assert task.calls == 0
    assert not (tmp_path / 'b.tif').exists()


def test_foreign_checkpoint_is_read_once(
    raster: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module that keeps no record has its ckpt_path read once per file."""
    from torchgeo_ssg2.inference import model

    task = PixelTask()
    ckpt = save_checkpoint(task, tmp_path / 'pixel.ckpt', cli=False)
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint['normalization'] = {'mean': [0.0] * 3, 'std': [255.0] * 3}
    names = ['water', 'road', 'tree', 'roof']
    checkpoint['datamodule_hyper_parameters'] = {'class_names': names}
    torch.save(checkpoint, ckpt)
    reads: list[Path] = []
    read_checkpoint = model.read_checkpoint

    def counting_read(path: Path) -> dict[str, Any]:
        reads.append(Path(path))
        return read_checkpoint(path)

    monkeypatch.setattr(model, 'read_checkpoint', counting_read)
    kwargs = {'window': 32, 'overlap': 8, 'ckpt_path': ckpt}
    written = lightning_predict(task, raster, tmp_path / 'a.tif', **kwargs)
    # the datamodule (statistics) and the writer (class names) share one read
    assert reads == [ckpt]
    # the checkpoint's statistics normalised the input, its names label the bands
    expected = predict_raster(
        task, raster, tmp_path / 'b.tif', window=32, overlap=8, mean=0, std=255
    )
    values = read(written['classes'])[0]
    assert (values == read(expected['classes'])[0]).all()
    with rasterio.open(written['classes']) as dst:
        assert json.loads(dst.tags()['CLASS_NAMES']) == names
        assert dst.descriptions == ('class (0 water, 1 road, 2 tree, 3 roof)',)
    # another prediction from the same file reads nothing; a changed file is read
    lightning_predict(task, raster, tmp_path / 'c.tif', **kwargs)
    assert reads == [ckpt]
    torch.save(checkpoint, ckpt)
    os.utime(ckpt, ns=(1, 1))
    lightning_predict(task, raster, tmp_path / 'd.tif', **kwargs)
    assert reads == [ckpt, ckpt]


class CountingPTAViT(PTAViTTask):
    """PTAViTTask counting its predicted batches."""

    calls = 0

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        type(self).calls += 1
        return super().predict_step(*args, **kwargs)


@pytest.mark.parametrize(
    ('labels', 'match'),
    [
        ({'class_names': ['a', 'b']}, '2 class names given for 3 classes'),
        ({'palette': [(0, 0, 0), (9, 9, 9)]}, 'palette of 2 colours'),
        ({'palette': [(0, 0, 0)] * 2 + [(0, 0, 300)]}, 'three values'),
    ],
)
def test_class_labels_checked_before_any_batch(
    raster: Path, tmp_path: Path, labels: dict[str, Any], match: str
) -> None:
    task = CountingPTAViT(preset='test', in_channels=3, num_classes=3)
    CountingPTAViT.calls = 0
    writer = RasterPredictionWriter(str(tmp_path / 'out.tif'), **labels)
    trainer = Trainer(
        accelerator='cpu',
        devices=1,
        logger=False,
        callbacks=[writer],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    dm = RasterPredictDataModule(str(raster), window=32, overlap=8, mean=0, std=255)
    with pytest.raises(ValueError, match=match):
        trainer.predict(task, datamodule=dm)
    assert CountingPTAViT.calls == 0
    assert listing(tmp_path) == {'in.tif'}


def test_strip_checks_class_labels_before_predicting(
    raster: Path, tmp_path: Path
) -> None:
    """A strip rank refuses names that the owner could not write, at once."""
    from torchgeo_ssg2.inference import PredictionAssembler, WindowGrid
    from torchgeo_ssg2.inference.output import RasterMeta
    from torchgeo_ssg2.inference.sharding import RasterPart

    meta = RasterMeta.from_file(raster)
    grid = WindowGrid(meta.height, meta.width, 32, 8)
    part = RasterPart(0, 1, 2, (32, meta.height), (12, len(grid)), 1)
    assembler = PredictionAssembler(
        meta,
        grid,
        tmp_path / 'out.tif',
        class_names=['a', 'b'],
        part=part,
        strip_file=tmp_path / 'out.strip',
    )
    batch = {'row_off': torch.tensor([24]), 'col_off': torch.tensor([0])}
    prediction = {'probabilities': torch.full((1, 4, 32, 32), 0.25)}
    with pytest.raises(ValueError, match='2 class names given for 4 classes'):
        assembler.add_batch(prediction, batch)
    assert listing(tmp_path) == {'in.tif'}


@pytest.fixture(scope='module')
def ssg2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    task = SSG2Task(preset='test', in_channels=3, num_classes=3, sequence_length=1)
    folder = tmp_path_factory.mktemp('ckpt')
    return save_checkpoint(task, folder / 'ssg2.ckpt')


def test_three_doors_same_file(ssg2_checkpoint: Path, tmp_path: Path) -> None:
    """torchgeo predict, torchgeo-ssg2 predict and predict_raster agree byte for byte."""
    src = make_raster(tmp_path / 'in.tif', 32, 48, crs=None, transform=None)
    mean, std = [100.0, 110.0, 120.0], [50.0, 60.0, 70.0]
    # 1. the Python function
    with pytest.warns(UserWarning, match='no CRS'):
        a = predict_raster(
            ssg2_checkpoint,
            src,
            tmp_path / 'a.tif',
            window=32,
            overlap=16,
            batch_size=2,
            mean=mean,
            std=std,
            uncertainty=True,
            progress=False,
        )
    # 2. the console command
    argv = [
        'predict',
        '--checkpoint',
        str(ssg2_checkpoint),
        '--input',
        str(src),
        '--output',
        str(tmp_path / 'b.tif'),
        '--window',
        '32',
        '--overlap',
        '16',
        '--batch-size',
        '2',
        '--uncertainty',
        '--no-progress',
        '--mean',
        *map(str, mean),
        '--std',
        *map(str, std),
    ]
    assert ssg2_main(argv) == 0
    b = {'classes': tmp_path / 'b.tif', 'uncertainty': tmp_path / 'b_uncertainty.tif'}
    same_files(a, b)
    # 3. torchgeo predict with the experiment config
    config = yaml.safe_load((ROOT / 'experiments' / 'predict_ssg2.yaml').read_text())
    config['data']['init_args'] |= {
        'input': str(src),
        'window': 32,
        'overlap': 16,
        'batch_size': 2,
        'mean': mean,
        'std': std,
    }
    config['trainer'] |= {'accelerator': 'cpu', 'enable_progress_bar': False}
    config['trainer']['callbacks'][0]['init_args'] |= {
        'output': str(tmp_path / 'c.tif'),
        'uncertainty': True,
    }
    conf = tmp_path / 'predict.yaml'
    conf.write_text(yaml.safe_dump(config))
    torchgeo_main(
        ['predict', '--config', str(conf), '--ckpt_path', str(ssg2_checkpoint)]
    )
    c = {'classes': tmp_path / 'c.tif', 'uncertainty': tmp_path / 'c_uncertainty.tif'}
    same_files(a, c)
    classes, profile = read(a['classes'])
    assert classes.shape == (1, 32, 48) and classes.max() < 3
    assert profile['crs'] is None


def test_ssg2_task_object_and_checkpoint_agree(
    ssg2_checkpoint: Path, tmp_path: Path
) -> None:
    src = make_raster(tmp_path / 'in.tif', 32, 32)
    task = SSG2Task.load_from_checkpoint(ssg2_checkpoint)
    kwargs = {'window': 32, 'overlap': 0, 'mean': 0, 'std': 255, 'progress': False}
    a = predict_raster(task, src, tmp_path / 'a.tif', **kwargs)
    b = predict_raster(ssg2_checkpoint, src, tmp_path / 'b.tif', **kwargs)
    same_files(a, b)


def test_ssg2_band_count_checked_against_checkpoint(
    ssg2_checkpoint: Path, tmp_path: Path
) -> None:
    src = make_raster(tmp_path / 'in.tif', 32, 32, count=4)
    with pytest.raises(ValueError, match=r'4 bands.*in_channels=3'):
        predict_raster(ssg2_checkpoint, src, tmp_path / 'out.tif')
    assert listing(tmp_path) == {'in.tif'}


def test_ptavit_checkpoint(tmp_path: Path) -> None:
    ckpt = save_checkpoint(
        PTAViTTask(preset='test', in_channels=3, num_classes=2),
        tmp_path / 'p.ckpt',
        cli=False,  # a checkpoint without class path: the task classes are tried
    )
    src = make_raster(tmp_path / 'in.tif', 20, 40)
    out = predict_raster(
        ckpt,
        src,
        tmp_path / 'out.tif',
        window=32,
        overlap=8,
        mean=0,
        std=255,
        progress=False,
    )
    classes, _ = read(out['classes'])
    assert classes.shape == (1, 20, 40) and classes.max() < 2
    # PTAViT gives its normalised entropy as the uncertainty
    with_uncertainty = predict_raster(
        ckpt,
        src,
        tmp_path / 'u.tif',
        window=32,
        overlap=8,
        uncertainty=True,
        mean=0,
        std=255,
        progress=False,
    )
    assert with_uncertainty['classes'].read_bytes() == out['classes'].read_bytes()
    with rasterio.open(with_uncertainty['uncertainty']) as dst:
        values = dst.read(1)
        assert dst.descriptions == (UNCERTAINTY_DESCRIPTION,)
    assert ((values >= 0) & (values <= 1)).all()


class ImageList(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int) -> None:
        gen = torch.Generator().manual_seed(n)
        self.images = [torch.rand(3, size, size, generator=gen) * 255 for _ in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {'image': self.images[index]}


def test_supports_from_a_bank(ssg2_checkpoint: Path, tmp_path: Path) -> None:
    src = make_raster(tmp_path / 'in.tif', 32, 32)
    kwargs: dict[str, Any] = {'window': 32, 'overlap': 0, 'mean': 0, 'std': 255}
    task = SSG2Task.load_from_checkpoint(ssg2_checkpoint)
    bank = SupportBank(ImageList(3, 32), sequence_length=1)
    a = predict_raster(
        task,
        src,
        tmp_path / 'a.tif',
        supports='bank',
        support_bank=bank,
        probabilities=True,
        progress=False,
        **kwargs,
    )
    b = lightning_predict(
        task,
        src,
        tmp_path / 'b.tif',
        supports='bank',
        support_bank=bank,
        probabilities=True,
        **kwargs,
    )
    same_files(a, b)
    # supports matter: the raster's own window as support gives another result
    c = predict_raster(
        task, src, tmp_path / 'c.tif', probabilities=True, progress=False, **kwargs
    )
    pa, _ = read(a['probabilities'])
    pc, _ = read(c['probabilities'])
    assert not (pa == pc).all()
    # chips of another size than the windows are refused before predicting
    wrong = SupportBank(ImageList(3, 16), sequence_length=1)
    with pytest.raises(ValueError, match='support bank gives supports of shape'):
        predict_raster(
            task,
            src,
            tmp_path / 'd.tif',
            supports='bank',
            support_bank=wrong,
            progress=False,
            **kwargs,
        )
    with pytest.raises(ValueError, match='needs a support_bank'):
        predict_raster(
            task, src, tmp_path / 'd.tif', supports='bank', progress=False, **kwargs
        )
    assert not (tmp_path / 'd.tif').exists()


def test_bank_supports_from_the_command_line(
    ssg2_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchgeo_ssg2.samplers.inference import ImageChips

    src = make_raster(tmp_path / 'in.tif', 40, 48)
    bank_dir = tmp_path / 'bank'
    bank_dir.mkdir()
    make_raster(bank_dir / 'x.tif', 64, 70, seed=5)  # 4 chips of 32 (edges left out)
    make_raster(bank_dir / 'y.tif', 32, 32, seed=6)  # 1 chip
    chips = ImageChips(sorted(bank_dir.iterdir()), 32)
    assert len(chips) == 5 and chips[4]['image'].shape == (3, 32, 32)
    assert chips.files == sorted(bank_dir.iterdir())
    options = ['--window', '32', '--overlap', '8', '--mean', '0', '--std', '255']
    argv = ['predict', '--checkpoint', str(ssg2_checkpoint), '--input', str(src)]
    argv += [*options, '--supports', 'bank', '--bank-images', str(bank_dir)]
    argv += ['--sequence-length', '2', '--no-progress', '--probabilities']
    assert ssg2_main([*argv, '--output', str(tmp_path / 'cli.tif')]) == 0
    task = SSG2Task.load_from_checkpoint(ssg2_checkpoint)
    a = predict_raster(
        task,
        src,
        tmp_path / 'py.tif',
        window=32,
        overlap=8,
        mean=0,
        std=255,
        supports='bank',
        support_bank=SupportBank(chips, sequence_length=2),
        sequence_length=2,
        probabilities=True,
        progress=False,
    )
    same_files(
        a,
        {
            'classes': tmp_path / 'cli.tif',
            'probabilities': tmp_path / 'cli_probabilities.tif',
        },
    )
    capsys.readouterr()
    no_images = [a for a in argv if a not in ('--bank-images', str(bank_dir))]
    assert ssg2_main([*no_images, '--output', str(tmp_path / 'e.tif')]) == 1
    assert '--supports bank needs --bank-images' in capsys.readouterr().err
    # a bank image may not be overwritten either
    assert ssg2_main([*argv, '--output', str(bank_dir / 'y.tif'), '--overwrite']) == 1
    assert 'support-bank image' in capsys.readouterr().err


def test_ssg2_raster_smaller_than_window(ssg2_checkpoint: Path, tmp_path: Path) -> None:
    src = make_raster(tmp_path / 'in.tif', 20, 27)
    out = predict_raster(
        ssg2_checkpoint,
        src,
        tmp_path / 'out.tif',
        window=32,
        overlap=8,
        mean=0,
        std=255,
        uncertainty=True,
        progress=False,
    )
    classes, profile = read(out['classes'])
    assert classes.shape == (1, 20, 27) and classes.max() < 3
    assert profile['transform'] == TRANSFORM


def test_ssg2_window_must_be_multiple_of_32(
    ssg2_checkpoint: Path, tmp_path: Path
) -> None:
    src = make_raster(tmp_path / 'in.tif', 40, 40)
    with pytest.raises(ValueError, match='multiple of 32'):
        predict_raster(ssg2_checkpoint, src, tmp_path / 'out.tif', window=40, overlap=8)
    assert listing(tmp_path) == {'in.tif'}


def test_batches_of_an_input_with_nodata_carry_its_validity(tmp_path: Path) -> None:
    from torchgeo_ssg2.inference import PredictionAssembler, RasterMeta, WindowGrid

    source = make_raster(tmp_path / 'in.tif', 20, 20, nodata=0, nodata_border=2)
    meta = RasterMeta.from_file(source)
    assembler = PredictionAssembler(
        meta, WindowGrid(20, 20, 16, 4), tmp_path / 'out.tif'
    )
    batch = {'row_off': torch.tensor([0]), 'col_off': torch.tensor([0])}
    prediction = {'probabilities': torch.full((1, 2, 16, 16), 0.5)}
    with pytest.raises(KeyError, match='must carry "valid"'):
        assembler.add_batch(prediction, batch)
    assembler.abort()
    assert listing(tmp_path) == {'in.tif'}


def test_gdal_cache_holds_a_row_of_blocks_while_predicting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning.pytorch.callbacks import Callback
    from rasterio.env import get_gdal_config

    from torchgeo_ssg2.inference import output

    # one block of 4096 rows x 128 columns x 3 bands, with a nodata mask: 2 MB,
    # above a 1 MB cap
    source = make_raster(tmp_path / 'in.tif', 4096, 128, nodata=0, block=(4096, 128))
    monkeypatch.setattr(output, 'GDAL_CACHE_MB', 1)
    seen = []

    class CacheProbe(Callback):
        def on_predict_batch_start(self, *args: Any) -> None:
            seen.append(get_gdal_config('GDAL_CACHEMAX'))

    written = lightning_predict(
        PixelTask(),
        source,
        tmp_path / 'out.tif',
        callbacks=(CacheProbe(),),
        window=128,
        overlap=0,
        batch_size=8,
        mean=0,
        std=255,
    )
    assert seen and set(seen) == {4096 * 128 * 4 * 5 // 4}
    assert read(written['classes'])[0].shape == (1, 4096, 128)
