"""The PTAViT block and stage, 2D or 3D by the layers they are built from.

A PTAViT block follows the MaxViT layout with the window/grid attention replaced
by Tanimoto relative patch attention:
``x = MBConv(x)``; ``x = x · (1 + Att(LN(x)))``; ``x = x + FFN(LN(x))``.
Like timm's blocks it takes layer factories: ``mbconv_layer`` (``MBConv`` for
BxCxHxW maps, ``MBConv3D`` for SSG2's BxCxTxHxW sequence model), ``attn_layer``
(``RelPatchAttention2D`` / ``RelPatchAttention3D``, configured with
:func:`functools.partial`), ``norm_layer`` and ``mlp_layer``.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .layers import ChannelLayerNorm, FeedForward

__all__ = ('AttentionLayer', 'MBConvLayer', 'PTAViTBlock', 'PTAViTStage')

#: ``mbconv_layer(dim_in, dim_out, downsample)``
MBConvLayer = Callable[[int, int, bool], nn.Module]

#: ``attn_layer(channels)``: a self-attention keeping the input's shape
AttentionLayer = Callable[[int], nn.Module]


class _PreNormFeedForward(nn.Module):
    """``x + FFN(LN(x))`` over the channel axis 1 of a channels-first tensor."""

    def __init__(
        self, dim: int, dropout: float, mlp_layer: Callable[..., nn.Module]
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ffn = mlp_layer(dim, 4, dropout)

    def forward(self, x: Tensor) -> Tensor:
        y = x.movedim(1, -1)
        y = y + self.ffn(self.norm(y))
        return y.movedim(-1, 1)


class PTAViTBlock(nn.Module):
    """MBConv → ``x·(1 + Att(LN(x)))`` → ``x + FFN(LN(x))``.

    Works on BxCx... tensors of the rank its layers take (BxCxHxW or
    BxCxTxHxW).
    """

    def __init__(
        self,
        dim_in: int,
        dim: int,
        mbconv_layer: MBConvLayer,
        attn_layer: AttentionLayer,
        downsample: bool = False,
        dropout: float = 0.1,
        norm_layer: Callable[[int], nn.Module] = ChannelLayerNorm,
        mlp_layer: Callable[..., nn.Module] = FeedForward,
    ) -> None:
        """Initialise the block.

        Args:
            dim_in: input channels.
            dim: output channels.
            mbconv_layer: builds the MBConv from ``(dim_in, dim, downsample)``.
            attn_layer: builds the attention from ``dim``.
            downsample: halve the resolution in the MBConv.
            dropout: feed-forward dropout.
            norm_layer: the channel norm before the attention.
            mlp_layer: the channels-last feed-forward ``(dim, mult, dropout)``.
        """
        super().__init__()
        self.mbconv = mbconv_layer(dim_in, dim, downsample)
        self.att_norm = norm_layer(dim)
        self.att = attn_layer(dim)
        self.ffn = _PreNormFeedForward(dim, dropout, mlp_layer)

    def attend(self, x: Tensor) -> Tensor:
        """The multiplicative attention gate ``x·(1 + Att(LN(x)))``.

        Args:
            x: BxCx... input.

        Returns:
            a tensor of the shape of ``x``.
        """
        return torch.addcmul(x, x, self.att(self.att_norm(x)))

    def parts(self) -> tuple[Callable[[Tensor], Tensor], ...]:
        """The three residual parts in order: MBConv, attention gate, feed-forward."""
        return (self.mbconv, self.attend, self.ffn)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: BxC_inx... input.

        Returns:
            BxCx... output (spatial size halved when down-sampling).
        """
        return self.ffn(self.attend(self.mbconv(x)))


class PTAViTStage(nn.Sequential):
    """A sequence of :class:`PTAViTBlock`, the first one possibly down-sampling.

    With :attr:`grad_checkpointing` (and gradients enabled) each part of each
    block (MBConv, attention gate, feed-forward) is recomputed in backward on
    its own, so that only one part's activations are alive at a time.
    """

    def __init__(
        self,
        dim_in: int,
        dim: int,
        depth: int,
        mbconv_layer: MBConvLayer,
        attn_layer: AttentionLayer,
        downsample: bool = False,
        dropout: float = 0.1,
    ) -> None:
        """Initialise the stage.

        Args:
            dim_in: input channels.
            dim: output channels.
            depth: number of blocks.
            mbconv_layer: see :class:`PTAViTBlock`.
            attn_layer: see :class:`PTAViTBlock` (the attention works at the
                stage's output resolution).
            downsample: halve the resolution in the first block.
            dropout: feed-forward dropout.
        """
        super().__init__(
            *(
                PTAViTBlock(
                    dim_in if i == 0 else dim,
                    dim,
                    mbconv_layer,
                    attn_layer,
                    downsample=downsample and i == 0,
                    dropout=dropout,
                )
                for i in range(depth)
            )
        )
        #: per-part activation checkpointing of every block
        self.grad_checkpointing = False

    def forward(self, x: Tensor) -> Tensor:
        """Apply the stage.

        Args:
            x: BxC_inx... input.

        Returns:
            BxCx... output.
        """
        recompute = self.grad_checkpointing and torch.is_grad_enabled()
        for block in self:
            if not recompute:
                x = block(x)
                continue
            for part in block.parts():
                x = checkpoint(part, x, use_reentrant=False)
        return x
