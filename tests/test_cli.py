import sys
from pathlib import Path

import pytest

from torchgeo_ssg2 import cli
from torchgeo_ssg2.tasks import SSG2Task
from torchgeo_ssg2.trainers import SSG2Task as TrainersSSG2Task


def test_help_lists_own_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(['--help'])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert 'prepare' in out
    assert 'predict' in out


@pytest.mark.parametrize(
    ('argv', 'lightning'),
    [
        (['fit', '--config', 'x.yaml'], True),
        (['validate'], True),
        (['test', '--config', 'x.yaml'], True),
        (['predict', '--config', 'x.yaml'], True),
        (['predict', '--checkpoint', 'a.ckpt', '--input', 'a.tif'], False),
        (['predict', '--checkpoint=a.ckpt'], False),
        (['predict', '--help'], False),
        (['predict'], False),
        (['predict', '-c', 'x.yaml'], True),
        (['prepare', 'potsdam', 'a', 'b'], False),
        ([], False),
    ],
)
def test_dispatch(argv: list[str], lightning: bool) -> None:
    assert cli._is_lightning_call(argv) is lightning


def test_predict_help_shows_the_raster_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(['predict', '--help'])
    assert info.value.code == 0
    out = ' '.join(capsys.readouterr().out.split())
    for option in ('--output-dir', '--devices', '--vrt', '--cog', '--bank-images'):
        assert option in out
    assert '(default: auto)' in out  # --device
    assert '(default: 256)' in out  # --window


def test_tasks_alias() -> None:
    assert SSG2Task is TrainersSSG2Task


def test_fit_with_short_class_names(tmp_path: Path) -> None:
    # Short names resolve because the CLI imports the package before parsing.
    root = Path(__file__).parent / 'data' / 'dubai' / 'data'
    config = tmp_path / 'short.yaml'
    config.write_text(
        f"""
model:
  class_path: SSG2Task
  init_args:
    preset: test
    in_channels: 3
    num_classes: 5
    ignore_index: 255
data:
  class_path: DubaiAerialDataModule
  init_args:
    batch_size: 2
    patch_size: 32
    sequence_length: 2
  dict_kwargs:
    root: {root}
"""
    )
    status = cli.main(
        [
            'fit',
            '--config',
            str(config),
            '--trainer.accelerator',
            'cpu',
            '--trainer.fast_dev_run',
            '1',
            '--trainer.default_root_dir',
            str(tmp_path),
        ]
    )
    assert status == 0


def test_console_script_entry_point() -> None:
    from importlib.metadata import entry_points

    (ep,) = [
        e for e in entry_points(group='console_scripts') if e.name == 'torchgeo-ssg2'
    ]
    assert ep.value == 'torchgeo_ssg2.cli:main'
    assert sys.modules['torchgeo_ssg2.cli'] is cli


def test_top_level_public_names() -> None:
    import torchgeo_ssg2

    for name in torchgeo_ssg2.__all__:
        assert getattr(torchgeo_ssg2, name) is not None
    with pytest.raises(AttributeError, match='no attribute'):
        torchgeo_ssg2.does_not_exist  # noqa: B018
