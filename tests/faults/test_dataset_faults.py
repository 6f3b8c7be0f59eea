"""Corrupt and truncated images in every dataset, and extractions killed midway."""

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from torchgeo.samplers import GriddedPatchSampler

from torchgeo_ssg2.datasets import (
    ISIC2018,
    DubaiAerial,
    Potsdam,
    PreparedPotsdam,
    UnreadableImageError,
)
from torchgeo_ssg2.datasets.potsdam import prepared_paths
from torchgeo_ssg2.datasets.prepare import prepare_potsdam

DATA = os.path.join('tests', 'data')
ISIC_TEST = ('ISIC2018_Task1-2_Test_Input', 'ISIC2018_Task1_Test_GroundTruth')


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _dubai(tmp_path: Path) -> Path:
    root = tmp_path / 'dubai'
    shutil.copytree(os.path.join(DATA, 'dubai', 'data'), root)
    return root


class TestDubai:
    def test_not_an_image(self, tmp_path: Path) -> None:
        root = _dubai(tmp_path)
        bad = root / 'tile_1' / 'images' / 'image_part_002.jpg'
        bad.write_bytes(b'not a jpeg')
        with pytest.raises(UnreadableImageError, match=f'^{bad}: corrupt or truncated'):
            DubaiAerial(root=str(root), split='train', val_pct=0, test_pct=0)

    @pytest.mark.parametrize(
        'name', ['images/image_part_003.jpg', 'masks/image_part_003.png']
    )
    def test_truncated(self, tmp_path: Path, name: str) -> None:
        root = _dubai(tmp_path)
        bad = root / 'tile_2' / name
        _truncate(bad)
        with pytest.raises(UnreadableImageError) as info:
            # At construction (sizes) or at the latest when the file is read.
            ds = DubaiAerial(root=str(root), split='train', val_pct=0, test_pct=0)
            for i in range(len(ds)):
                ds[i]
        message = str(info.value)
        assert message.startswith(f'{bad}: corrupt or truncated image (')
        assert '\n' not in message


class TestISIC:
    def _root(self, tmp_path: Path) -> Path:
        root = tmp_path / 'isic'
        root.mkdir()
        for folder in ISIC_TEST:
            shutil.copytree(os.path.join(DATA, 'isic2018', folder), root / folder)
        return root

    @pytest.mark.parametrize(
        'name',
        [
            'ISIC2018_Task1-2_Test_Input/ISIC_0000007.jpg',
            'ISIC2018_Task1_Test_GroundTruth/ISIC_0000007_segmentation.png',
        ],
    )
    def test_truncated(self, tmp_path: Path, name: str) -> None:
        root = self._root(tmp_path)
        bad = root / name
        _truncate(bad)
        ds = ISIC2018(root=str(root), split='test', size=32)
        ds[0]
        with pytest.raises(UnreadableImageError, match=f'^{bad}: corrupt or truncated'):
            ds[1]

    def test_corrupt_png(self, tmp_path: Path) -> None:
        root = self._root(tmp_path)
        bad = root / ISIC_TEST[1] / 'ISIC_0000006_segmentation.png'
        data = bytearray(bad.read_bytes())
        data[40:60] = b'\0' * 20  # inside the image data: a CRC or zlib error
        bad.write_bytes(bytes(data))
        with pytest.raises(UnreadableImageError, match=f'^{bad}: corrupt or truncated'):
            ISIC2018(root=str(root), split='test', size=32)[0]


class TestPotsdam:
    def test_truncated_source_raster(self, tmp_path: Path) -> None:
        src = tmp_path / 'src'
        shutil.copytree(
            os.path.join(DATA, 'potsdam'),
            src,
            ignore=shutil.ignore_patterns('*.zip', '*.py'),
        )
        bad = src / '4_Ortho_RGBIR' / 'top_potsdam_2_10_RGBIR.tif'
        _truncate(bad)
        ds = Potsdam(root=str(src), split='val')
        with pytest.raises(RuntimeError, match=f'^{bad}: unreadable raster'):
            for i in range(len(ds)):
                ds[i]

    @pytest.fixture
    def prepared(self, tmp_path: Path) -> Path:
        dst = tmp_path / 'prepared'
        prepare_potsdam(
            os.path.join(DATA, 'potsdam'),
            dst,
            tiles=['2_10', '2_11'],
            block_size=16,
            progress=False,
        )
        return dst

    def test_truncated_prepared(self, prepared: Path) -> None:
        bad = Path(prepared_paths(prepared, '2_11')['image'])
        _truncate(bad)
        with pytest.raises(RuntimeError, match=f'^{bad}: unreadable raster'):
            PreparedPotsdam(root=prepared, split='val', val_tiles=('2_10', '2_11'))

    def test_corrupt_prepared_blocks(self, prepared: Path) -> None:
        bad = Path(prepared_paths(prepared, '2_11')['image'])
        data = bytearray(bad.read_bytes())
        (ifd,) = struct.unpack('<I', data[4:8])
        data[16:ifd] = b'\x55' * (ifd - 16)  # the blocks, not the directory
        bad.write_bytes(bytes(data))
        ds = PreparedPotsdam(
            root=prepared, split='val', val_tiles=('2_10', '2_11'), cache=False
        )
        with pytest.raises(RuntimeError, match=f'^{bad}: unreadable pixels in window'):
            for query in GriddedPatchSampler(ds, size=16, stride=16):
                ds[query]


# A child that extracts the ISIC test zips and blocks after the second member
# of the first zip, so that the parent kills it (SIGKILL) midway.
_CHILD = """
import os, sys, time, zipfile
root, marker = sys.argv[1], sys.argv[2]
original = zipfile.ZipFile._extract_member
count = 0
def extract(self, member, path, pwd):
    global count
    out = original(self, member, path, pwd)
    count += 1
    if count == 2:
        open(marker, 'w').close()
        time.sleep(600)
    return out
zipfile.ZipFile._extract_member = extract
from torchgeo_ssg2.datasets import ISIC2018
ISIC2018(root=root, split='test')
"""


def test_extraction_killed_then_rerun(tmp_path: Path) -> None:
    root = tmp_path / 'isic'
    root.mkdir()
    for folder in ISIC_TEST:
        shutil.copy(os.path.join(DATA, 'isic2018', f'{folder}.zip'), root)
    marker = tmp_path / 'marker'
    child = subprocess.Popen(
        [sys.executable, '-c', _CHILD, str(root), str(marker)],
        env=dict(os.environ, OMP_NUM_THREADS='1'),
    )
    try:
        while not marker.exists():
            assert child.poll() is None, 'the extraction ended before the kill'
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    # Killed midway: only the staging folder exists, nothing that looks complete.
    left = sorted(p.name for p in root.iterdir() if not p.name.endswith('.zip'))
    assert left == [f'.{ISIC_TEST[0]}.zip.partial-{child.pid}']

    ds = ISIC2018(root=str(root), split='test', size=32)
    assert len(ds) == 2
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [*ISIC_TEST, *(f'{f}.zip' for f in ISIC_TEST)]
    )
    for folder in ISIC_TEST:
        with zipfile.ZipFile(root / f'{folder}.zip') as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    assert (root / info.filename).read_bytes() == zf.read(info)
    ds[0]
    ds[1]
