"""PTAViT encoders: the single-image encoder and SSG2's dual-input encoder.

:class:`PTAViTEncoder` is ``conv1`` (1x1 conv + GN), a two-convolution stem (stride
2) and four down-sampling :class:`~torchgeo_ssg2.models.blocks.PTAViTStage` s; it
returns the full-resolution ``conv1`` map and the four stage outputs (smp style).

:class:`DualPTAViTEncoder` applies that encoder, with shared weights, to a target
and each of its supports, fuses the full-resolution maps with
:class:`~torchgeo_ssg2.models.fusion.FusionV2` and, after every stage, exchanges
information by cross-attention (target first, then the support attending to the
updated target) and fuses the two streams with
:class:`~torchgeo_ssg2.models.fusion.FusionCAT`. The support only enters through
those fusions, so the target's ``conv1``, stem and first stage are computed once
per target and broadcast over the T supports, which are folded into the batch.
The stages of the folded streams normalise each support with its own BatchNorm
statistics (:func:`~torchgeo_ssg2.models.layers.norm.batch_groups`), as a loop
over the supports does.
"""

from functools import partial

from torch import Tensor, nn

from .attention import RelPatchAttention2D, channel_splits_for, spatial_grid
from .blocks import PTAViTStage
from .fusion import FusionCAT, FusionV2
from .layers import Conv2dNormed, MBConv, batch_groups
from .presets import ModelConfig

__all__ = (
    'DualPTAViTEncoder',
    'PTAViTEncoder',
    'ptavit_stage',
    'stage_attention_scales',
)


def stage_attention_scales(config: ModelConfig, level: int) -> tuple[int, int]:
    """Token channel splits and spatial grid of the attention at level ``level``.

    Level ``i`` works at stride ``4·2^i`` with ``filters·2^i`` channels. The
    official schedule (96 filters, 256 px) is 16·2^i channel splits and a
    (16/2^i)/4 grid; both are rescaled with ``filters/96`` and
    ``spatial_size/256`` and rounded to powers of two.

    Args:
        config: the model configuration.
        level: 0..3.

    Returns:
        ``(channel_splits, grid)``.
    """
    channels = config.stage_channels[level]
    splits = channel_splits_for(16 * 2**level * config.filters / 96, channels)
    grid = spatial_grid(4 * 2**level, config.spatial_size)
    return splits, grid


def ptavit_stage(
    config: ModelConfig, level: int, dim_in: int, depth: int, downsample: bool
) -> PTAViTStage:
    """A 2D PTAViT stage working at encoder level ``level``.

    Args:
        config: the model configuration.
        level: 0..3 (channels ``filters·2^level``, stride ``4·2^level``).
        dim_in: input channels.
        depth: number of blocks.
        downsample: halve the resolution in the first block.

    Returns:
        the stage (MBConv and RelPatchAttention2D blocks).
    """
    splits, grid = stage_attention_scales(config, level)
    return PTAViTStage(
        dim_in,
        config.stage_channels[level],
        depth,
        mbconv_layer=partial(
            MBConv, expansion=config.expansion, se_ratio=config.se_ratio
        ),
        attn_layer=partial(
            RelPatchAttention2D,
            heads=config.stage_heads[level],
            channel_splits=splits,
            grid=grid,
        ),
        downsample=downsample,
        dropout=config.dropout,
    )


def _fold(x: Tensor) -> Tensor:
    """BxTxCxHxW -> (B·T)xCxHxW."""
    return x.reshape(-1, *x.shape[2:])


def _unfold(x: Tensor, b: int) -> Tensor:
    """(B·T)xCxHxW -> BxTxCxHxW."""
    return x.reshape(b, -1, *x.shape[1:])


