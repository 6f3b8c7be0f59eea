import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from torchgeo_ssg2.models import SSG2, PTAViT
from torchgeo_ssg2.models.convert import (
    convert_official_checkpoint,
    from_official_state_dict,
    official_key_map,
    read_official_state_dict,
    to_official_state_dict,
)

C, NUM_CLASSES = 3, 2


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and buffer perturbed at random, so that a swapped tensor shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(0.05 * torch.rand(value.shape, generator=gen))
            else:
                value.fill_(int(torch.randint(1, 100, (), generator=gen)))
    return model


@pytest.fixture(scope='module')
def ssg2() -> SSG2:
    return _randomised(SSG2(C, NUM_CLASSES, preset='tiny'))  # type: ignore[return-value]


@pytest.fixture(scope='module')
def ptavit() -> PTAViT:
    return _randomised(PTAViT(C, NUM_CLASSES, preset='tiny'))  # type: ignore[return-value]


def _official(model: nn.Module) -> dict[str, torch.Tensor]:
    return to_official_state_dict(model.state_dict(), model)  # type: ignore[arg-type]


@pytest.mark.parametrize('kind', ['ssg2', 'ptavit', 'ssg2-deeper'])
def test_round_trip_bit_identical(kind: str, ssg2: SSG2, ptavit: PTAViT) -> None:
    models = {'ssg2': ssg2, 'ptavit': ptavit}
    if kind not in models:  # more 3D blocks and deeper stages than any preset
        deeper = SSG2(C, NUM_CLASSES, preset='test', blocks_3d=2, depths=(1, 2, 3, 1))
        models[kind] = _randomised(deeper, seed=3)  # type: ignore[assignment]
    model = models[kind]
    names = official_key_map(model)
    assert len(set(names.values())) == len(names)  # one official key per tensor
    official = _official(model)
    assert set(official) == set(names.values())
    back = from_official_state_dict(official, model)
    state = model.state_dict()
    assert list(back) == list(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype
        assert torch.equal(back[key], value), key
    fresh = copy.deepcopy(model)
    for value in fresh.state_dict().values():
        value.zero_()
    fresh.load_state_dict(back)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize(
    ('ours', 'official'),
    [
        # first block of a stage: down-sampling MBConv, no residual wrapper
        (
            'encoder.stages.0.0.mbconv.conv_in.weight',
            'features.stages_dn.0.stage.0.0.0.weight',
        ),
        (
            'encoder.stages.2.1.mbconv.se.expand.weight',
            'features.stages_dn.2.stage.1.0.fn.6.gate.3.weight',
        ),
        (
            'decoder.stages.0.0.att.compact.bias',
            'features.stages_up.0.stage.0.1.fn.att.patch_attention.shrink_2_1.bias',
        ),
        (
            'head.segm_logits.1.1.weight',
            'head.final_segm_logits.logits.1.norm_layer.weight',
        ),
        ('head.bound_act.gamma', 'head.CrispSigm.gamma'),
    ],
)
def test_official_names_ptavit(ptavit: PTAViT, ours: str, official: str) -> None:
    assert official_key_map(ptavit)[ours] == official


@pytest.mark.parametrize(
    ('ours', 'official'),
    [
        ('encoder.encoder.conv1.0.weight', 'features.features.conv1.conv2d.weight'),
        (
            'encoder.fuse_first.att.key_value.1.bias',
            'features.features.fuse_first.relatt.kv.norm_layer.bias',
        ),
        (
            'encoder.fusions.3.fuse.0.weight',
            'features.features.fuse.3.fuse.conv2d.weight',
        ),
        (
            'head.difference.dist_eq.0.weight',
            'head.head_diffs.dist_Equalizer.conv2d.weight',
        ),
        (
            'head.sequence.0.mbconv.net.6.reduce.weight',
            'head.conv_sequence.stage.0.0.fn.6.gate.1.weight',
        ),
        (
            'head.sequence.0.att.query.0.weight',
            'head.conv_sequence.stage.0.1.fn.att.query.conv3d.weight',
        ),
    ],
)
def test_official_names_ssg2(ssg2: SSG2, ours: str, official: str) -> None:
    assert official_key_map(ssg2)[ours] == official


def test_missing_unmatched_and_misshaped_listed(ptavit: PTAViT) -> None:
    official = _official(ptavit)
    names = list(official)
    for name in names[:7]:
        del official[name]
    official['features.extra.weight'] = torch.zeros(1)
    official[names[10]] = torch.zeros(3, 1)
    with pytest.raises(ValueError, match='7 official tensors missing') as info:
        from_official_state_dict(official, ptavit)
    message = str(info.value)
    assert names[0] in message and 'and 2 more' in message
    assert '1 unmatched official tensors: features.extra.weight' in message
    assert f'1 mis-shaped tensors: {names[10]} (3, 1)' in message


def test_wrong_model_kind(ptavit: PTAViT) -> None:
    with pytest.raises(TypeError, match='SSG2 or a PTAViT'):
        official_key_map(nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='missing'):
        from_official_state_dict(_official(ptavit), SSG2(C, NUM_CLASSES, preset='tiny'))


class _Opaque:
    """Not loadable with weights_only=True."""


@pytest.mark.parametrize('layout', ['bare', 'ddp', 'nested'])
def test_read_official_layouts(tmp_path: Path, ptavit: PTAViT, layout: str) -> None:
    official = _official(ptavit)
    if layout == 'ddp':
        obj: object = {f'module.{k}': v for k, v in official.items()}
    elif layout == 'nested':
        obj = {'epoch': 3, 'model_state_dict': official, 'optimizer': {'lr': 1e-3}}
    else:
        obj = official
    path = tmp_path / 'official.pt'
    torch.save(obj, path)
    state = read_official_state_dict(path)
    assert list(state) == list(official)


def test_read_official_rejects(tmp_path: Path) -> None:
    unsafe = tmp_path / 'unsafe.pt'
    torch.save({'x': _Opaque()}, unsafe)
    with pytest.raises(ValueError, match=f'{unsafe}: not a weights-only'):
        read_official_state_dict(unsafe)
    empty = tmp_path / 'empty.pt'
    torch.save({'epoch': 1}, empty)
    with pytest.raises(ValueError, match=f'{empty}: holds no state dict'):
        read_official_state_dict(empty)
    with pytest.raises(FileNotFoundError, match='nothing'):
        read_official_state_dict(tmp_path / 'nothing.pt')


@pytest.fixture
def official_ssg2(tmp_path: Path) -> tuple[Path, SSG2]:
    model = _randomised(SSG2(5, NUM_CLASSES, preset='test'), seed=1)
    model.eval()
    path = tmp_path / 'official.pt'
    torch.save({f'module.{k}': v for k, v in _official(model).items()}, path)
    return path, model  # type: ignore[return-value]


def test_convert_checkpoint_loads_and_predicts(
    tmp_path: Path, official_ssg2: tuple[Path, SSG2]
) -> None:
    from torchgeo_ssg2.inference.model import load_task
    from torchgeo_ssg2.normalization import Normalization

    official, model = official_ssg2
    out = tmp_path / 'converted.ckpt'
    mean, std = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 2.0, 3.0, 3.0, 4.0]
    convert_official_checkpoint(
        official, out, 'ssg2', 'test', 5, NUM_CLASSES, mean=mean, std=std
    )
    ckpt = torch.load(out, weights_only=True)
    assert ckpt['normalization'] == {
        'mean': mean,
        'std': std,
        'bands': None,
        'dtype': None,
    }
    assert Normalization.from_checkpoint(ckpt) == Normalization(tuple(mean), tuple(std))
    assert ckpt['hyper_parameters']['preset'] == 'test'
    assert all(k.startswith(('model.', 'normalization_')) for k in ckpt['state_dict'])
    task, _ = load_task(out)
    assert not task.training
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 5, 32, 32, generator=gen)
    support = torch.randn(1, 2, 5, 32, 32, generator=gen)
    with torch.no_grad():
        got = task.model.forward_inference(image, support)['target']
        want = model.forward_inference(image, support)['target']
    assert torch.equal(got, want)


