"""The PTAViT decoder shared by SSG2 and the PTAViT baseline."""

from torch import Tensor, nn

from .attention import channel_splits_for, spatial_grid
from .encoder import ptavit_stage
from .fusion import CombineLayers, FuseHiLo
from .presets import ModelConfig

__all__ = ('PTAViTDecoder',)


class PTAViTDecoder(nn.Module):
    """UNet-like decoder: three up-sampling steps and a full-resolution merge.

    From ``ReLU(f3)`` (H/32), each step is :class:`~torchgeo_ssg2.models.fusion.
    CombineLayers` with the skip of its level followed by a non-down-sampling
    :class:`~torchgeo_ssg2.models.blocks.PTAViTStage` (H/16, H/8, H/4); then
    :class:`~torchgeo_ssg2.models.fusion.FuseHiLo` merges the H/4 map with the
    full-resolution skip.
    """

    def __init__(self, config: ModelConfig) -> None:
        """Initialise the decoder.

        Args:
            config: the model configuration.
        """
        super().__init__()
        channels = config.stage_channels
        self.combines = nn.ModuleList()
        self.stages = nn.ModuleList()
        for level, depth in zip((2, 1, 0), config.dec_depths, strict=True):
            self.combines.append(CombineLayers(channels[level], config.norm_groups))
            self.stages.append(
                ptavit_stage(config, level, channels[level], depth, downsample=False)
            )
        f = config.filters
        self.fuse_hilo = FuseHiLo(
            f,
            config.stage_heads[0],
            channel_splits_for(4, f),
            spatial_grid(1, config.spatial_size, base=8),
            config.norm_groups,
        )

    def forward(self, features: list[Tensor]) -> Tensor:
        """Decode.

        Args:
            features: ``[BxFxHxW, BxFxH/4xW/4, Bx2FxH/8xW/8, Bx4FxH/16xW/16,
                Bx8FxH/32xW/32]`` (full-resolution skip first).

        Returns:
            BxFxHxW features.
        """
        x = features[4].relu()
        for level, combine, stage in zip(
            (2, 1, 0), self.combines, self.stages, strict=True
        ):
            x = stage(combine(x, features[level + 1]))
        return self.fuse_hilo(x, features[0])
