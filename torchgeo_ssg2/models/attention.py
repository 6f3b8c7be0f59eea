"""Tanimoto relative patch attention (2D and 3D).

The attention of the PTAViT family is not a softmax dot-product. Queries and keys
(after D2Sigmoid) are cut into patch tokens, every (query, key) token pair gets a
Tanimoto similarity, the similarities are compacted over the query axis into one
weight per key token (a learned linear map in 2D, a mean in 3D), and each value
patch is scaled by its weight before a final D2Sigmoid. Nothing is summed over
values, so the output keeps the input's layout. The similarity kernel lives in
:mod:`torchgeo_ssg2.models.layers.tanimoto`.

Tokens of the 2D attention are blocks of ``C/s`` channels x ``H/g`` x ``W/g``
pixels for ``s`` channel splits and a ``gxg`` spatial grid; tokens of the 3D
attention are ``(t, h-patch, w-patch)`` blocks holding all channels. The grid is
fixed at construction (so the linear compaction has a fixed number of inputs) and
the patch size follows the input size; :func:`spatial_grid` chooses grids that
divide every multiple of 32.
"""

import math

import torch
from torch import Tensor, nn

from .layers import Conv2dNormed, Conv3dNormed, d2sigmoid
from .layers.tanimoto import EPS, patchify, scale_patches, tanimoto_compaction

__all__ = (
    'RelPatchAttention2D',
    'RelPatchAttention3D',
    'channel_splits_for',
    'spatial_grid',
)


def _round_pow2(x: float) -> int:
    """Nearest power of two (in log scale), at least 1."""
    if x <= 1:
        return 1
    return 2 ** round(math.log2(x))


