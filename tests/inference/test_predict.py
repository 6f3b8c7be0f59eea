import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from inference_fakes import (
    CRS,
    TRANSFORM,
    EdgeModel,
    PixelModel,
    PixelTask,
    make_raster,
    read,
)

from torchgeo_ssg2.cli import main as ssg2_main
from torchgeo_ssg2.inference import (
    PredictOptions,
    predict_raster,
    predict_rasters,
)


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_one_window_equals_many_windows(raster: Path, tmp_path: Path) -> None:
    model = PixelModel()
    one = predict_raster(
        model,
        raster,
        tmp_path / 'one.tif',
        window=96,
        overlap=0,
        probabilities=True,
        mean=0,
        std=255,
        progress=False,
    )
    many = predict_raster(
        model,
        raster,
        tmp_path / 'many.tif',
        window=32,
        overlap=8,
        batch_size=3,
        probabilities=True,
        mean=0,
        std=255,
        progress=False,
    )
    p_one, _ = read(one['probabilities'])
    p_many, _ = read(many['probabilities'])
    assert p_one.shape == (4, 70, 90)
    np.testing.assert_allclose(p_many, p_one, rtol=1e-5, atol=1e-6)
    # the same as running the model on the whole raster at once
    with rasterio.open(raster) as src:
        x = torch.from_numpy(src.read().astype(np.float32) / 255)[None]
    with torch.no_grad():
        direct = model(x)[0].numpy()
    np.testing.assert_allclose(p_many, direct, rtol=1e-5, atol=1e-6)
    c_many, _ = read(many['classes'])
    np.testing.assert_array_equal(c_many[0], direct.argmax(0))


def border_steps(probs: np.ndarray, offsets: list[int], window: int) -> float:
    """Largest jump between neighbouring columns where a window starts or ends."""
    diffs = np.abs(np.diff(probs, axis=-1))  # diffs[..., j] = col j+1 - col j
    edges = {c - 1 for c in offsets if c > 0} | {c + window - 1 for c in offsets}
    edges = [e for e in edges if e < diffs.shape[-1]]
    return float(diffs[..., edges].max())


def test_blending_has_no_seams(tmp_path: Path) -> None:
    src = make_raster(tmp_path / 'smooth.tif', 48, 160, smooth=True)
    window, overlap = 32, 16
    offsets = [*range(0, 160 - window, window - overlap), 160 - window]
    steps = {}
    for name, floor in [('hann', 0.01), ('mean', 1.0)]:
        out = predict_raster(
            EdgeModel(),
            src,
            tmp_path / f'{name}.tif',
            window=window,
            overlap=overlap,
            probabilities=True,
            mean=127,
            std=100,
            blend_floor=floor,
            progress=False,
        )
        probs, _ = read(out['probabilities'])
        inner = probs[0, 8:-8]
        steps[name] = border_steps(inner, offsets, window)
        steps[name + '_typical'] = float(np.median(np.abs(np.diff(inner, axis=-1))))
    # plain averaging shows steps at window borders; the Hann blend does not
    assert steps['mean'] > 5 * steps['mean_typical']
    assert steps['hann'] < 3 * steps['hann_typical']
    assert steps['hann'] < steps['mean'] / 3


def test_georeferencing_and_nodata_preserved(tmp_path: Path) -> None:
    src = make_raster(
        tmp_path / 'in.tif', 70, 90, nodata=0, nodata_border=5, dtype='uint16'
    )
    out = predict_raster(
        PixelTask(),
        src,
        tmp_path / 'out.tif',
        window=32,
        overlap=8,
        probabilities=True,
        uncertainty=True,
        mean=0,
        std=255,
        progress=False,
    )
    assert set(out) == {'classes', 'probabilities', 'uncertainty'}
    assert out['probabilities'] == tmp_path / 'out_probabilities.tif'
    expected = {'classes': 'lzw', 'probabilities': 'deflate', 'uncertainty': 'deflate'}
    for key, path in out.items():
        with rasterio.open(path) as dst:
            assert dst.crs == rasterio.crs.CRS.from_string(CRS)
            assert dst.transform == TRANSFORM
            assert (dst.height, dst.width) == (70, 90)
            assert dst.profile['tiled']
            assert dst.compression.name.lower() == expected[key]
    classes, profile = read(out['classes'])
    assert profile['dtype'] == 'uint8' and profile['nodata'] == 255
    border = np.ones((70, 90), dtype=bool)
    border[5:-5, 5:-5] = False
    assert (classes[0][border] == 255).all()
    assert (classes[0][~border] < 4).all()
    probs, _ = read(out['probabilities'])
    assert np.isnan(probs[:, border]).all()
    np.testing.assert_allclose(probs[:, ~border].sum(0), 1, rtol=1e-5)
    unc, _ = read(out['uncertainty'])
    assert np.isnan(unc[0][border]).all() and np.isfinite(unc[0][~border]).all()


