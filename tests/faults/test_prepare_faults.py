"""``torchgeo-ssg2 prepare potsdam`` on broken inputs, in a real subprocess."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = os.path.join('tests', 'data', 'potsdam')
CLI = 'import sys; from torchgeo_ssg2.cli import main; sys.exit(main())'


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS='1', OMP_WAIT_POLICY='PASSIVE')
    return subprocess.run(
        [sys.executable, '-c', CLI, 'prepare', 'potsdam', *args, '--quiet'],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _zip_images(src: Path, truncate: str) -> None:
    """Zip 4_Ortho_RGBIR into src, cutting member *truncate* to 2/3 of its bytes."""
    folder = os.path.join(ROOT, '4_Ortho_RGBIR')
    with zipfile.ZipFile(src / '4_Ortho_RGBIR.zip', 'w') as zf:
        for name in sorted(os.listdir(folder)):
            data = Path(folder, name).read_bytes()
            if name == truncate:
                data = data[: len(data) * 2 // 3]
            zf.writestr(f'4_Ortho_RGBIR/{name}', data)


def _source(tmp_path: Path, truncate: str) -> Path:
    src = tmp_path / 'src'
    src.mkdir()
    for folder in ('1_DSM', '5_Labels_all', '5_Labels_all_noBoundary'):
        shutil.copytree(os.path.join(ROOT, folder), src / folder)
    _zip_images(src, truncate)
    return src


def test_truncated_zip_member(tmp_path: Path) -> None:
    # The first tile is intact, the second truncated: nothing at all is written.
    src = _source(tmp_path, 'top_potsdam_2_11_RGBIR.tif')
    dst = tmp_path / 'dst'
    result = _run(str(src), str(dst), '--tiles', '2_10', '2_11')
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    assert '4_Ortho_RGBIR.zip!4_Ortho_RGBIR/top_potsdam_2_11_RGBIR.tif' in (
        result.stderr
    )
    assert 'unreadable pixels in rows 0-31' in result.stderr
    assert 'nothing written' in result.stderr
    assert not dst.exists()


def test_intact_zip(tmp_path: Path) -> None:
    src = _source(tmp_path, '')
    dst = tmp_path / 'dst'
    result = _run(str(src), str(dst), '--tiles', '2_10', '2_11')
    assert result.returncode == 0, result.stderr
    assert 'prepared 2 tile(s)' in result.stdout
    assert len(list((dst / 'images').iterdir())) == 2


def test_missing_source(tmp_path: Path) -> None:
    result = _run(str(tmp_path / 'nowhere'), str(tmp_path / 'dst'))
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    assert result.stderr.startswith('torchgeo-ssg2 prepare potsdam: error:')
    assert not (tmp_path / 'dst').exists()


def test_stale_staging_swept(tmp_path: Path) -> None:
    # What a killed prepare leaves: staging files named after a process that is
    # gone, beside a tile and the manifest; the rerun removes them, and keeps the
    # staging file of a process that still runs.
    from torchgeo_ssg2.datasets.potsdam import prepared_paths
    from torchgeo_ssg2.datasets.prepare import MANIFEST
    from torchgeo_ssg2.staging import staging_path

    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    dst = tmp_path / 'dst'
    paths = prepared_paths(str(dst), '2_10')
    stale = [staging_path(Path(p), dead.pid) for p in paths.values()]
    stale.append(staging_path(dst / MANIFEST, dead.pid))
    alive = staging_path(Path(paths['image']), os.getpid())
    for path in [*stale, alive]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'half a tile')
    result = _run(ROOT, str(dst), '--tiles', '2_10')
    assert result.returncode == 0, result.stderr
    assert not any(path.exists() for path in stale)
    assert alive.exists()
    assert {p.name for p in dst.rglob('*.partial-*')} == {alive.name}
