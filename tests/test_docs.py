"""The Sphinx site builds offline with warnings as errors (what ``make docs`` runs)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sphinx_build(tmp_path: Path) -> None:
    out = tmp_path / 'html'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'OMP_WAIT_POLICY': 'PASSIVE'}
    command = [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q']
    command += ['-b', 'html', '-d', str(tmp_path / 'doctrees')]
    result = subprocess.run(
        [*command, str(ROOT / 'docs'), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for page in (
        'index',
        'tutorial',
        'choosing_t',
        'evidence',
        'design',
        'internals',
        'api/models',
        'api/trainers',
        'api/inference',
    ):
        assert (out / f'{page}.html').is_file(), page
    api = (out / 'api' / 'trainers.html').read_text()
    assert 'id="torchgeo_ssg2.trainers.SSG2Task"' in api
    tutorial = (out / 'tutorial.html').read_text()
    assert 'RasterEpisodeDataModule' in tutorial
