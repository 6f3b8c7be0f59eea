"""MBConv: MaxViT's inverted bottleneck with squeeze-excitation, 2D and 3D.

Both take ``(dim_in, dim_out, downsample, expansion, se_ratio)``, so that a
PTAViT block can be built from either (see
:class:`~torchgeo_ssg2.models.blocks.PTAViTBlock`).
"""

import torch
from torch import Tensor, nn

from .conv import DepthwiseConv3d
from .norm import GroupedBatchNorm

__all__ = ('MBConv', 'MBConv3D', 'SqueezeExcitation')


class SqueezeExcitation(nn.Module):
    """Mean-pool → Linear → SiLU → Linear → Sigmoid channel gate.

    The pooling runs over the last ``pool_dims`` axes, so a BxCxTxHxW input
    pooled over (H, W) gets one gate per sequence element.
    """

    def __init__(self, dim: int, hidden: int, pool_dims: tuple[int, ...]) -> None:
        """Initialise the layer.

        Args:
            dim: channels C (axis 1).
            hidden: hidden units of the gate.
            pool_dims: the axes averaged away.
        """
        super().__init__()
        self.pool_dims = pool_dims
        self.reduce = nn.Linear(dim, hidden, bias=False)
        self.act = nn.SiLU()
        self.expand = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Gate the channels.

        Args:
            x: BxCx... input.

        Returns:
            a tensor of the shape of ``x``.
        """
        s = x.mean(dim=self.pool_dims)  # BxC(xT)
        s = s.movedim(1, -1)
        s = torch.sigmoid(self.expand(self.act(self.reduce(s)))).movedim(-1, 1)
        return x * s.reshape(*s.shape, *([1] * len(self.pool_dims)))


class MBConv(nn.Module):
    """2D MBConv on BxCxHxW maps.

    ``1x1 conv → BN → GELU → depthwise 3x3 (stride 2 when down-sampling) → BN →
    GELU → SE → 1x1 conv → BN``, plus a residual when shapes allow. The
    BatchNorms are :class:`~torchgeo_ssg2.models.layers.norm.GroupedBatchNorm`
    (per-support statistics inside
    :func:`~torchgeo_ssg2.models.layers.norm.batch_groups`).
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
        self.se = SqueezeExcitation(hidden, int(hidden * se_ratio), (-2, -1))
        self.conv_out = nn.Conv2d(hidden, dim_out, 1)
        self.bn_out = GroupedBatchNorm(dim_out)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: BxC_inxHxW input.

        Returns:
            BxC_outxH'xW' output, H' = H/2 when down-sampling.
        """
        y = self.act(self.bn_in(self.conv_in(x)))
        y = self.act(self.bn_dw(self.conv_dw(y)))
        y = self.bn_out(self.conv_out(self.se(y)))
        return y + x if self.residual else y


class MBConv3D(nn.Module):
    """3D MBConv on BxCxTxHxW stacks.

    ``1x1x1 → BN → GELU → depthwise 3x3x3 → BN → GELU → SE per step → 1x1x1 → BN``
    plus a residual; the depthwise convolution is zero padded in T.
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
            dim_out: output channels (must equal ``dim_in``).
            downsample: must be False (the sequence model keeps its size).
            expansion: hidden channels = ``expansion · dim``.
            se_ratio: squeeze-excitation hidden fraction.

        Raises:
            ValueError: for ``dim_in != dim_out`` or ``downsample``.
        """
        super().__init__()
        if dim_in != dim_out or downsample:
            raise ValueError(
                'MBConv3D keeps channels and size: dim_in must equal dim_out and '
                f'downsample be False, got {dim_in}, {dim_out}, {downsample}'
            )
        hidden = expansion * dim_out
        self.residual = True
        self.net = nn.Sequential(
            nn.Conv3d(dim_in, hidden, 1),
            nn.BatchNorm3d(hidden),
            nn.GELU(),
            DepthwiseConv3d(hidden, 3),
            nn.BatchNorm3d(hidden),
            nn.GELU(),
            SqueezeExcitation(hidden, int(hidden * se_ratio), (-2, -1)),
            nn.Conv3d(hidden, dim_out, 1),
            nn.BatchNorm3d(dim_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: BxCxTxHxW input.

        Returns:
            BxCxTxHxW output.
        """
        return x + self.net(x)