def test_torchgeo_fit_and_test_from_converted_checkpoint(tmp_path: Path) -> None:
    # Lightning's CLI takes the model's hyper-parameters from the checkpoint:
    # convert --config records the fine-tuning config's (ignore_index 255 here)
    from torchgeo.main import main

    from torchgeo_ssg2.cli import main as ssg2_main

    config = os.path.join('tests', 'conf', 'ptavit_dubai.yaml')
    model = _randomised(PTAViT(3, 5, preset='test'), seed=2)
    official = tmp_path / 'official.pt'
    torch.save(_official(model), official)
    out = tmp_path / 'ptavit.ckpt'
    ssg2_main(
        [
            'convert',
            '--official',
            str(official),
            '--config',
            config,
            '--output',
            str(out),
        ]
    )
    hparams = torch.load(out, weights_only=True)['hyper_parameters']
    assert hparams['ignore_index'] == 255 and hparams['labels'][0] == 'Building'
    args = ['--config', config, '--trainer.accelerator', 'cpu', '--ckpt_path', str(out)]
    args += ['--trainer.default_root_dir', str(tmp_path / 'logs')]
    main(['fit', *args, '--trainer.max_steps', '1', '--trainer.limit_val_batches', '0'])
    main(['test', *args, '--trainer.limit_test_batches', '1'])
    (saved,) = (tmp_path / 'logs').rglob('*.ckpt')
    tuned = torch.load(saved, weights_only=False)
    assert tuned['global_step'] == 1
    key = 'model.head.segm_logits.3.weight'
    start = model.state_dict()[key.removeprefix('model.')]
    assert not torch.equal(tuned['state_dict'][key], start)
    assert (tuned['state_dict'][key] - start).abs().max() < 0.1


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    code = 'import sys; from torchgeo_ssg2.cli import main; sys.exit(main())'
    return subprocess.run(
        [sys.executable, '-c', code, 'convert', *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_cli_convert(tmp_path: Path, official_ssg2: tuple[Path, SSG2]) -> None:
    from torchgeo_ssg2.cli import main

    official, _ = official_ssg2
    out = tmp_path / 'out.ckpt'
    common = ['--model', 'ssg2', '--preset', 'test', '--in-channels', '5']
    args = [*common, '--num-classes', str(NUM_CLASSES)]
    done = _cli('--official', str(official), '--output', str(out), *args)
    assert done.returncode == 0, done.stderr
    assert torch.load(out, weights_only=True)['epoch'] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['official.pt', 'out.ckpt']

    wrong = tmp_path / 'wrong.ckpt'
    cases = [
        ([str(out), *args], 'exists'),
        ([str(official), *args], 'overwrite the input'),
        ([str(wrong), *common, '--num-classes', '4'], 'mis-shaped'),
        ([str(wrong), *args, '--mean', '1', '2', '--std', '1', '1'], '2 values'),
        ([str(wrong), *args, '--mean', '1'], 'give both'),
    ]
    for output_and_args, message in cases:
        with pytest.raises(SystemExit) as info:
            main(['convert', '--official', str(official), '--output', *output_and_args])
        text = str(info.value.code)
        assert message in text and len(text.splitlines()) == 1
        if message == 'mis-shaped':
            assert str(official) in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ['official.pt', 'out.ckpt']


def test_cli_convert_killed_leaves_nothing(
    tmp_path: Path, official_ssg2: tuple[Path, SSG2]
) -> None:
    official, _ = official_ssg2
    out = tmp_path / 'killed.ckpt'
    code = (
        'import os, signal, torch, sys\n'
        'from torchgeo_ssg2.cli import main\n'
        'def save(obj, f, *a, **k):\n'
        '    f.write(b"partial")\n'
        '    f.flush()\n'
        '    os.kill(os.getpid(), signal.SIGKILL)\n'
        'torch.save = save\n'
        'sys.exit(main())\n'
    )
    args = ['--model', 'ssg2', '--preset', 'test', '--in-channels', '5']
    done = subprocess.run(
        [sys.executable, '-c', code, 'convert', '--official', str(official),
         '--output', str(out), *args, '--num-classes', str(NUM_CLASSES)],
        capture_output=True,
        text=True,
        env={**os.environ, 'OMP_NUM_THREADS': '1'},
        check=False,
    )  # fmt: skip
    assert done.returncode == -9
    assert sorted(p.name for p in tmp_path.iterdir()) == ['official.pt']


def test_converted_checkpoint_predicts_a_raster(
    tmp_path: Path, official_ssg2: tuple[Path, SSG2]
) -> None:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    official, _ = official_ssg2
    ckpt = convert_official_checkpoint(
        official,
        tmp_path / 'converted.ckpt',
        'ssg2',
        'test',
        5,
        NUM_CLASSES,
        mean=[100.0] * 5,
        std=[50.0] * 5,
        task_kwargs={'sequence_length': 2},
    )
    assert (
        torch.load(ckpt, weights_only=True)['hyper_parameters']['sequence_length'] == 2
    )
    raster = tmp_path / 'in.tif'
    profile = {
        'driver': 'GTiff',
        'height': 64,
        'width': 96,
        'count': 5,
        'dtype': 'uint8',
        'crs': 'EPSG:32633',
        'transform': from_origin(500000, 4000000, 0.5, 0.5),
    }
    rng = np.random.default_rng(0)
    with rasterio.open(raster, 'w', **profile) as dst:
        dst.write(rng.integers(0, 255, (5, 64, 96), dtype='uint8'))
    out = tmp_path / 'out.tif'
    code = 'import sys; from torchgeo_ssg2.cli import main; sys.exit(main())'
    args = ['predict', '--checkpoint', str(ckpt), '--input', str(raster)]
    args += ['--output', str(out), '--window', '64', '--overlap', '0', '--no-progress']
    done = subprocess.run(
        [sys.executable, '-c', code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, 'OMP_NUM_THREADS': '1'},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with rasterio.open(out) as src:
        classes = src.read(1)
        assert src.crs == profile['crs'] and classes.shape == (64, 96)
    assert set(np.unique(classes)) <= set(range(NUM_CLASSES))


def test_config_sequence_length_from_data_section(
    tmp_path: Path, official_ssg2: tuple[Path, SSG2]
) -> None:
    # a fit config gives SSG2's T once, as the datamodule's sequence_length
    from torchgeo_ssg2.cli import main as ssg2_main
    from torchgeo_ssg2.trainers import SSG2Task

    official, _ = official_ssg2
    config = tmp_path / 'fit.yaml'
    config.write_text(
        'model:\n'
        '  class_path: torchgeo_ssg2.trainers.SSG2Task\n'
        '  init_args: {preset: test, in_channels: 5, num_classes: 2}\n'
        'data:\n'
        '  class_path: torchgeo_ssg2.datamodules.DubaiAerialDataModule\n'
        '  init_args: {sequence_length: 3}\n'
    )
    out = tmp_path / 'converted.ckpt'
    args = ['--official', str(official), '--config', str(config), '--output', str(out)]
    ssg2_main(['convert', *args])
    saved = torch.load(out, weights_only=True)
    assert saved['hyper_parameters']['sequence_length'] == 3
    assert saved['sequence_length'] == 3
    assert SSG2Task.load_from_checkpoint(out).sequence_length == 3
