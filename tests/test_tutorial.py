"""docs/tutorial.py runs end to end on tiny settings and writes what it promises."""

import json
import os
import subprocess
import sys
from pathlib import Path

import rasterio
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / 'docs' / 'tutorial.py'


def test_tutorial(tmp_path: Path) -> None:
    out = tmp_path / 'tutorial'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'OMP_WAIT_POLICY': 'PASSIVE'}
    args = ['--out', str(out), '--steps', '2', '--preset', 'test']
    result = subprocess.run(
        [sys.executable, str(TUTORIAL), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    scene = out / 'data' / 'new' / 'images' / 'c.tif'
    prediction = out / 'prediction'
    with rasterio.open(scene) as src:
        crs, transform, shape = src.crs, src.transform, (src.height, src.width)
    for name, count in (
        ('c_classes.tif', 1),
        ('c_classes_probabilities.tif', 2),
        ('c_classes_uncertainty.tif', 1),
    ):
        with rasterio.open(prediction / name) as dst:
            assert dst.crs == crs
            assert dst.transform == transform
            assert (dst.height, dst.width) == shape
            assert dst.count == count
    with rasterio.open(prediction / 'c_classes.tif') as dst:
        assert set(dst.read(1).flat) <= {0, 1}
    with rasterio.open(prediction / 'c_classes_uncertainty.tif') as dst:
        uncertainty = dst.read(1)
    assert 0 <= uncertainty.min() and uncertainty.max() <= 1

    for name in ('episode.png', 'prediction.png', 'probabilities.png'):
        with Image.open(out / name) as image:
            assert min(image.size) > 100, name
    scores = json.loads((out / 'scores.json').read_text())
    assert 0 <= scores['pixel_accuracy'] <= 1
    assert scores == json.loads(result.stdout[result.stdout.index('{') :])
