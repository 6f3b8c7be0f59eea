"""``torchgeo-ssg2 predict`` on 2 CPU processes (DDP, gloo) against 1 process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
import torch
from inference_fakes import TRANSFORM, make_raster, save_checkpoint
from rasterio.transform import from_origin

from torchgeo_ssg2.trainers import PTAViTTask


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command line (a module, so DDP can start it again per rank)."""
    env = dict(os.environ, OMP_NUM_THREADS='1', OMP_WAIT_POLICY='PASSIVE')
    env.pop('LOCAL_RANK', None)
    return subprocess.run(
        [sys.executable, '-m', 'torchgeo_ssg2.cli', *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """A PTAViT checkpoint (test preset) and a folder of 4 small rasters."""
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        PTAViTTask(preset='test', in_channels=3, num_classes=3), tmp_path / 'm.ckpt'
    )
    tiles = tmp_path / 'tiles'
    tiles.mkdir()
    for i, (h, w) in enumerate([(40, 50), (64, 64), (30, 70), (50, 40)]):
        transform = from_origin(TRANSFORM.c + 40.0 * i, TRANSFORM.f, 0.5, 0.5)
        make_raster(tiles / f'r{i}.tif', h, w, seed=i, transform=transform)
    return ckpt, tiles


def test_two_processes_write_the_same_files_as_one(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt, tiles = setup
    stdout = predict_in_two(tmp_path, ckpt, tiles)
    names = sorted(p.name for p in (tmp_path / 'two').iterdir())
    assert 'mosaic.vrt' in names and 'mosaic_probabilities.vrt' in names
    for i in range(4):
        with (
            rasterio.open(tiles / f'r{i}.tif') as src,
            rasterio.open(tmp_path / 'two' / f'r{i}.tif') as dst,
        ):
            assert (dst.crs, dst.transform, dst.shape) == (
                src.crs,
                src.transform,
                src.shape,
            )
    # rank 0 alone reports, once per raster
    assert stdout.count('classes ') == 4
    # a rerun on 2 processes finds everything complete and writes nothing
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / 'two').glob('*.tif')}
    again = run_in_two(predict_args(ckpt, tiles), tmp_path / 'two')
    assert again.returncode == 0, again.stderr
    assert again.stdout.count('skipped') == 4
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def predict_args(ckpt: Path, tiles: Path) -> list[str]:
    """The options both runs of :func:`predict_in_two` share."""
    common = ['--checkpoint', str(ckpt), '--input', str(tiles), '--window', '32']
    common += ['--overlap', '8', '--mean', '0', '--std', '255', '--batch-size', '3']
    return [*common, '--probabilities', '--vrt']


def run_in_two(args: list[str], output_dir: Path) -> subprocess.CompletedProcess[str]:
    """``torchgeo-ssg2 predict ARGS --output-dir OUTPUT_DIR`` on 2 CPU processes."""
    return run(
        'predict',
        *args,
        '--output-dir',
        str(output_dir),
        '--accelerator',
        'cpu',
        '--devices',
        '2',
    )


def predict_in_two(tmp_path: Path, ckpt: Path, tiles: Path) -> str:
    """Predict a folder in 1 and in 2 processes; check the outputs are the same.

    Returns:
        The standard output of the 2-process run (its progress lines).
    """
    common = predict_args(ckpt, tiles)
    one = run(
        'predict', *common, '--no-progress', '--output-dir', str(tmp_path / 'one')
    )
    assert one.returncode == 0, one.stderr
    two = run_in_two(common, tmp_path / 'two')
    assert two.returncode == 0, two.stderr
    names = sorted(p.name for p in (tmp_path / 'one').iterdir())
    # no staging file of a strip (or anything else) is left
    assert names == sorted(p.name for p in (tmp_path / 'two').iterdir())
    assert not [n for n in names if '.partial-' in n]
    for name in names:
        if name.endswith('.tif'):
            a = (tmp_path / 'one' / name).read_bytes()
            assert a == (tmp_path / 'two' / name).read_bytes(), name
    return two.stdout


def test_strips_of_the_largest_raster_on_two_processes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        PTAViTTask(preset='test', in_channels=3, num_classes=3), tmp_path / 'm.ckpt'
    )
    tiles = tmp_path / 'tiles'
    tiles.mkdir()
    # 600 rows: 25 window rows, 75 of the 88 windows; the strip border (row
    # 288) lies inside an output block, whose rows come from both strips
    make_raster(tiles / 'big.tif', 600, 70, seed=3, smooth=True)
    for i, (h, w) in enumerate([(40, 50), (64, 64)]):
        transform = from_origin(TRANSFORM.c + 40.0 * i, TRANSFORM.f, 0.5, 0.5)
        make_raster(tiles / f'r{i}.tif', h, w, seed=i, transform=transform)
    # a strip staged by a killed run (its pid is gone) is swept
    dead = subprocess.run(
        [sys.executable, '-c', 'import os; print(os.getpid())'],
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / 'two').mkdir()
    stale = tmp_path / 'two' / f'big.tif.partial-{int(dead.stdout)}-strip1'
    stale.write_bytes(b'partial')
    stdout = predict_in_two(tmp_path, ckpt, tiles)
    assert not stale.exists()
    # the large raster is cut, one strip per rank (the progress lines of both
    # ranks); the small rasters stay whole
    assert 'strip 1/2 of' in stdout and 'strip 2/2 of' in stdout, stdout
    assert stdout.count('strip ') == 2, stdout


def test_a_bad_raster_checked_by_rank_1_stops_both_ranks(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt, tiles = setup
    # the ranks check the rasters in turn: rank 1 checks r1, rank 0 never opens it
    bad = tiles / 'r1.tif'
    make_raster(bad, 40, 40, count=2)
    failed = run_in_two(predict_args(ckpt, tiles), tmp_path / 'stop')
    assert failed.returncode != 0
    assert f'input raster {bad} has 2 bands' in failed.stderr
    # both ranks stopped before any window: nothing was written
    assert not list(tmp_path.glob('stop/*'))
    kept = run_in_two([*predict_args(ckpt, tiles), '--keep-going'], tmp_path / 'kept')
    assert kept.returncode == 0, kept.stderr
    names = {p.name for p in (tmp_path / 'kept').glob('r?.tif')}
    assert names == {'r0.tif', 'r2.tif', 'r3.tif'}
    assert f'skipped {bad}' in kept.stderr
