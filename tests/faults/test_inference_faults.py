"""``torchgeo-ssg2 predict`` on hostile or broken inputs, in real subprocesses."""

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from inference_fault_helpers import (
    UINT8_STATS,
    CodeOnLoad,
    cli_command,
    environment,
    read,
    run_cli,
    write_checkpoint,
    write_raster,
)

from torchgeo_ssg2.inference import predict_raster
from torchgeo_ssg2.inference.model import read_checkpoint

ROOT = Path(__file__).parents[2]

#: Window options of the small predictions.
WINDOWS = ('--window', '32', '--overlap', '8', '--no-progress')


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def predict(
    ckpt: Path, src: Path, out: Path, *args: str
) -> subprocess.CompletedProcess:
    """``torchgeo-ssg2 predict`` of *src* into *out*."""
    return run_cli(
        'predict',
        '--checkpoint',
        str(ckpt),
        '--input',
        str(src),
        '--output',
        str(out),
        *WINDOWS,
        *args,
    )


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PTAViTTask checkpoint with uint8 statistics."""
    return write_checkpoint(tmp_path_factory.mktemp('ckpt') / 'task.ckpt')


def test_pickle_payload_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / 'marker'
    bad = write_checkpoint(tmp_path / 'bad.ckpt', extra={'x': CodeOnLoad(marker)})
    src = write_raster(tmp_path / 'in.tif', 40, 40)
    result = predict(bad, src, tmp_path / 'out.tif')
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert 'bad.ckpt refused' in result.stderr and 'builtins.exec' in result.stderr
    assert 'add_safe_globals' in result.stderr  # how to trust the file on purpose
    assert not marker.exists()
    assert listing(tmp_path) == {'bad.ckpt', 'in.tif'}
    # the Python API refuses it the same way
    with pytest.raises(ValueError, match='refused'):
        read_checkpoint(bad)
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    torch.load(bad, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ('content', 'reason'),
    [
        (b'not a checkpoint', 'not a PyTorch checkpoint'),
        (b'\x80\x02garbage', 'cannot read checkpoint'),
        (b'PK\x03\x04 truncated', 'cannot read checkpoint'),
    ],
)
def test_unreadable_checkpoint_is_named_without_unsafe_advice(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    bad = tmp_path / 'bad.ckpt'
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=reason) as info:
        read_checkpoint(bad)
    message = str(info.value)
    assert str(bad) in message
    # torch's own message suggests weights_only=False, which could run code
    assert 'weights_only' not in message
    assert 'arbitrary code' not in message


def test_class_path_is_checked_before_import(tmp_path: Path) -> None:
    bad = write_checkpoint(tmp_path / 'zen.ckpt', class_path='this.s')
    src = write_raster(tmp_path / 'in.tif', 40, 40)
    result = predict(bad, src, tmp_path / 'out.tif')
    assert result.returncode == 1
    assert 'holds a this.s, not an SSG2Task or PTAViTTask' in result.stderr
    assert 'Beautiful is better than ugly' not in result.stdout + result.stderr
    assert not (tmp_path / 'out.tif').exists()


def test_output_equal_to_input_is_refused_with_overwrite(
    ckpt: Path, tmp_path: Path
) -> None:
    src = write_raster(tmp_path / 'in.tif', 40, 40)
    before = src.read_bytes()
    result = predict(ckpt, src, src, '--overwrite')
    assert result.returncode == 1
    assert f'output {src} is {src} (the input raster)' in result.stderr
    assert src.read_bytes() == before
    assert listing(tmp_path) == {'in.tif'}


def test_sidecar_naming_the_input_is_refused(ckpt: Path, tmp_path: Path) -> None:
    src = write_raster(tmp_path / 'out_probabilities.tif', 40, 40)
    before = src.read_bytes()
    out = tmp_path / 'out.tif'
    result = predict(ckpt, src, out, '--overwrite', '--probabilities')
    assert result.returncode == 1
    assert '(the input raster)' in result.stderr
    assert src.read_bytes() == before
    assert listing(tmp_path) == {'out_probabilities.tif'}


def test_links_to_the_input_or_checkpoint_are_refused(
    ckpt: Path, tmp_path: Path
) -> None:
    src = write_raster(tmp_path / 'in.tif', 40, 40)
    before = src.read_bytes()
    os.link(src, tmp_path / 'hard.tif')
    result = predict(ckpt, src, tmp_path / 'hard.tif', '--overwrite')
    assert result.returncode == 1
    assert '(the input raster)' in result.stderr
    assert src.read_bytes() == before
    # a symbolic link to the checkpoint, through the Python API
    (tmp_path / 'sym.tif').symlink_to(ckpt)
    ckpt_bytes = ckpt.read_bytes()
    with pytest.raises(ValueError, match=r'\(the checkpoint\)'):
        predict_raster(ckpt, src, tmp_path / 'sym.tif', overwrite=True)
    assert ckpt.read_bytes() == ckpt_bytes
    assert listing(tmp_path) == {'in.tif', 'hard.tif', 'sym.tif'}


@pytest.fixture(scope='module')
def big(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A raster with a few hundred windows and its prediction, made in-process."""
    folder = tmp_path_factory.mktemp('big')
    src = write_raster(folder / 'in.tif', 384, 384)
    ref = folder / 'ref.tif'
    predict_raster(ckpt, src, ref, window=32, overlap=16, batch_size=1, progress=False)
    return src, ref


