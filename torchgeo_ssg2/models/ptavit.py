"""PTAViT stages: MBConv, the multiplicative patch-attention gate and a feed-forward.

A PTAViT block follows the MaxViT layout with the window/grid attention replaced
by Tanimoto relative patch attention:
``x = MBConv(x)``; ``x = x · (1 + Att(LN(x)))``; ``x = x + FFN(LN(x))``.
:class:`PTAViTStage` works on BxCxHxW maps; :class:`PTAViTStage3D` is the
non-recurrent sequence model of SSG2 on BxCxTxHxW stacks.
"""

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import RelPatchAttention2D, RelPatchAttention3D
from .layers import ChannelLayerNorm, DepthwiseConv3d, GroupedBatchNorm

__all__ = (
    'MBConv',
    'MBConv3D',
    'PTAViTBlock',
    'PTAViTBlock3D',
    'PTAViTStage',
    'PTAViTStage3D',
)


class FeedForward(nn.Sequential):
    """Channels-last ``Linear(d, m·d) → GELU → Dropout → Linear(m·d, d) → Dropout``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.1) -> None:
        """Initialise the layer.

        Args:
            dim: channels d.
            mult: expansion of the hidden layer.
            dropout: dropout probability.
        """
        super().__init__(
            nn.Linear(dim, mult * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mult * dim, dim),
            nn.Dropout(dropout),
        )


class _PreNormFeedForward(nn.Module):
    """``x + FFN(LN(x))`` over the channel axis 1 of a channels-first tensor."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, 4, dropout)

    def forward(self, x: Tensor) -> Tensor:
        y = x.movedim(1, -1)
        y = y + self.ffn(self.norm(y))
        return y.movedim(-1, 1)


class _SqueezeExcitation(nn.Module):
    """Mean-pool → Linear → SiLU → Linear → Sigmoid channel gate.

    The pooling runs over the last ``pool_dims`` axes, so a BxCxTxHxW input
    pooled over (H, W) gets one gate per sequence element.
    """

    def __init__(self, dim: int, hidden: int, pool_dims: tuple[int, ...]) -> None:
        super().__init__()
        self.pool_dims = pool_dims
        self.reduce = nn.Linear(dim, hidden, bias=False)
        self.act = nn.SiLU()
        self.expand = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=self.pool_dims)  # BxC(xT)
        s = s.movedim(1, -1)
        s = torch.sigmoid(self.expand(self.act(self.reduce(s)))).movedim(-1, 1)
        return x * s.reshape(*s.shape, *([1] * len(self.pool_dims)))


