import pytest

from torchgeo_ssg2.models.presets import ModelConfig, get_config, list_presets


def test_presets() -> None:
    assert list_presets() == ['paper', 'small', 'tiny', 'test']
    paper = get_config('paper')
    assert paper.filters == 96
    assert paper.depths == (2, 2, 5, 2)
    assert paper.stage_heads == (24, 48, 96, 192)
    assert paper.stage_channels == (96, 192, 384, 768)
    assert paper.dec_depths == (5, 2, 2)
    assert paper.blocks_3d == 1
    assert get_config('small').filters == 32


def test_overrides() -> None:
    config = get_config('test', filters=16, depths=[1, 2, 1, 1], heads=None)
    assert config.filters == 16
    assert config.depths == (1, 2, 1, 1)
    assert config.stage_heads[0] == 4


@pytest.mark.parametrize(
    ('overrides', 'match'),
    [
        ({'depths': (1, 1, 1)}, 'depths'),
        ({'filters': 10}, 'filters'),
        ({'heads': 3}, 'heads'),
        ({'spatial_size': 100}, 'spatial_size'),
        ({'dropout': 1.0}, 'dropout'),
        ({'segm_act': 'tanh'}, 'segm_act'),
        ({'expansion': 0}, 'expansion'),
        ({'se_ratio': 0.0}, 'se_ratio'),
        ({'norm_groups': 0}, 'norm_groups'),
        ({'support_chunk_size': 2}, 'unknown'),
        ({'nope': 1}, 'unknown'),
    ],
)
def test_bad_overrides(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_config('test', **overrides)


def test_config_validates_on_construction() -> None:
    with pytest.raises(ValueError, match='depths'):
        ModelConfig(filters=6, depths=(1,))
    with pytest.raises(ValueError, match='filters'):
        ModelConfig(filters=6)
    config = ModelConfig(depths=[1, 1, 1, 1])  # type: ignore[arg-type]
    assert config.depths == (1, 1, 1, 1)
    assert hash(config) == hash(ModelConfig(depths=(1, 1, 1, 1)))