def test_nan_nodata_does_not_spread(tmp_path: Path) -> None:
    src = make_raster(
        tmp_path / 'in.tif',
        40,
        50,
        nodata=float('nan'),
        nodata_border=3,
        dtype='float32',
    )
    out = predict_raster(
        EdgeModel(),
        src,
        tmp_path / 'out.tif',
        window=32,
        overlap=8,
        probabilities=True,
        mean=127,
        std=100,
        progress=False,
    )
    probs, _ = read(out['probabilities'])
    classes, _ = read(out['classes'])
    border = np.ones((40, 50), dtype=bool)
    border[3:-3, 3:-3] = False
    assert np.isnan(probs[:, border]).all()
    assert np.isfinite(probs[:, ~border]).all()
    assert (classes[0][border] == 255).all() and (classes[0][~border] < 2).all()


@pytest.mark.parametrize(('height', 'width'), [(20, 13), (33, 65)])
def test_small_and_odd_rasters(tmp_path: Path, height: int, width: int) -> None:
    src = make_raster(tmp_path / 'in.tif', height, width)
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
    classes, profile = read(out['classes'])
    assert classes.shape == (1, height, width)
    assert profile['transform'] == TRANSFORM


def test_no_crs_predicts_in_pixel_space(tmp_path: Path) -> None:
    src = make_raster(tmp_path / 'in.tif', 40, 50, crs=None, transform=None)
    with pytest.warns(UserWarning, match='no CRS'):
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
        assert dst.crs is None
        assert (dst.height, dst.width) == (40, 50)


def test_band_count_mismatch(raster: Path, tmp_path: Path) -> None:
    before = listing(tmp_path)
    with pytest.raises(ValueError, match=r'3 bands.*in_channels=4'):
        predict_raster(
            PixelTask(in_channels=4), raster, tmp_path / 'out.tif', progress=False
        )
    assert listing(tmp_path) == before


def test_missing_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r'missing\.tif'):
        predict_raster(PixelModel(), tmp_path / 'missing.tif', tmp_path / 'out.tif')
    assert not (tmp_path / 'out.tif').exists()


def test_unreadable_input(tmp_path: Path) -> None:
    bad = tmp_path / 'bad.tif'
    bad.write_text('not a raster')
    with pytest.raises(ValueError, match=r'cannot read input raster .*bad\.tif'):
        predict_raster(PixelModel(), bad, tmp_path / 'out.tif')
    assert listing(tmp_path) == {'bad.tif'}