def lightning_predict_command(
    ckpt: Path, src: Path, out: Path, folder: Path
) -> list[str]:
    """``torchgeo-ssg2 predict --config ...`` (Lightning's CLI) for one raster."""
    config = yaml.safe_load((ROOT / 'experiments' / 'predict_ssg2.yaml').read_text())
    config['model']['class_path'] = 'torchgeo_ssg2.trainers.PTAViTTask'
    config['data']['init_args'] |= {
        'input': str(src),
        'window': 32,
        'overlap': 16,
        'batch_size': 1,
    }
    config['trainer'] |= {'accelerator': 'cpu', 'enable_progress_bar': False}
    config['trainer']['callbacks'][0]['init_args']['output'] = str(out)
    conf = folder / 'predict.yaml'
    conf.write_text(yaml.safe_dump(config))
    return cli_command('predict', '--config', str(conf), '--ckpt_path', str(ckpt))


@pytest.mark.parametrize('door', ['raster predictor', 'lightning cli'])
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL])
def test_killed_prediction_then_rerun(
    ckpt: Path,
    big: tuple[Path, Path],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    sig: signal.Signals,
    door: str,
) -> None:
    src, ref = big
    out = tmp_path / 'out.tif'
    args = ['--window', '32', '--overlap', '16', '--batch-size', '1', '--no-progress']
    command = cli_command(
        'predict', '--checkpoint', str(ckpt), '--input', str(src), '--output', str(out)
    )
    killed = [*command, *args]
    if door == 'lightning cli':
        killed = lightning_predict_command(
            ckpt, src, out, tmp_path_factory.mktemp('config')
        )
    proc = subprocess.Popen(
        killed,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    staging = tmp_path / f'out.tif.partial-{proc.pid}'
    deadline = time.monotonic() + 240
    while not staging.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert staging.exists(), 'the prediction ended before it was killed'
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert not out.exists()
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, stderr
        assert 'stopped by SIGTERM; no output written' in stderr
        assert 'Traceback' not in stderr
        assert listing(tmp_path) == set()
    else:
        assert proc.returncode == -signal.SIGKILL
        assert listing(tmp_path) == {staging.name}  # what kill -9 leaves
    rerun = run_cli(*command[3:], *args)
    assert rerun.returncode == 0, rerun.stderr
    assert listing(tmp_path) == {'out.tif'}
    np.testing.assert_array_equal(read(out), read(ref))


@pytest.mark.parametrize(('umask', 'mode'), [(0o022, 0o644), (0o077, 0o600)])
def test_output_modes_follow_the_umask(
    ckpt: Path, tmp_path: Path, umask: int, mode: int
) -> None:
    src = write_raster(tmp_path / 'in.tif', 40, 40)
    out = tmp_path / 'out.tif'
    result = run_cli(
        'predict',
        '--checkpoint',
        str(ckpt),
        '--input',
        str(src),
        '--output',
        str(out),
        '--probabilities',
        *WINDOWS,
        umask=umask,
    )
    assert result.returncode == 0, result.stderr
    for path in (out, tmp_path / 'out_probabilities.tif'):
        assert path.stat().st_mode & 0o777 == mode


def test_truncated_geotiff_is_refused(ckpt: Path, tmp_path: Path) -> None:
    whole = write_raster(tmp_path / 'whole.tif', 128, 128)
    data = whole.read_bytes()
    src = tmp_path / 'cut.tif'
    src.write_bytes(data[: len(data) * 6 // 10])
    whole.unlink()
    result = predict(ckpt, src, tmp_path / 'out.tif')
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert f'input raster {src} is truncated or corrupt' in result.stderr
    assert listing(tmp_path) == {'cut.tif'}


def test_nan_pixels_are_nodata(ckpt: Path, tmp_path: Path) -> None:
    src = write_raster(tmp_path / 'in.tif', 40, 48, 'float32', nan_rows=slice(10, 20))
    out = tmp_path / 'out.tif'
    result = predict(ckpt, src, out, '--probabilities')
    assert result.returncode == 0, result.stderr
    classes = read(out)[0]
    assert (classes[10:20] == 255).all()
    assert (classes[:10] < 2).all() and (classes[20:] < 2).all()
    probabilities = read(tmp_path / 'out_probabilities.tif')
    assert np.isnan(probabilities[:, 10:20]).all()
    assert np.isfinite(probabilities[:, 20:]).all()


def test_all_nan_raster_gives_no_classes(ckpt: Path, tmp_path: Path) -> None:
    src = write_raster(tmp_path / 'in.tif', 40, 40, 'float32', nan_rows=slice(None))
    out = tmp_path / 'out.tif'
    result = predict(ckpt, src, out)
    assert result.returncode == 0, result.stderr
    assert (read(out) == 255).all()


def test_uint16_input_on_a_uint8_checkpoint_warns(ckpt: Path, tmp_path: Path) -> None:
    src = write_raster(tmp_path / 'in.tif', 40, 40, 'uint16', scale=16)
    result = predict(ckpt, src, tmp_path / 'out.tif')
    assert result.returncode == 0, result.stderr
    assert 'is uint16 but the model was trained on uint8 input' in result.stderr
    assert 'does not match the training statistics' in result.stderr
    assert '--mean and --std' in result.stderr


def test_unavailable_device_is_refused(ckpt: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    src = write_raster(tmp_path / 'in.tif', 40, 40)
    result = predict(ckpt, src, tmp_path / 'out.tif', '--device', 'cuda')
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    lines = [line for line in result.stderr.splitlines() if 'error:' in line]
    assert len(lines) == 1 and "device 'cuda' is not available" in lines[0]
    assert listing(tmp_path) == {'in.tif'}


def test_checkpoint_without_statistics(tmp_path: Path) -> None:
    bare = write_checkpoint(tmp_path / 'bare.ckpt', normalization=None)
    src = write_raster(tmp_path / 'in.tif', 40, 40)
    result = predict(bare, src, tmp_path / 'out.tif')
    assert result.returncode == 1
    assert 'the checkpoint records none; pass --mean and --std' in result.stderr
    assert listing(tmp_path) == {'bare.ckpt', 'in.tif'}
    # explicit statistics make it usable
    given = ['--mean', '120', '110', '100', '--std', '60', '55', '50']
    result = predict(bare, src, tmp_path / 'out.tif', *given)
    assert result.returncode == 0, result.stderr


def test_checkpoint_statistics_are_used_without_warning(
    ckpt: Path, tmp_path: Path
) -> None:
    src = write_raster(tmp_path / 'in.tif', 40, 40)
    result = predict(ckpt, src, tmp_path / 'a.tif', '--probabilities')
    assert result.returncode == 0, result.stderr
    assert 'Warning' not in result.stderr
    # the same as passing the statistics by hand; other statistics differ
    stats = {'mean': list(UINT8_STATS.mean), 'std': list(UINT8_STATS.std)}
    options = {'window': 32, 'overlap': 8, 'probabilities': True, 'progress': False}
    b = predict_raster(ckpt, src, tmp_path / 'b.tif', **stats, **options)
    c = predict_raster(ckpt, src, tmp_path / 'c.tif', mean=0, std=255, **options)
    a_probs = read(tmp_path / 'a_probabilities.tif')
    # equal up to float rounding (the subprocess may use another thread count)
    np.testing.assert_allclose(a_probs, read(b['probabilities']), atol=1e-5)
    assert np.abs(a_probs - read(c['probabilities'])).max() > 1e-3
