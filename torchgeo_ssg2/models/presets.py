"""Named hyper-parameter presets of the PTAViT / SSG2 family.

``"paper"`` is the official ISPRS configuration (96 filters, depths 2,2,5,2, 24
heads in the first stage, one 3D block); ``"small"`` is the 32-filter setting of
the cost benchmark; ``"tiny"`` (16 filters, 1.13 M parameters for SSG2) is the CPU
demo setting; ``"test"`` (8 filters) is the smallest sensible network, for unit
tests. Measured SSG2 training steps (forward and backward) at 128², B = 2, T = 2 on
one thread of a shared 2-core machine at load average 6: tiny 4.9 s, test 2.5 s (a
12-filter tiny, ``filters=12, heads=3``: 3.4 s); expect a fraction of that on an
idle core.
"""

import dataclasses
from dataclasses import dataclass

__all__ = ('PRESETS', 'ModelConfig', 'get_config', 'list_presets')


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters shared by SSG2 and PTAViT, checked on construction.

    Runtime switches that do not change the function (activation
    checkpointing, support and attention chunk sizes) are not part of it: they
    are arguments and setters of the models.

    Attributes:
        filters: channels F of the first stage (doubled at every stage).
        depths: blocks per encoder stage (four stages).
        heads: attention heads (convolution groups) of the first stage, doubled at
            every stage; ``None`` means ``filters // 4`` (24 for 96 filters).
        decoder_depths: blocks per decoder stage at H/16, H/8, H/4; ``None`` means
            the reversed first three encoder depths.
        blocks_3d: blocks of the 3D sequence model (SSG2 only).
        spatial_size: reference chip size of the attention grid schedule (the
            original's ``spatial_size_init``); it does not restrict the input size.
        dropout: feed-forward dropout.
        norm_groups: GroupNorm groups of the normed convolutions.
        expansion: MBConv expansion.
        se_ratio: MBConv squeeze-excitation ratio.
        segm_act: ``'sigmoid'`` (SigmoidCrisp) or ``'softmax'`` segmentation output.
    """

    filters: int = 96
    depths: tuple[int, ...] = (2, 2, 5, 2)
    heads: int | None = None
    decoder_depths: tuple[int, ...] | None = None
    blocks_3d: int = 1
    spatial_size: int = 256
    dropout: float = 0.1
    norm_groups: int = 4
    expansion: int = 4
    se_ratio: float = 0.25
    segm_act: str = 'sigmoid'

    def __post_init__(self) -> None:
        """Store sequences as tuples and check the hyper-parameters.

        Raises:
            ValueError: for inconsistent values.
        """
        for key in ('depths', 'decoder_depths'):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, tuple(value))
        self._validate()

    @property
    def stage_heads(self) -> tuple[int, ...]:
        """Attention heads of the four stages."""
        h0 = self.heads if self.heads is not None else max(1, self.filters // 4)
        return tuple(h0 * 2**i for i in range(len(self.depths)))

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Channels of the four stages."""
        return tuple(self.filters * 2**i for i in range(len(self.depths)))

    @property
    def dec_depths(self) -> tuple[int, ...]:
        """Blocks per decoder stage, from H/16 to H/4."""
        if self.decoder_depths is not None:
            return tuple(self.decoder_depths)
        return tuple(reversed(self.depths[:-1]))

    def _validate(self) -> None:
        for name in ('filters', 'norm_groups', 'expansion'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        if self.heads is not None and self.heads < 1:
            raise ValueError(f'heads must be >= 1 or None, got {self.heads}')
        if not 0 < self.se_ratio <= 1:
            raise ValueError(f'se_ratio must be in (0, 1], got {self.se_ratio}')
        if len(self.depths) != 4 or any(d < 1 for d in self.depths):
            raise ValueError(f'depths must be four positive ints, got {self.depths}')
        if len(self.dec_depths) != 3 or any(d < 1 for d in self.dec_depths):
            raise ValueError(
                f'decoder_depths must be three positive ints, got {self.dec_depths}'
            )
        if self.filters < 4 or self.filters % self.norm_groups or self.filters % 4:
            raise ValueError(
                f'filters={self.filters} must be a multiple of 4 and of '
                f'norm_groups={self.norm_groups}'
            )
        h0 = self.stage_heads[0]
        if self.filters % (2 * h0):
            raise ValueError(
                f'filters={self.filters} must be divisible by 2*heads={2 * h0}'
            )
        if self.blocks_3d < 0:
            raise ValueError(f'blocks_3d must be >= 0, got {self.blocks_3d}')
        if self.spatial_size < 32 or self.spatial_size % 32:
            raise ValueError(
                f'spatial_size must be a positive multiple of 32, got {self.spatial_size}'
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f'dropout must be in [0, 1), got {self.dropout}')
        if self.segm_act not in ('sigmoid', 'softmax'):
            raise ValueError(
                f"segm_act must be 'sigmoid' or 'softmax', got {self.segm_act!r}"
            )


PRESETS: dict[str, dict[str, object]] = {
    'paper': {'filters': 96, 'depths': (2, 2, 5, 2), 'heads': 24, 'blocks_3d': 1},
    'small': {'filters': 32, 'depths': (2, 2, 5, 2), 'heads': 8, 'blocks_3d': 1},
    'tiny': {'filters': 16, 'depths': (1, 1, 2, 1), 'heads': 4, 'blocks_3d': 1},
    'test': {'filters': 8, 'depths': (1, 1, 1, 1), 'heads': 2, 'blocks_3d': 1},
}


def list_presets() -> list[str]:
    """Names of the available presets.

    Returns:
        the preset names.
    """
    return list(PRESETS)


def get_config(preset: str = 'paper', **overrides: object) -> ModelConfig:
    """Build the configuration of a preset, with keyword overrides.

    Args:
        preset: a name from :func:`list_presets`.
        **overrides: any :class:`ModelConfig` field.

    Returns:
        the configuration.

    Raises:
        ValueError: for an unknown preset, an unknown override or a bad value.
    """
    if preset not in PRESETS:
        raise ValueError(f'unknown preset {preset!r}; choose one of {list_presets()}')
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f'unknown model option(s) {unknown}; valid: {sorted(names)}')
    return ModelConfig(**{**PRESETS[preset], **overrides})  # type: ignore[arg-type]
