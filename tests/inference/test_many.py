"""Many rasters: inputs, output names, resume, bad files, mosaics, QGIS-ready files."""

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import rasterio
from inference_fakes import TRANSFORM, PixelModel, make_raster, read
from rasterio.transform import from_origin
from torch import nn

from torchgeo_ssg2.inference import (
    expand_inputs,
    outputs_for,
    predict_raster,
    predict_rasters,
)
from torchgeo_ssg2.inference.output import DEFAULT_PALETTE, UNCERTAINTY_DESCRIPTION

OPTIONS = {'window': 32, 'overlap': 8, 'mean': 0, 'std': 255, 'progress': False}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three rasters: two in UTM 40N (side by side), one in UTM 39N."""
    src = tmp_path / 'tiles'
    src.mkdir()
    make_raster(src / 'a.tif', 40, 50, seed=1)
    make_raster(
        src / 'b.tif',
        30,
        36,
        seed=2,
        transform=from_origin(TRANSFORM.c + 25.0, TRANSFORM.f, 0.5, 0.5),
    )
    make_raster(src / 'c.tif', 20, 44, seed=3, crs='EPSG:32639')
    (src / 'notes.md').write_text('not a raster')
    return src


def test_expand_inputs(folder: Path, tmp_path: Path) -> None:
    names = ['a.tif', 'b.tif', 'c.tif']
    assert [p.name for p in expand_inputs(folder)] == names
    assert [p.name for p in expand_inputs(str(folder / '*.tif'))] == names
    listed = tmp_path / 'list.txt'
    listed.write_text('# tiles\ntiles/c.tif\n\ntiles/a.tif\n')
    assert [p.name for p in expand_inputs(listed)] == ['c.tif', 'a.tif']
    # the same file twice is predicted once
    assert len(expand_inputs([folder / 'a.tif', str(folder / '*.tif')])) == 3
    with pytest.raises(FileNotFoundError, match='matches no file'):
        expand_inputs(str(tmp_path / '*.jp2'))
    with pytest.raises(FileNotFoundError, match=r'missing\.tif'):
        expand_inputs(tmp_path / 'missing.tif')


def test_output_names(tmp_path: Path) -> None:
    out = outputs_for([Path('x/a.tif'), Path('y/a.tif'), Path('y/b.tif')], None, 'o')
    assert out == [Path('o/x_a.tif'), Path('o/y_a.tif'), Path('o/b.tif')]
    with pytest.raises(ValueError, match='--output-dir'):
        outputs_for([Path('a.tif'), Path('b.tif')], 'out.tif', None)


def test_folder_to_output_dir(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / 'out'
    results = predict_rasters(PixelModel(), folder, out, vrt=True, **OPTIONS)
    assert [p.name for p in results] == ['a.tif', 'b.tif', 'c.tif']
    for source, paths in results.items():
        with rasterio.open(source) as src, rasterio.open(paths['classes']) as dst:
            assert dst.crs == src.crs
            assert dst.transform == src.transform
            assert dst.shape == src.shape
        # the same bytes as predicting that raster alone
        alone = predict_raster(
            PixelModel(), source, tmp_path / f'alone_{source.name}', **OPTIONS
        )
        assert alone['classes'].read_bytes() == paths['classes'].read_bytes()
    mosaics = sorted(p.name for p in out.glob('*.vrt'))
    assert mosaics == ['mosaic_EPSG_32639.vrt', 'mosaic_EPSG_32640.vrt']
    with rasterio.open(out / 'mosaic_EPSG_32640.vrt') as vrt:
        assert vrt.crs.to_epsg() == 32640
        assert vrt.shape == (40, 86)  # b starts 50 px right of a, is 36 wide
        mosaic = vrt.read(1)
    assert np.array_equal(
        mosaic[:40, :50], read(results[folder / 'a.tif']['classes'])[0][0]
    )
    assert np.array_equal(
        mosaic[:30, 50:], read(results[folder / 'b.tif']['classes'])[0][0]
    )
    assert (mosaic[30:, 50:] == 255).all()  # covered by no raster: nodata


def test_mosaic_leaves_out_rasters_it_cannot_place(
    folder: Path, tmp_path: Path
) -> None:
    # a raster without georeferencing (identity transform, pixel space)
    make_raster(folder / 'd.tif', 20, 20, seed=4, crs=None, transform=None)
    out = tmp_path / 'out'
    with pytest.warns(UserWarning, match=r'left out of the VRT mosaics: .*d\.tif'):
        results = predict_rasters(
            PixelModel(), folder, out, vrt=True, probabilities=True, **OPTIONS
        )
    assert [p.name for p in results] == ['a.tif', 'b.tif', 'c.tif', 'd.tif']
    assert results[folder / 'd.tif']['classes'].is_file()
    assert sorted(p.name for p in out.glob('*.vrt')) == [
        'mosaic_EPSG_32639.vrt',
        'mosaic_EPSG_32640.vrt',
        'mosaic_probabilities_EPSG_32639.vrt',
        'mosaic_probabilities_EPSG_32640.vrt',
    ]
    with rasterio.open(out / 'mosaic_EPSG_32640.vrt') as vrt:
        assert vrt.shape == (40, 86)


def test_worker_processes_give_the_same_files(folder: Path, tmp_path: Path) -> None:
    a = predict_rasters(PixelModel(), folder, tmp_path / 'a', **OPTIONS)
    b = predict_rasters(
        PixelModel(), folder, tmp_path / 'b', num_workers=2, batch_size=3, **OPTIONS
    )
    for source in a:
        assert a[source]['classes'].read_bytes() == b[source]['classes'].read_bytes()


def test_rerun_resumes_and_overwrite_predicts_again(
    folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / 'out'
    predict_rasters(PixelModel(), folder, out, **OPTIONS)
    (out / 'b.tif').unlink()  # as if the first run had stopped before b
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    calls: list[int] = []
    model = PixelModel()
    model.register_forward_hook(lambda *_: calls.append(1))
    results = predict_rasters(model, folder, out, **OPTIONS)
    assert set(results) == {folder / n for n in ('a.tif', 'b.tif', 'c.tif')}
    assert {
        p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != 'b.tif'
    } == stamps
    assert (out / 'b.tif').exists()
    n_b = len(calls)
    assert n_b > 0
    predict_rasters(model, folder, out, overwrite=True, **OPTIONS)
    assert len(calls) > 2 * n_b  # all three again


def test_bad_raster_stops_before_work_or_is_skipped(
    folder: Path, tmp_path: Path
) -> None:
    (folder / 'broken.tif').write_bytes(b'II*\x00 not really a tiff')
    out = tmp_path / 'out'
    with pytest.raises(ValueError, match=r'broken\.tif'):
        predict_rasters(PixelModel(), folder, out, **OPTIONS)
    assert not out.exists() or not any(out.iterdir())
    with pytest.warns(UserWarning, match='skipped .*broken.tif'):
        results = predict_rasters(PixelModel(), folder, out, keep_going=True, **OPTIONS)
    assert [p.name for p in results] == ['a.tif', 'b.tif', 'c.tif']
    assert sorted(p.name for p in out.iterdir()) == ['a.tif', 'b.tif', 'c.tif']


def test_output_dir_holding_the_inputs_is_refused(folder: Path) -> None:
    with pytest.raises(ValueError, match='never overwritten'):
        predict_rasters(PixelModel(), folder, folder, overwrite=True, **OPTIONS)
    assert sorted(p.name for p in folder.iterdir()) == [
        'a.tif',
        'b.tif',
        'c.tif',
        'notes.md',
    ]


def test_qgis_ready_outputs(folder: Path, tmp_path: Path) -> None:
    names = ['water', 'road', 'building', 'tree']
    palette = [(0, 0, 255), (128, 128, 128), (255, 0, 0), (0, 160, 0)]
    out = predict_raster(
        PixelModel(),
        folder / 'a.tif',
        tmp_path / 'a.tif',
        probabilities=True,
        class_names=names,
        palette=palette,
        **OPTIONS,
    )
    with rasterio.open(out['classes']) as src:
        assert src.colormap(1)[2] == (255, 0, 0, 255)
        assert src.descriptions == ('class (0 water, 1 road, 2 building, 3 tree)',)
        assert json.loads(src.tags()['CLASS_NAMES']) == names
        assert src.tags(1)['CLASS_3'] == 'tree'
        assert src.profile['compress'] == 'lzw'
    with rasterio.open(out['probabilities']) as src:
        assert src.descriptions == tuple(f'probability of {n}' for n in names)
    default = predict_raster(
        PixelModel(), folder / 'a.tif', tmp_path / 'd.tif', **OPTIONS
    )
    with rasterio.open(default['classes']) as src:
        assert src.colormap(1)[1] == (*DEFAULT_PALETTE[1], 255)
        assert src.descriptions == (
            'class (0 class_0, 1 class_1, 2 class_2, 3 class_3)',
        )
    with pytest.raises(ValueError, match='2 class names given for 4 classes'):
        predict_raster(
            PixelModel(),
            folder / 'a.tif',
            tmp_path / 'e.tif',
            class_names=['x', 'y'],
            **OPTIONS,
        )
    assert not (tmp_path / 'e.tif').exists()


def test_class_names_and_palette_from_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from inference_fakes import save_checkpoint

    from torchgeo_ssg2.datasets.dubai import DubaiAerial
    from torchgeo_ssg2.inference.model import class_labels_from_checkpoint
    from torchgeo_ssg2.trainers import PTAViTTask

    k = len(DubaiAerial.classes)
    ckpt = save_checkpoint(
        PTAViTTask(preset='test', in_channels=3, num_classes=k), tmp_path / 'm.ckpt'
    )
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint['datamodule_hyper_parameters'] = {
        '_class_path': 'torchgeo_ssg2.datamodules.DubaiAerialDataModule'
    }
    torch.save(checkpoint, ckpt)
    names, palette = class_labels_from_checkpoint(checkpoint)
    assert names == list(DubaiAerial.classes)
    assert palette == [tuple(c) for c in DubaiAerial.colormap]
    assert class_labels_from_checkpoint({'state_dict': {}}) == (None, None)
    src = make_raster(tmp_path / 'in.tif', 32, 32)
    out = predict_raster(ckpt, src, tmp_path / 'o.tif', **OPTIONS)
    # Lightning's door: the writer takes them from the checkpoint it restores.
    import yaml
    from torchgeo.main import main as torchgeo_main

    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / 'experiments' / 'predict_ssg2.yaml').read_text())
    config['model']['class_path'] = 'torchgeo_ssg2.trainers.PTAViTTask'
    config['data']['init_args'] |= {'input': str(src), 'window': 32, 'overlap': 8}
    config['data']['init_args'] |= {'mean': 0, 'std': 255}
    config['trainer'] |= {'accelerator': 'cpu', 'enable_progress_bar': False}
    config['trainer']['callbacks'][0]['init_args']['output'] = str(tmp_path / 'c.tif')
    conf = tmp_path / 'predict.yaml'
    conf.write_text(yaml.safe_dump(config))

    # ... as the task kept them when Lightning restored it: the file is not read again
    def read_again(path: Path) -> None:
        raise AssertionError(f'{path} read a second time')

    monkeypatch.setattr('torchgeo_ssg2.inference.model.read_checkpoint', read_again)
    torchgeo_main(['predict', '--config', str(conf), '--ckpt_path', str(ckpt)])
    for path in (out['classes'], tmp_path / 'c.tif'):
        with rasterio.open(path) as dst:
            assert json.loads(dst.tags()['CLASS_NAMES']) == list(DubaiAerial.classes)
            assert dst.colormap(1)[1][:3] == tuple(DubaiAerial.colormap[1])


def test_cog_output(tmp_path: Path) -> None:
    src_path = make_raster(tmp_path / 'in.tif', 300, 280)
    out = predict_raster(
        PixelModel(),
        src_path,
        tmp_path / 'out.tif',
        probabilities=True,
        cog=True,
        **OPTIONS | {'window': 64, 'overlap': 16},
    )
    plain = predict_raster(
        PixelModel(),
        src_path,
        tmp_path / 'plain.tif',
        **OPTIONS | {'window': 64, 'overlap': 16},
    )
    for path in out.values():
        with rasterio.open(path) as src:
            assert src.tags(ns='IMAGE_STRUCTURE').get('LAYOUT') == 'COG'
            assert src.overviews(1)
    with rasterio.open(out['classes']) as a, rasterio.open(plain['classes']) as b:
        assert np.array_equal(a.read(), b.read())
        assert a.colormap(1)[0] == b.colormap(1)[0]
        assert a.descriptions == b.descriptions
    assert sorted(os.listdir(tmp_path)) == [
        'in.tif',
        'out.tif',
        'out_probabilities.tif',
        'plain.tif',
    ]


def test_uncertainty_band_is_described(tmp_path: Path) -> None:
    from inference_fakes import PixelTask

    src = make_raster(tmp_path / 'in.tif', 40, 40)
    out = predict_raster(
        PixelTask(), src, tmp_path / 'o.tif', uncertainty=True, **OPTIONS
    )
    with rasterio.open(out['uncertainty']) as dst:
        assert dst.descriptions == (UNCERTAINTY_DESCRIPTION,)


@pytest.fixture
def checked(folder: Path) -> tuple[list[Path], dict[int, Any]]:
    """The folder's rasters and the metadata each one's check gives, by index."""
    from torchgeo_ssg2.inference.datamodule import check_input

    paths = sorted(folder.glob('*.tif'))
    return paths, {i: check_input(nn.Identity(), p) for i, p in enumerate(paths)}


def as_rank_of_two(
    dm: Any, rank: int, other: list[dict[int, Any]], monkeypatch: pytest.MonkeyPatch
) -> list[dict[int, Any]]:
    """Run ``dm`` in-process as rank ``rank`` of 2, the other rank's side scripted.

    Args:
        dm: The datamodule.
        rank: This rank.
        other: What the other rank sends at each exchange, in order.
        monkeypatch: pytest's fixture.

    Returns:
        What this rank sends, one entry per exchange (filled as it runs).
    """
    sent: list[dict[int, Any]] = []
    replies = iter(other)

    def gather(results: dict[int, Any]) -> dict[int, Any]:
        sent.append(dict(results))
        return {**results, **next(replies)}

    monkeypatch.setattr(dm, '_gather', gather)
    dm.trainer = SimpleNamespace(world_size=2, global_rank=rank, lightning_module=None)
    return sent


def test_each_rank_checks_a_share_and_builds_its_parts(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchgeo_ssg2.inference.datamodule as module

    check_input, build = module.check_input, module.build_window_dataset
    # what rank 0 of 2 reports: its checks (every other raster), then no failure
    rank0 = [
        {
            i: check_input(nn.Identity(), path)
            for i, path in enumerate(sorted(folder.glob('*.tif')))
            if i % 2 == 0
        },
        {},
    ]
    checked: list[str] = []
    built: list[str] = []

    def recording_check(
        model: nn.Module, input: Path | module.RasterMeta
    ) -> module.RasterMeta:
        if not isinstance(input, module.RasterMeta):
            checked.append(Path(input).name)  # the file is opened
        return check_input(model, input)

    def recording_build(
        model: nn.Module, meta: module.RasterMeta, **kwargs: Any
    ) -> Any:
        built.append(meta.path.name)
        return build(model, meta, **kwargs)

    monkeypatch.setattr(module, 'check_input', recording_check)
    monkeypatch.setattr(module, 'build_window_dataset', recording_build)
    dm = module.RasterPredictDataModule(
        str(folder), window=32, overlap=8, mean=0, std=255
    )
    as_rank_of_two(dm, 1, rank0, monkeypatch)
    dm.setup('predict')
    # rank 1 opened only the second of the three rasters ...
    assert checked == ['b.tif']
    assert [p.name for p in dm.rasters] == ['a.tif', 'b.tif', 'c.tif']
    dm.predict_dataloader()
    # ... and built only the datasets of its own parts, from the metadata it
    # was sent (no file is opened to check it again)
    assert checked == ['b.tif']
    mine = {dm.rasters[part.raster].name for rank, part in dm.plan if rank == 1}
    assert 0 < len(mine) < 3
    assert (
        sorted(built) == sorted(mine) == sorted(dm.rasters[i].name for i in dm.datasets)
    )
    dm.teardown('predict')


def test_a_failure_on_another_rank_shares_the_rasters_out_again(
    folder: Path,
    checked: tuple[list[Path], dict[int, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torchgeo_ssg2.inference.datamodule as module

    paths, metas = checked
    # rank 0 checked every other raster, then failed to build a.tif's dataset
    rank0 = [{0: metas[0], 2: metas[2]}, {0: ValueError('a.tif is bad')}, {}]
    dm = module.RasterPredictDataModule(
        str(folder), window=32, overlap=8, mean=0, std=255, keep_going=True
    )
    as_rank_of_two(dm, 1, rank0, monkeypatch)
    dm.setup('predict')
    with pytest.warns(UserWarning, match='skipped .*a.tif: a.tif is bad'):
        dm.predict_dataloader()
    assert dm.failed == {paths[0]: 'a.tif is bad'}
    # b and c are shared out between the two ranks without a
    assert sorted(part.raster for _, part in dm.plan) == [1, 2]
    mine = sorted(part.raster for rank, part in dm.plan if rank == 1)
    assert sorted(dm.datasets) == mine
    dm.teardown('predict')


def test_a_failure_after_sharing_out_again_is_exchanged_too(
    folder: Path,
    checked: tuple[list[Path], dict[int, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torchgeo_ssg2.inference.datamodule as module

    paths, metas = checked
    # rank 1 fails on b.tif; of the rasters shared out again, the one rank 0
    # had not built fails there (a file gone meanwhile): rank 1 must hear of it,
    # or it would predict its part and wait for rank 0 at the end
    rank1 = [{1: metas[1]}, {1: ValueError('b.tif is bad')}, {}, {}]
    build = module.build_window_dataset
    first_round: set[str] = set()

    def flaky_build(model: nn.Module, meta: module.RasterMeta, **kwargs: Any) -> Any:
        if len(sent) >= 2:  # after the first exchange of failures
            raise OSError(f'{meta.path.name} vanished')
        first_round.add(meta.path.name)
        return build(model, meta, **kwargs)

    monkeypatch.setattr(module, 'build_window_dataset', flaky_build)
    dm = module.RasterPredictDataModule(
        str(folder), window=32, overlap=8, mean=0, std=255, keep_going=True
    )
    sent = as_rank_of_two(dm, 0, rank1, monkeypatch)
    dm.setup('predict')
    with pytest.warns(UserWarning, match='skipped .*c.tif: c.tif vanished'):
        dm.predict_dataloader()
    # the second round's failure went to rank 1 in a third exchange
    assert len(sent) == 4
    assert first_round == {'a.tif'}
    assert list(sent[2]) == [2]
    assert isinstance(sent[2][2], OSError)
    assert set(dm.failed) == {paths[1], paths[2]}
    assert {part.raster for _, part in dm.plan} == {0}
    assert sorted(dm.datasets) == [0]
    dm.teardown('predict')


def test_an_unexpected_error_on_any_rank_stops_every_rank(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchgeo_ssg2.inference.datamodule as module

    dm = module.RasterPredictDataModule(
        str(folder), window=32, overlap=8, mean=0, std=255, keep_going=True
    )
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1, lightning_module=None)
    # rank 0 hit a bug (not a failed check) while checking a.tif: keep_going
    # does not skip it, and rank 1 stops too instead of waiting for rank 0
    bug = RuntimeError('KeyError: boom')
    monkeypatch.setattr(dm, '_gather', lambda results: {**results, 0: bug})
    with pytest.raises(RuntimeError, match='KeyError: boom'):
        dm.setup('predict')

    # this rank's own bug is raised as it was
    def broken(model: nn.Module, path: Path) -> None:
        raise KeyError(path)

    monkeypatch.setattr(module, 'check_input', broken)
    monkeypatch.setattr(dm, '_gather', dict)
    with pytest.raises(KeyError, match=r'b\.tif'):
        dm.setup('predict')


def test_output_names_do_not_depend_on_which_rasters_fail(tmp_path: Path) -> None:
    good, bad = tmp_path / 'a' / 'x.tif', tmp_path / 'b' / 'x.tif'
    for path in (good, bad):
        path.parent.mkdir()
    make_raster(good, 20, 20, seed=1)
    make_raster(bad, 20, 20, count=4, seed=2)  # the model takes 3 bands
    out = tmp_path / 'out'
    inputs = [str(good), str(bad)]
    with pytest.warns(UserWarning, match=r'skipped .*b.x\.tif'):
        results = predict_rasters(PixelModel(), inputs, out, keep_going=True, **OPTIONS)
    # named as if b had not failed
    assert results == {good: {'classes': out / 'a_x.tif'}}
    assert os.listdir(out) == ['a_x.tif']
    stamp = (out / 'a_x.tif').stat().st_mtime_ns
    make_raster(bad, 20, 20, seed=2)  # b mended: the rerun resumes
    results = predict_rasters(PixelModel(), inputs, out, keep_going=True, **OPTIONS)
    assert results == {
        good: {'classes': out / 'a_x.tif'},
        bad: {'classes': out / 'b_x.tif'},
    }
    assert sorted(os.listdir(out)) == ['a_x.tif', 'b_x.tif']
    assert (out / 'a_x.tif').stat().st_mtime_ns == stamp


def test_a_raster_that_fails_is_still_an_input_no_output_may_be(
    tmp_path: Path,
) -> None:
    good = make_raster(tmp_path / 'a.tif', 20, 20, seed=1)
    bad = make_raster(tmp_path / 'bad.tif', 20, 20, count=4, seed=2)
    out = tmp_path / 'out'
    out.mkdir()
    os.link(bad, out / 'a.tif')  # a's output is the raster that fails
    before = bad.read_bytes()
    with (
        pytest.warns(UserWarning, match=r'skipped .*bad\.tif'),
        pytest.raises(ValueError, match=r'bad\.tif \(the input raster #1\)'),
    ):
        predict_rasters(
            PixelModel(),
            [str(good), str(bad)],
            out,
            keep_going=True,
            overwrite=True,
            **OPTIONS,
        )
    assert bad.read_bytes() == before
    assert os.listdir(out) == ['a.tif']


def test_a_sidecar_that_is_another_inputs_output_is_refused(tmp_path: Path) -> None:
    src = tmp_path / 'src'
    src.mkdir()
    make_raster(src / 'a.tif', 20, 20, seed=1)
    make_raster(src / 'a_probabilities.tif', 20, 20, seed=2)
    out = tmp_path / 'out'
    clash = (
        rf'inputs {src / "a.tif"} and {src / "a_probabilities.tif"} would both be '
        rf'written to {out / "a_probabilities.tif"}'
    )
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=clash):
            predict_rasters(
                PixelModel(),
                src,
                out,
                probabilities=True,
                overwrite=overwrite,
                **OPTIONS,
            )
        assert not out.exists()  # before any work
    # without the probabilities no two inputs share a file
    results = predict_rasters(PixelModel(), src, out, **OPTIONS)
    assert [paths['classes'].name for paths in results.values()] == [
        'a.tif',
        'a_probabilities.tif',
    ]
    assert sorted(os.listdir(out)) == ['a.tif', 'a_probabilities.tif']
    pair = [Path('s/a.tif'), Path('s/a_uncertainty.tif')]
    with pytest.raises(ValueError, match=r'would both be written to o.a_unc'):
        outputs_for(pair, None, 'o', uncertainty=True)
    assert outputs_for(pair, None, 'o', probabilities=True) == [
        Path('o/a.tif'),
        Path('o/a_uncertainty.tif'),
    ]


def fake_trainer(inputs: list[Path]) -> Any:
    """Just what the writer's ``setup`` reads of a trainer on one process."""
    import torch

    strategy = SimpleNamespace(
        root_device=torch.device('cpu'),
        all_gather=lambda tensor: tensor,
        broadcast=lambda obj, src=0: obj,
    )
    datamodule = SimpleNamespace(
        inputs=inputs, rasters=inputs, support_bank=None, excluded=set()
    )
    return SimpleNamespace(
        datamodule=datamodule, ckpt_path=None, is_global_zero=True, strategy=strategy
    )


