import re
from pathlib import Path

import lightning
import numpy as np
import pytest
import rasterio
import torch
from inference_fakes import PixelModel, make_raster

from torchgeo_ssg2.inference import predict_raster
from torchgeo_ssg2.inference.model import (
    check_device,
    load_task,
    resolve_normalization,
)
from torchgeo_ssg2.inference.output import sweep_staging
from torchgeo_ssg2.normalization import Normalization
from torchgeo_ssg2.staging import staging_path
from torchgeo_ssg2.trainers import PTAViTTask

STATS = Normalization(mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0), dtype='uint8')


def save(path: Path, task: PTAViTTask, **extra: object) -> Path:
    ckpt = {
        'state_dict': task.state_dict(),
        'hyper_parameters': dict(task.hparams),
        'pytorch-lightning_version': lightning.__version__,
    }
    task.on_save_checkpoint(ckpt)
    torch.save(ckpt | extra, path)
    return path


def test_task_built_from_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = PTAViTTask(preset='test', in_channels=3, num_classes=2)
    task.set_normalization(STATS)
    loaded, ckpt = load_task(save(tmp_path / 'a.ckpt', task))
    assert type(loaded) is PTAViTTask and not loaded.training
    assert loaded.normalization == STATS
    for key, value in task.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert resolve_normalization(loaded, ckpt) == (STATS, 'checkpoint')


def test_mismatched_state_dict_is_summarised(tmp_path: Path) -> None:
    task = PTAViTTask(preset='test', in_channels=3, num_classes=2)
    n = len(task.state_dict())
    path = save(tmp_path / 'a.ckpt', task)
    ckpt = torch.load(path, weights_only=True)
    ckpt['hyper_parameters']['in_channels'] = 4  # weights of 3 bands, model of 4
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r'1 tensors of another shape') as info:
        load_task(path)
    assert ' vs (' in str(info.value)
    ckpt['hyper_parameters']['in_channels'] = 3
    ckpt['state_dict'] = {f'x.{k}': v for k, v in ckpt['state_dict'].items()}
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match='keys') as info:
        load_task(path)
    message = str(info.value)
    assert re.search(r'\d+ missing keys \(model\.', message)
    assert f'{n} unexpected keys (x.' in message
    assert message.count('x.') == 3  # the first few names, not all of them


def test_normalization_is_never_guessed() -> None:
    model = PixelModel()
    with pytest.raises(ValueError, match='--mean and --std'):
        resolve_normalization(model)
    with pytest.raises(ValueError, match='both --mean and --std'):
        resolve_normalization(model, mean=[0.0])
    with pytest.raises(ValueError, match='the checkpoint records none'):
        resolve_normalization(model, {'state_dict': {}})
    norm, source = resolve_normalization(model, mean=0, std=255)
    assert (norm.mean, norm.std, source) == ((0.0,), (255.0,), 'arguments')
    dm = {'datamodule_hyper_parameters': {'normalization': STATS.to_dict()}}
    assert resolve_normalization(model, dm) == (STATS, 'checkpoint')


def test_check_device() -> None:
    assert check_device('cpu') == torch.device('cpu')
    with pytest.raises(ValueError, match='unknown device'):
        check_device('gpu')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda' is not available"):
            check_device('cuda')


def test_sweep_keeps_running_and_protected_files(tmp_path: Path) -> None:
    out = tmp_path / 'out.tif'
    gone = 2**22 + 12345  # above the default pid_max: no such process
    stale = [
        staging_path(out, gone),
        staging_path(tmp_path / 'out_probabilities.tif', gone),
    ]
    mine = staging_path(out)
    protected = staging_path(tmp_path / 'out_uncertainty.tif', gone)
    other = tmp_path / 'other.tif.partial-1'
    for path in [*stale, mine, protected, other]:
        path.write_bytes(b'x')
    sweep_staging(out, {'input raster': protected})
    assert not any(p.exists() for p in stale)
    assert mine.exists() and protected.exists() and other.exists()


def test_read_error_names_file_and_window(tmp_path: Path) -> None:
    src = tmp_path / 'in.tif'
    rng = np.random.default_rng(0)
    profile = {
        'driver': 'GTiff',
        'height': 64,
        'width': 64,
        'count': 1,
        'dtype': 'uint8',
        'tiled': True,
        'blockxsize': 16,
        'blockysize': 16,
        'compress': 'deflate',
    }
    with rasterio.open(src, 'w', **profile) as dst:
        dst.write(rng.integers(0, 255, (1, 64, 64), dtype='uint8'))
    with rasterio.open(src) as f:
        offset = int(f.get_tag_item('BLOCK_OFFSET_1_3', 'TIFF', bidx=1))
    data = bytearray(src.read_bytes())
    data[offset : offset + 64] = b'\xff' * 64  # corrupt one block of the last rows
    src.write_bytes(bytes(data))
    before = {p.name for p in tmp_path.iterdir()}
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.Softmax(dim=1))
    with pytest.raises(OSError, match=rf'cannot read input raster {src} at rows'):
        predict_raster(
            model,
            src,
            tmp_path / 'out.tif',
            window=32,
            overlap=0,
            mean=0,
            std=1,
            progress=False,
        )
    assert {p.name for p in tmp_path.iterdir()} == before


def test_floating_input_without_nodata(tmp_path: Path) -> None:
    src = make_raster(tmp_path / 'in.tif', 40, 40, dtype='float32')
    with rasterio.open(src, 'r+') as dst:
        band = dst.read(1)
        band[:5] = np.inf
        dst.write(band, 1)
    out = predict_raster(
        PixelModel(),
        src,
        tmp_path / 'out.tif',
        window=32,
        overlap=8,
        mean=0,
        std=255,
        progress=False,
    )
    with rasterio.open(out['classes']) as dst:
        classes = dst.read(1)
    assert (classes[:5] == 255).all() and (classes[5:] < 4).all()


def test_a_plain_module_predicts_without_importing_the_tasks(tmp_path: Path) -> None:
    import subprocess
    import sys

    make_raster(tmp_path / 'in.tif', 40, 40)
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from inference_fakes import PixelModel
from torchgeo_ssg2.inference import predict_raster
from torchgeo_ssg2.inference.model import is_task, needs_supports
model = PixelModel(3, 4)
predict_raster(model, {str(tmp_path / 'in.tif')!r}, {str(tmp_path / 'out.tif')!r},
               window=16, overlap=4, mean=0, std=255, progress=False)
assert not is_task(model) and not needs_supports(model)
loaded = [m for m in ('torchgeo_ssg2.trainers', 'torchgeo.tasks', 'timm')
          if m in sys.modules]
assert not loaded, loaded
from torchgeo_ssg2.trainers import PTAViTTask, SSG2Task
task = SSG2Task(preset='test', in_channels=3, num_classes=2)
assert is_task(task) and is_task(task, 'SSG2Task') and needs_supports(task)
assert not is_task(task, 'PTAViTTask') and not is_task(model)
assert is_task(PTAViTTask(preset='test', in_channels=3, num_classes=2))
"""
    done = subprocess.run(
        [sys.executable, '-c', script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / 'out.tif').is_file()