class PTAViTEncoder(nn.Module):
    """Single-image PTAViT encoder: conv1, stem and four down-sampling stages."""

    def __init__(self, in_channels: int, config: ModelConfig) -> None:
        """Initialise the encoder.

        Args:
            in_channels: input bands C.
            config: the model configuration.
        """
        super().__init__()
        f = config.filters
        self.conv1 = Conv2dNormed(in_channels, f, 1, norm_groups=config.norm_groups)
        self.stem = nn.Sequential(
            nn.Conv2d(f, f, 3, stride=2, padding=1), nn.Conv2d(f, f, 3, padding=1)
        )
        channels = config.stage_channels
        self.stages = nn.ModuleList(
            ptavit_stage(config, i, channels[i - 1] if i else f, depth, True)
            for i, depth in enumerate(config.depths)
        )
        self.out_channels = (f, *channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Encode an image batch.

        Args:
            x: BxCxHxW images (H, W multiples of 32).

        Returns:
            ``[conv1 BxFxHxW, BxFxH/4xW/4, Bx2FxH/8xW/8, Bx4FxH/16xW/16,
            Bx8FxH/32xW/32]``.
        """
        x0 = self.conv1(x)
        x = self.stem(x0)
        features = [x0]
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class DualPTAViTEncoder(nn.Module):
    """Shared-weight target/support encoder with cross-attention after every stage."""

    def __init__(self, in_channels: int, config: ModelConfig) -> None:
        """Initialise the encoder.

        Args:
            in_channels: input bands C.
            config: the model configuration.
        """
        super().__init__()
        self.encoder = PTAViTEncoder(in_channels, config)
        f = config.filters
        # as in the official code: dense projections (one head) and 16 channel
        # splits whatever the width (the stage attentions scale both with F)
        self.fuse_first = FusionV2(
            f,
            1,
            channel_splits_for(16, f),
            spatial_grid(1, config.spatial_size),
            config.norm_groups,
        )
        self.cross = nn.ModuleList()
        self.fusions = nn.ModuleList()
        for i, channels in enumerate(config.stage_channels):
            splits, grid = stage_attention_scales(config, i)
            heads = config.stage_heads[i]
            self.cross.append(
                RelPatchAttention2D(
                    channels, heads, splits, grid, norm_groups=config.norm_groups
                )
            )
            self.fusions.append(FusionCAT(channels, heads, config.norm_groups))
        self.out_channels = self.encoder.out_channels

    def target_features(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """The support-independent part of the target stream.

        Args:
            image: BxCxHxW target images.

        Returns:
            ``conv1`` output BxFxHxW and first-stage output BxFxH/4xW/4.
        """
        enc = self.encoder
        x0 = enc.conv1(image)
        return x0, enc.stages[0](enc.stem(x0))

    def forward(
        self,
        image: Tensor,
        support_image: Tensor,
        target_features: tuple[Tensor, Tensor] | None = None,
    ) -> list[Tensor]:
        """Encode a target against T supports in one batched pass.

        Args:
            image: BxCxHxW target images.
            support_image: BxTxCxHxW supports.
            target_features: the output of :meth:`target_features` for ``image``,
                to reuse it across chunks of supports.

        Returns:
            fused maps ``[BxTxFxHxW, BxTxFxH/4xW/4, ..., BxTx8FxH/32xW/32]``.
        """
        enc = self.encoder
        b, t = support_image.shape[:2]
        if target_features is None:
            target_features = self.target_features(image)
        xt0, xt = (x.unsqueeze(1) for x in target_features)
        xs0 = _unfold(enc.conv1(_fold(support_image)), b)
        features = [self.fuse_first(xt0, xs0)]
        with batch_groups(t):
            xs = _unfold(enc.stages[0](enc.stem(_fold(xs0))), b)
        for i, (cross, fusion) in enumerate(zip(self.cross, self.fusions, strict=True)):
            if i:
                with batch_groups(t):
                    xt = _unfold(enc.stages[i](_fold(xt)), b)
                    xs = _unfold(enc.stages[i](_fold(xs)), b)
            xt = xt + cross(xs, xt)
            xs = xs + cross(xt, xs)
            features.append(fusion(xt, xs))
        return features