def spatial_grid(stride: int, spatial_size: int = 256, base: int = 16) -> int:
    """Spatial patch grid of an attention layer working at ``stride``.

    The official code uses a 16x16 grid at full resolution for 256x256 chips and
    halves it with every halving of the resolution; ``spatial_size`` rescales
    this like the original's ``spatial_size_init``. The grid is clamped to
    ``[1, 32 // stride]`` so that it divides ``H / stride`` for every H that is
    a multiple of 32: the input size is never restricted.

    Args:
        stride: down-sampling factor of the feature map (1, 2, 4, ..., 32).
        spatial_size: reference chip size of the grid schedule.
        base: grid at full resolution for ``spatial_size == 256``.

    Returns:
        the number of patches along each spatial axis.
    """
    grid = _round_pow2(base * spatial_size / (256 * stride))
    return max(1, min(grid, max(1, 32 // stride)))


def channel_splits_for(base: float, channels: int) -> int:
    """Token channel splits: the power of two nearest ``base`` that divides ``channels``.

    Args:
        base: wanted number of channel splits.
        channels: number of channels to split.

    Returns:
        the number of channel splits of a token.
    """
    splits = _round_pow2(base)
    while channels % splits:
        splits //= 2
    return splits


def _flat_apply(module: nn.Module, x: Tensor, dims: int) -> Tensor:
    """Apply ``module`` over the last ``dims + 1`` axes, folding the leading ones."""
    lead = x.shape[: x.dim() - dims - 1]
    y = module(x.reshape(-1, *x.shape[x.dim() - dims - 1 :]))
    return y.reshape(*lead, *y.shape[1:])


class RelPatchAttention2D(nn.Module):
    """Tanimoto relative patch attention on CxHxW maps, linear compaction.

    ``q = D2Sigmoid(GN(Conv3x3(x1)))`` (``heads`` groups), ``k, v`` split from
    ``GN(Conv3x3(x2))`` (``2·heads`` groups, ``k`` through D2Sigmoid), then
    ``out = D2Sigmoid(v_j · Linear_{N→1}(S[:, j]))`` per key token j.

    Leading axes broadcast: ``x1`` of shape BxTxCxHxW and ``x2`` of shape
    Bx1xCxHxW give a BxTxCxHxW output, with ``x2``'s projections computed once.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        channel_splits: int,
        grid: int,
        eps: float = EPS,
        norm_groups: int | None = None,
    ) -> None:
        """Initialise the layer.

        Args:
            channels: channels C of both inputs and of the output.
            heads: convolution groups of the query projection (``2·heads`` for
                the key/value projection); ``2·heads`` must divide C.
            channel_splits: channel splits of a token (must divide C).
            grid: spatial grid g of the tokens.
            eps: numerical guard of the similarity.
            norm_groups: GroupNorm groups of the projections; ``None`` means
                ``C // 4`` (the official stage attentions; its fusion,
                cross-attention and FuseHiLo attentions use the model's
                ``norm_groups``).
        """
        super().__init__()
        if channels % (2 * heads) or channels % 4 or channels % channel_splits:
            raise ValueError(
                f'channels={channels} must be divisible by 4, by 2*heads={2 * heads} '
                f'and by channel_splits={channel_splits}'
            )
        self.channels = channels
        self.channel_splits = channel_splits
        self.grid = grid
        self.eps = eps
        groups = channels // 4 if norm_groups is None else norm_groups
        self.query = Conv2dNormed(
            channels, channels, 3, groups=heads, norm_groups=groups
        )
        self.key_value = Conv2dNormed(
            channels, 2 * channels, 3, groups=2 * heads, norm_groups=groups
        )
        self.compact = nn.Linear(channel_splits * grid * grid, 1)
        #: lean custom autograd for the similarities (see :func:`tanimoto_compaction`)
        self.memory_efficient = True
        #: query rows per block of the similarity matrix (``None``: one block)
        self.chunk_size: int | None = None

    def forward(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        """Attend from the query map ``x1`` to the key/value map ``x2``.

        Args:
            x1: ...xCxHxW query input.
            x2: ...xCxHxW key/value input (leading axes broadcast against x1's);
                ``x1`` itself (self-attention) when omitted.

        Returns:
            the ...xCxHxW output, values in about ``[-0.096, 0.096]``.
        """
        if x2 is None:
            x2 = x1
        h, w = x1.shape[-2:]
        if h % self.grid or w % self.grid:
            raise ValueError(f'{h}x{w} map does not divide into a {self.grid} grid')
        q = d2sigmoid(_flat_apply(self.query, x1, 2))
        k, v = _flat_apply(self.key_value, x2, 2).chunk(2, dim=-3)
        k = d2sigmoid(k)
        weight = tanimoto_compaction(
            patchify(q, self.channel_splits, self.grid),
            patchify(k, self.channel_splits, self.grid),
            self.compact.weight[0],
            self.eps,
            self.memory_efficient,
            self.chunk_size,
        )
        weight = weight + self.compact.bias
        return d2sigmoid(scale_patches(v, weight, self.channel_splits, self.grid))


class RelPatchAttention3D(nn.Module):
    """Tanimoto relative patch attention over (T, H, W) sequences, mean compaction.

    Works on BxCxTxHxW tensors. Tokens are ``(t, grid row, grid column)`` blocks
    holding all C channels; each key token is weighted by its mean similarity to
    all tokens of the sequence, so any T >= 1 works.
    """

    def __init__(self, channels: int, heads: int, grid: int, eps: float = EPS) -> None:
        """Initialise the layer.

        Args:
            channels: channels C of input and output.
            heads: convolution groups of the query projection (``2·heads`` for
                the key/value projection); ``2·heads`` must divide C.
            grid: spatial grid g of the tokens.
            eps: numerical guard of the similarity.
        """
        super().__init__()
        if channels % (2 * heads) or channels % 4:
            raise ValueError(
                f'channels={channels} must be divisible by 4 and by 2*heads={2 * heads}'
            )
        self.grid = grid
        self.eps = eps
        #: lean custom autograd for the similarities (see :func:`tanimoto_compaction`)
        self.memory_efficient = True
        #: query rows per block of the similarity matrix (``None``: one block)
        self.chunk_size: int | None = None
        self.query = Conv3dNormed(
            channels, channels, 3, groups=heads, norm_groups=channels // 4
        )
        self.key_value = Conv3dNormed(
            channels, 2 * channels, 3, groups=2 * heads, norm_groups=channels // 4
        )

    def forward(self, x: Tensor) -> Tensor:
        """Self-attention over the whole sequence.

        Args:
            x: BxCxTxHxW input.

        Returns:
            the BxCxTxHxW output.
        """
        b, c, t, h, w = x.shape
        g = self.grid
        if h % g or w % g:
            raise ValueError(f'{h}x{w} map does not divide into a {g} grid')
        q = d2sigmoid(self.query(x))
        k, v = self.key_value(x).chunk(2, dim=1)
        k = d2sigmoid(k)
        # BxCxTxHxW -> BxTxCxHxW -> BxTx(g·g)xD -> Bx(T·g·g)xD
        qt = patchify(q.transpose(1, 2), 1, g).reshape(b, t * g * g, -1)
        kt = patchify(k.transpose(1, 2), 1, g).reshape(b, t * g * g, -1)
        mean = torch.full(
            (t * g * g,), 1 / (t * g * g), dtype=qt.dtype, device=qt.device
        )
        weight = tanimoto_compaction(
            qt, kt, mean, self.eps, self.memory_efficient, self.chunk_size
        )
        weight = weight.reshape(b, 1, t, g, 1, g, 1)
        out = v.reshape(b, c, t, g, h // g, g, w // g) * weight
        return d2sigmoid(out.reshape(b, c, t, h, w))


def _set_chunk_size(model: nn.Module, chunk_size: int | None) -> None:
    """Set ``chunk_size`` of every Tanimoto attention inside ``model``.

    Raises:
        ValueError: for a chunk size below 1.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f'attention_chunk_size must be >= 1 or None, got {chunk_size}')
    for module in model.modules():
        if isinstance(module, RelPatchAttention2D | RelPatchAttention3D):
            module.chunk_size = chunk_size