def test_checkpoint_of_another_kind(raster: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / 'other.ckpt'
    torch.save(
        {
            'state_dict': PixelTask().state_dict(),
            'hyper_parameters': {'in_channels': 3, 'num_classes': 4},
            'pytorch-lightning_version': '2.6.0',
        },
        ckpt,
    )
    before = listing(tmp_path)
    with pytest.raises(ValueError, match=r'other\.ckpt.*not an'):
        predict_raster(ckpt, raster, tmp_path / 'out.tif', progress=False)
    assert listing(tmp_path) == before
    garbage = tmp_path / 'garbage.ckpt'
    garbage.write_bytes(b'\x00' * 16)
    with pytest.raises(ValueError, match=r'garbage\.ckpt'):
        predict_raster(garbage, raster, tmp_path / 'out.tif', progress=False)


def test_existing_output_refused_then_overwritten(raster: Path, tmp_path: Path) -> None:
    out = tmp_path / 'out.tif'
    out.write_bytes(b'precious')
    with pytest.raises(FileExistsError, match='overwrite'):
        predict_raster(PixelModel(), raster, out, window=32, overlap=8, progress=False)
    assert out.read_bytes() == b'precious'
    predict_raster(
        PixelModel(),
        raster,
        out,
        window=32,
        overlap=8,
        overwrite=True,
        mean=0,
        std=255,
        progress=False,
    )
    classes, _ = read(out)
    assert classes.shape == (1, 70, 90)


def test_error_midway_leaves_nothing(raster: Path, tmp_path: Path) -> None:
    before = listing(tmp_path)
    with pytest.raises(RuntimeError, match='model failed'):
        predict_raster(
            PixelTask(fail_after=2),
            raster,
            tmp_path / 'out.tif',
            window=32,
            overlap=8,
            batch_size=1,
            probabilities=True,
            mean=0,
            std=255,
            progress=False,
        )
    assert listing(tmp_path) == before
    # the reader thread was stopped before the input was closed
    assert not any(t.name == 'raster-reader' for t in threading.enumerate())


def test_uncertainty_needs_a_model_that_gives_it(raster: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match='uncertainty'):
        predict_raster(
            PixelModel(),
            raster,
            tmp_path / 'out.tif',
            window=32,
            overlap=8,
            uncertainty=True,
            mean=0,
            std=255,
            progress=False,
        )
    assert listing(tmp_path) == {'in.tif'}
    assert not (tmp_path / 'out.tif').exists()


def test_command_line_errors(
    raster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / 'out.tif'
    out.write_bytes(b'precious')
    argv = ['predict', '--checkpoint', str(tmp_path / 'none.ckpt'), '--input']
    assert ssg2_main([*argv, str(raster), '--output', str(out)]) == 1
    assert 'exists' in capsys.readouterr().err
    assert out.read_bytes() == b'precious'
    assert ssg2_main([*argv, str(raster), '--output', str(tmp_path / 'new.tif')]) == 1
    assert 'none.ckpt does not exist' in capsys.readouterr().err
    assert ssg2_main([*argv, str(tmp_path / 'no.tif'), '--output', str(out)]) == 1
    assert not (tmp_path / 'new.tif').exists()
    with pytest.raises(SystemExit):
        ssg2_main(['predict', '--input', str(raster)])  # --checkpoint is required


@pytest.mark.parametrize(
    ('extra', 'message'),
    [
        (['--output', 'one.tif'], '--output names one file but the input gives 2'),
        (['--output-dir', 'out', '--devices', '2'], 'needs an accelerator'),
        (
            ['--output-dir', 'out', '--supports', 'bank', '--bank-images', 'nothing/'],
            'needs --sequence-length',
        ),
    ],
)
def test_argument_errors_come_before_any_file_is_read(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    message: str,
) -> None:
    """Options that do not fit together fail before the checkpoint is read."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'tiles').mkdir()
    make_raster(tmp_path / 'tiles' / 'a.tif', 20, 20)
    make_raster(tmp_path / 'tiles' / 'b.tif', 20, 20)
    (tmp_path / 'bad.ckpt').write_bytes(b'not a checkpoint')
    argv = ['predict', '--checkpoint', 'bad.ckpt', '--input', 'tiles', *extra]
    assert ssg2_main(argv) == 1
    err = capsys.readouterr().err
    assert message in err
    assert 'bad.ckpt' not in err
    assert listing(tmp_path) == {'tiles', 'bad.ckpt'}


def test_options_object_and_keywords_give_the_same_file(
    raster: Path, tmp_path: Path
) -> None:
    options = PredictOptions(window=32, overlap=8, mean=0, std=255, progress=False)
    a = predict_raster(PixelModel(), raster, tmp_path / 'a.tif', options)
    b = predict_raster(
        PixelModel(),
        raster,
        tmp_path / 'b.tif',
        window=32,
        overlap=8,
        mean=0,
        std=255,
        progress=False,
    )
    assert a['classes'].read_bytes() == b['classes'].read_bytes()
    # keywords override the object
    c = predict_rasters(
        PixelModel(), raster, tmp_path / 'c', options, probabilities=True
    )
    assert set(c[raster]) == {'classes', 'probabilities'}
    assert c[raster]['classes'].read_bytes() == a['classes'].read_bytes()


def test_unknown_option_is_refused(raster: Path, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r'unexpected prediction option.*windw'):
        predict_raster(PixelModel(), raster, tmp_path / 'a.tif', windw=32)
    assert listing(tmp_path) == {'in.tif'}
