import json
import os
from pathlib import Path

import pytest

from torchgeo_ssg2.demo import main

ROOT = os.path.join('tests', 'data', 'dubai', 'data')


def test_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'demo'
    status = main(
        [
            '--root',
            ROOT,
            '--output',
            str(out),
            '--preset',
            'test',
            '--max-steps',
            '1',
            '--batch-size',
            '2',
            '--patch-size',
            '32',
            '--window',
            '32',
            '--overlap',
            '8',
            '--eval-windows',
            '3',
            '--figure-window',
            '32',
            '--lr-schedule',
            'cosine',
            '--warmup-steps',
            '1',
        ]
    )
    assert status == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['train_steps'] == 1
    assert metrics['held_out_windows']['count'] == 3
    assert 0 <= metrics['held_out_windows']['mean_iou'] <= 1
    assert set(metrics['held_out_image']['iou']) == {
        'Building',
        'Land',
        'Road',
        'Vegetation',
        'Water',
    }
    assert (out / 'prediction.png').stat().st_size > 0
    assert (out / 'episode.png').stat().st_size > 0
    printed = capsys.readouterr().out
    assert str((out / 'prediction.png').resolve()) in printed
    assert str((out / 'metrics.json').resolve()) in printed


def test_demo_missing_data(tmp_path: Path) -> None:
    assert main(['--root', str(tmp_path / 'nothing')]) == 2