def test_output_checks_grow_linearly_with_the_rasters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchgeo_ssg2.inference import RasterPredictionWriter

    counts: dict[str, int] = {'stat': 0, 'listing': 0}
    stat, listdir, scandir = os.stat, os.listdir, os.scandir

    def counted(name: str, call: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return call(*args, **kwargs)

        return wrapper

    looked_up = {}
    for n in (50, 100):
        src = tmp_path / f'src{n}'
        src.mkdir()
        inputs = [src / f't{i}.tif' for i in range(n)]
        for path in inputs:
            path.touch()  # setup reads no pixel
        out = tmp_path / f'out{n}'
        out.mkdir()
        for i in range(0, n, 5):  # a rerun: some outputs are complete
            (out / f't{i}.tif').touch()
            (out / f't{i}_probabilities.tif').touch()
        writer = RasterPredictionWriter(output_dir=str(out), probabilities=True)
        counts.update(stat=0, listing=0)
        with monkeypatch.context() as patch:
            patch.setattr(os, 'stat', counted('stat', stat))
            patch.setattr(os, 'listdir', counted('listing', listdir))
            patch.setattr(os, 'scandir', counted('listing', scandir))
            try:
                writer.setup(fake_trainer(inputs), None, 'predict')  # type: ignore[arg-type]
            finally:
                writer._restore_warnings()
        assert len(writer.skipped) == n // 5
        looked_up[n] = dict(counts)
    # a few looks at each input and output, and one listing of the folder
    assert looked_up[100]['stat'] <= 2 * looked_up[50]['stat']
    assert looked_up[100]['listing'] == looked_up[50]['listing'] <= 2
