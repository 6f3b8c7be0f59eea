"""PTAViT encoders: the single-image encoder and SSG2's dual-input encoder.

:class:`PTAViTEncoder` is ``conv1`` (1x1 conv + GN), a two-convolution stem (stride
2) and four down-sampling :class:`~torchgeo_ssg2.models.ptavit.PTAViTStage` s; it
returns the full-resolution ``conv1`` map and the four stage outputs (smp style).

:class:`DualPTAViTEncoder` applies that encoder, with shared weights, to a target
and each of its supports, fuses the full-resolution maps with
:class:`~torchgeo_ssg2.models.fusion.FusionV2` and, after every stage, exchanges
information by cross-attention (target first, then the support attending to the
updated target) and fuses the two streams with
:class:`~torchgeo_ssg2.models.fusion.FusionCAT`. The support only enters through
those fusions, so the target's ``conv1``, stem and first stage are computed once
per target and broadcast over the T supports, which are folded into the batch.
"""

from torch import Tensor, nn

from .attention import RelPatchAttention2D, channel_groups, spatial_grid
from .fusion import FusionCAT, FusionV2
from .layers import Conv2dNormed
from .presets import ModelConfig
from .ptavit import PTAViTStage

__all__ = ('DualPTAViTEncoder', 'PTAViTEncoder', 'stage_attention_scales')


def stage_attention_scales(config: ModelConfig, level: int) -> tuple[int, int]:
    """Channel groups and spatial grid of the attention at encoder level ``level``.

    Level ``i`` works at stride ``4·2^i`` with ``filters·2^i`` channels. The
    official schedule (96 filters, 256 px) is 16·2^i channel groups and a
    (16/2^i)/4 grid; both are rescaled with ``filters/96`` and
    ``spatial_size/256`` and rounded to powers of two.

    Args:
        config: the model configuration.
        level: 0..3.

    Returns:
        ``(cgroups, grid)``.
    """
    channels = config.stage_channels[level]
    cgroups = channel_groups(16 * 2**level * config.filters / 96, channels)
    grid = spatial_grid(4 * 2**level, config.spatial_size)
    return cgroups, grid


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
        self.stages = nn.ModuleList()
        for i, depth in enumerate(config.depths):
            cgroups, grid = stage_attention_scales(config, i)
            self.stages.append(
                PTAViTStage(
                    channels[i - 1] if i else f,
                    channels[i],
                    depth,
                    config.stage_heads[i],
                    cgroups,
                    grid,
                    downsample=True,
                    dropout=config.dropout,
                    expansion=config.expansion,
                    se_ratio=config.se_ratio,
                )
            )
        self.out_channels = (f, *channels)

    def forward(self, x: Tensor, groups: int = 1) -> list[Tensor]:
        """Encode an image batch.

        Args:
            x: BxCxHxW images (H, W multiples of 32).
            groups: batch groups with separate BatchNorm statistics.

        Returns:
            ``[conv1 BxFxHxW, BxFxH/4xW/4, Bx2FxH/8xW/8, Bx4FxH/16xW/16,
            Bx8FxH/32xW/32]``.
        """
        x0 = self.conv1(x)
        x = self.stem(x0)
        features = [x0]
        for stage in self.stages:
            x = stage(x, groups)
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
        # groups whatever the width (the stage attentions scale both with F)
        self.fuse_first = FusionV2(
            f,
            1,
            channel_groups(16, f),
            spatial_grid(1, config.spatial_size),
            config.norm_groups,
        )
        self.cross = nn.ModuleList()
        self.fusions = nn.ModuleList()
        for i, channels in enumerate(config.stage_channels):
            cgroups, grid = stage_attention_scales(config, i)
            heads = config.stage_heads[i]
            self.cross.append(
                RelPatchAttention2D(
                    channels, heads, cgroups, grid, norm_groups=config.norm_groups
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
        xs = _fold(xs0)
        xs = _unfold(enc.stages[0](enc.stem(xs), t), b)
        for i, (cross, fusion) in enumerate(zip(self.cross, self.fusions, strict=True)):
            if i:
                xt = _unfold(enc.stages[i](_fold(xt), t), b)
                xs = _unfold(enc.stages[i](_fold(xs), t), b)
            xt = xt + cross(xs, xt)
            xs = xs + cross(xt, xs)
            features.append(fusion(xt, xs))
        return features

    def forward_pair(self, image: Tensor, support: Tensor) -> list[Tensor]:
        """Reference path: encode one target/support pair the plain way.

        Everything is recomputed for the pair, as in the official per-support loop.

        Args:
            image: BxCxHxW target images.
            support: BxCxHxW support images.

        Returns:
            fused maps ``[BxFxHxW, BxFxH/4xW/4, ..., Bx8FxH/32xW/32]``.
        """
        enc = self.encoder
        xt0, xs0 = enc.conv1(image), enc.conv1(support)
        features = [self.fuse_first(xt0, xs0)]
        xt, xs = enc.stem(xt0), enc.stem(xs0)
        for stage, cross, fusion in zip(
            enc.stages, self.cross, self.fusions, strict=True
        ):
            xt, xs = stage(xt), stage(xs)
            xt = xt + cross(xs, xt)
            xs = xs + cross(xt, xs)
            features.append(fusion(xt, xs))
        return features
