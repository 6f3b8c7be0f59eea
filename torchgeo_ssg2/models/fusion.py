"""Fusion and up-sampling layers: FusionV2, FusionCAT, CombineLayers and FuseHiLo."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import RelPatchAttention2D
from .layers import Conv2dNormed

__all__ = ('CombineLayers', 'FuseHiLo', 'FusionCAT', 'FusionV2')


def _flat_apply(module: nn.Module, x: Tensor) -> Tensor:
    """Apply a 4D module to a ...xCxHxW tensor, folding the leading axes."""
    y = module(x.reshape(-1, *x.shape[-3:]))
    return y.reshape(*x.shape[:-3], *y.shape[-3:])


class FusionV2(nn.Module):
    """Cross-attention fusion of the two full-resolution streams.

    ``out12 = x1 + Att(q=x2, kv=x1)``, ``out21 = x2 + Att(q=x1, kv=x2)`` (one
    shared attention), ``out = ReLU(GN(Conv3x3(cat[out12, out21])))``. The
    attention's projections use ``norm_groups`` GroupNorm groups, as in the
    official code.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        channel_splits: int,
        grid: int,
        norm_groups: int = 4,
    ) -> None:
        """Initialise the layer.

        Args:
            channels: channels C of each stream and of the output.
            heads: attention convolution groups.
            channel_splits: attention token channel splits.
            grid: attention spatial grid.
            norm_groups: GroupNorm groups of the fusion convolution.
        """
        super().__init__()
        self.att = RelPatchAttention2D(
            channels, heads, channel_splits, grid, norm_groups=norm_groups
        )
        self.fuse = Conv2dNormed(2 * channels, channels, 3, norm_groups=norm_groups)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Fuse the streams.

        Args:
            x1: ...xCxHxW first (target) stream.
            x2: ...xCxHxW second (support) stream; leading axes broadcast.

        Returns:
            the broadcast ...xCxHxW fused map.
        """
        out12 = x1 + self.att(x2, x1)
        out21 = x2 + self.att(x1, x2)
        out12, out21 = torch.broadcast_tensors(out12, out21)
        return torch.relu(_flat_apply(self.fuse, torch.cat((out12, out21), dim=-3)))


class FusionCAT(nn.Module):
    """``ReLU(GN(GroupedConv3x3(cat[x1, x2])))`` with ``heads`` convolution groups."""

    def __init__(self, channels: int, heads: int, norm_groups: int = 4) -> None:
        """Initialise the layer.

        Args:
            channels: channels C of each stream and of the output.
            heads: convolution groups (must divide C).
            norm_groups: GroupNorm groups.
        """
        super().__init__()
        self.fuse = Conv2dNormed(
            2 * channels, channels, 3, groups=heads, norm_groups=norm_groups
        )

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Fuse the streams.

        Args:
            x1: ...xCxHxW first stream.
            x2: ...xCxHxW second stream (same shape).

        Returns:
            the ...xCxHxW fused map.
        """
        return torch.relu(_flat_apply(self.fuse, torch.cat((x1, x2), dim=-3)))


class CombineLayers(nn.Module):
    """Decoder up-sampling step.

    ``nearest x2 → Conv3x3+GN (2c→c) → ReLU → cat skip → Conv1x1+GN (2c→c)``.
    """

    def __init__(self, channels: int, norm_groups: int = 4) -> None:
        """Initialise the layer.

        Args:
            channels: output channels c (the low-resolution input has 2c, the
                skip c).
            norm_groups: GroupNorm groups.
        """
        super().__init__()
        self.up = Conv2dNormed(2 * channels, channels, 3, norm_groups=norm_groups)
        self.combine = Conv2dNormed(2 * channels, channels, 1, norm_groups=norm_groups)

    def forward(self, low: Tensor, skip: Tensor) -> Tensor:
        """Up-sample ``low`` and merge it with ``skip``.

        Args:
            low: Bx2cxhxw map.
            skip: Bxcx2hx2w map.

        Returns:
            Bxcx2hx2w map.
        """
        up = torch.relu(self.up(F.interpolate(low, scale_factor=2, mode='nearest')))
        return self.combine(torch.cat((up, skip), dim=1))


class FuseHiLo(nn.Module):
    """Merge the H/4 decoder output with the full-resolution skip.

    ``lo = Conv3x3+GN(upx4(Conv1x1+GN(x_lo)))``, ``hi = Conv1x1+GN(x_hi)``,
    ``x = ReLU(Conv1x1+GN(cat[hi, lo]))``, ``out = x·(1 + Att(x))``. The
    attention's projections use ``norm_groups`` GroupNorm groups, as in the
    official code.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        channel_splits: int,
        grid: int,
        norm_groups: int = 4,
    ) -> None:
        """Initialise the layer.

        Args:
            channels: channels C of both inputs and of the output.
            heads: attention convolution groups.
            channel_splits: attention token channel splits.
            grid: attention spatial grid (at full resolution).
            norm_groups: GroupNorm groups.
        """
        super().__init__()
        self.lo_in = Conv2dNormed(channels, channels, 1, norm_groups=norm_groups)
        self.lo_up = Conv2dNormed(channels, channels, 3, norm_groups=norm_groups)
        self.hi_in = Conv2dNormed(channels, channels, 1, norm_groups=norm_groups)
        self.merge = Conv2dNormed(2 * channels, channels, 1, norm_groups=norm_groups)
        self.att = RelPatchAttention2D(
            channels, heads, channel_splits, grid, norm_groups=norm_groups
        )

    def forward(self, x_lo: Tensor, x_hi: Tensor) -> Tensor:
        """Fuse the two resolutions.

        Args:
            x_lo: BxCxH/4xW/4 map.
            x_hi: BxCxHxW map.

        Returns:
            BxCxHxW map.
        """
        lo = F.interpolate(self.lo_in(x_lo), scale_factor=4, mode='nearest')
        lo = self.lo_up(lo)
        x = torch.relu(self.merge(torch.cat((self.hi_in(x_hi), lo), dim=1)))
        return torch.addcmul(x, x, self.att(x))