class MBConv(nn.Module):
    """Inverted bottleneck with squeeze-excitation (MaxViT's MBConv), 2D.

    ``1x1 conv → BN → GELU → depthwise 3x3 (stride 2 when down-sampling) → BN →
    GELU → SE → 1x1 conv → BN``, plus a residual when shapes allow. BatchNorm
    statistics can be grouped (see :class:`GroupedBatchNorm`).
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        downsample: bool = False,
        expansion: int = 4,
        se_ratio: float = 0.25,
    ) -> None:
        """Initialise the layer.

        Args:
            dim_in: input channels.
            dim_out: output channels.
            downsample: halve the resolution in the depthwise convolution.
            expansion: hidden channels = ``expansion · dim_out``.
            se_ratio: squeeze-excitation hidden size as a fraction of the hidden
                channels.
        """
        super().__init__()
        hidden = expansion * dim_out
        self.residual = dim_in == dim_out and not downsample
        self.conv_in = nn.Conv2d(dim_in, hidden, 1)
        self.bn_in = GroupedBatchNorm(hidden)
        self.conv_dw = nn.Conv2d(
            hidden, hidden, 3, stride=2 if downsample else 1, padding=1, groups=hidden
        )
        self.bn_dw = GroupedBatchNorm(hidden)
        self.se = _SqueezeExcitation(hidden, int(hidden * se_ratio), (-2, -1))
        self.conv_out = nn.Conv2d(hidden, dim_out, 1)
        self.bn_out = GroupedBatchNorm(dim_out)
        self.act = nn.GELU()

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:
        """Apply the block.

        Args:
            x: (B·G)xC_inxHxW input (a BxGx... batch folded b-major).
            groups: G, the number of batch groups with separate BN statistics.

        Returns:
            (B·G)xC_outxH'xW' output, H' = H/2 when down-sampling.
        """
        y = self.act(self.bn_in(self.conv_in(x), groups))
        y = self.act(self.bn_dw(self.conv_dw(y), groups))
        y = self.bn_out(self.conv_out(self.se(y)), groups)
        return y + x if self.residual else y


class PTAViTBlock(nn.Module):
    """MBConv → ``x·(1 + Att(LN(x)))`` → ``x + FFN(LN(x))`` on BxCxHxW maps."""

    def __init__(
        self,
        dim_in: int,
        dim: int,
        heads: int,
        cgroups: int,
        grid: int,
        downsample: bool = False,
        dropout: float = 0.1,
        expansion: int = 4,
        se_ratio: float = 0.25,
    ) -> None:
        """Initialise the block.

        Args:
            dim_in: input channels.
            dim: output channels.
            heads: attention convolution groups.
            cgroups: attention channel groups per token.
            grid: attention spatial grid.
            downsample: halve the resolution in the MBConv.
            dropout: feed-forward dropout.
            expansion: MBConv expansion.
            se_ratio: MBConv squeeze-excitation ratio.
        """
        super().__init__()
        self.mbconv = MBConv(dim_in, dim, downsample, expansion, se_ratio)
        self.att_norm = ChannelLayerNorm(dim)
        self.att = RelPatchAttention2D(dim, heads, cgroups, grid)
        self.ffn = _PreNormFeedForward(dim, dropout)

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:
        """Apply the block.

        Args:
            x: (B·G)xC_inxHxW input.
            groups: batch groups with separate BN statistics.

        Returns:
            (B·G)xCxH'xW' output.
        """
        x = self.mbconv(x, groups)
        x = torch.addcmul(x, x, self.att(self.att_norm(x)))
        return self.ffn(x)


class PTAViTStage(nn.Sequential):
    """A sequence of :class:`PTAViTBlock`, the first one possibly down-sampling."""

    def __init__(
        self,
        dim_in: int,
        dim: int,
        depth: int,
        heads: int,
        cgroups: int,
        grid: int,
        downsample: bool = False,
        dropout: float = 0.1,
        expansion: int = 4,
        se_ratio: float = 0.25,
    ) -> None:
        """Initialise the stage.

        Args:
            dim_in: input channels.
            dim: output channels.
            depth: number of blocks.
            heads: attention convolution groups.
            cgroups: attention channel groups per token.
            grid: attention spatial grid (at the stage's output resolution).
            downsample: halve the resolution in the first block.
            dropout: feed-forward dropout.
            expansion: MBConv expansion.
            se_ratio: MBConv squeeze-excitation ratio.
        """
        super().__init__(
            *(
                PTAViTBlock(
                    dim_in if i == 0 else dim,
                    dim,
                    heads,
                    cgroups,
                    grid,
                    downsample and i == 0,
                    dropout,
                    expansion,
                    se_ratio,
                )
                for i in range(depth)
            )
        )

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:
        """Apply the stage.

        Args:
            x: (B·G)xC_inxHxW input.
            groups: batch groups with separate BN statistics (a folded
                sequence of G supports gets per-support statistics).

        Returns:
            (B·G)xCxH'xW' output.
        """
        for block in self:
            x = block(x, groups)
        return x


class MBConv3D(nn.Module):
    """3D MBConv on BxCxTxHxW stacks.

    ``1x1x1 → BN → GELU → depthwise 3x3x3 → BN → GELU → SE per step → 1x1x1 → BN``
    plus a residual; the depthwise convolution is zero padded in T.
    """

    def __init__(self, dim: int, expansion: int = 4, se_ratio: float = 0.25) -> None:
        """Initialise the layer.

        Args:
            dim: input and output channels.
            expansion: hidden channels = ``expansion · dim``.
            se_ratio: squeeze-excitation hidden fraction.
        """
        super().__init__()
        hidden = expansion * dim
        self.net = nn.Sequential(
            nn.Conv3d(dim, hidden, 1),
            nn.BatchNorm3d(hidden),
            nn.GELU(),
            DepthwiseConv3d(hidden, 3),
            nn.BatchNorm3d(hidden),
            nn.GELU(),
            _SqueezeExcitation(hidden, int(hidden * se_ratio), (-2, -1)),
            nn.Conv3d(hidden, dim, 1),
            nn.BatchNorm3d(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: BxCxTxHxW input.

        Returns:
            BxCxTxHxW output.
        """
        return x + self.net(x)


class PTAViTBlock3D(nn.Module):
    """3D block: MBConv3D → ``x·(1 + Att3D(LN(x)))`` → ``x + FFN(LN(x))``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        grid: int,
        dropout: float = 0.1,
        expansion: int = 4,
        se_ratio: float = 0.25,
    ) -> None:
        """Initialise the block.

        Args:
            dim: channels.
            heads: attention convolution groups.
            grid: attention spatial grid.
            dropout: feed-forward dropout.
            expansion: MBConv expansion.
            se_ratio: MBConv squeeze-excitation ratio.
        """
        super().__init__()
        self.mbconv = MBConv3D(dim, expansion, se_ratio)
        self.att_norm = ChannelLayerNorm(dim)
        self.att = RelPatchAttention3D(dim, heads, grid)
        self.ffn = _PreNormFeedForward(dim, dropout)

    def _attend(self, x: Tensor) -> Tensor:
        return torch.addcmul(x, x, self.att(self.att_norm(x)))

    def forward(self, x: Tensor, checkpointing: bool = False) -> Tensor:
        """Apply the block.

        Args:
            x: BxCxTxHxW input.
            checkpointing: recompute each of the three parts (MBConv, attention
                gate, feed-forward) separately in backward, so that only one
                part's activations are alive at a time.

        Returns:
            BxCxTxHxW output.
        """
        if not checkpointing:
            return self.ffn(self._attend(self.mbconv(x)))
        for part in (self.mbconv, self._attend, self.ffn):
            x = checkpoint(part, x, use_reentrant=False)
        return x


class PTAViTStage3D(nn.Sequential):
    """The SSG2 sequence model: :class:`PTAViTBlock3D` blocks without down-sampling.

    Not recurrent and valid for any T >= 1 (padded 3D convolutions, per-step SE,
    mean compaction), but not permutation invariant in T.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        grid: int,
        dropout: float = 0.1,
        expansion: int = 4,
        se_ratio: float = 0.25,
    ) -> None:
        """Initialise the stage.

        Args:
            dim: channels.
            depth: number of blocks.
            heads: attention convolution groups.
            grid: attention spatial grid.
            dropout: feed-forward dropout.
            expansion: MBConv expansion.
            se_ratio: MBConv squeeze-excitation ratio.
        """
        super().__init__(
            *(
                PTAViTBlock3D(dim, heads, grid, dropout, expansion, se_ratio)
                for _ in range(depth)
            )
        )

    def forward(self, x: Tensor, checkpointing: bool = False) -> Tensor:
        """Apply the stage.

        Args:
            x: BxCxTxHxW input.
            checkpointing: per-part activation checkpointing of every block
                (see :meth:`PTAViTBlock3D.forward`).

        Returns:
            BxCxTxHxW output.
        """
        for block in self:
            x = block(x, checkpointing)
        return x
