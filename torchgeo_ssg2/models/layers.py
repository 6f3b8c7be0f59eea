"""Elementary layers of the PTAViT / SSG2 family.

D2Sigmoid and SigmoidCrisp activations, convolutions followed by GroupNorm, a
channel LayerNorm for channels-first tensors and a BatchNorm whose training
statistics can be computed per sequence element of a folded batch.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

__all__ = (
    'ChannelLayerNorm',
    'Conv2dNormed',
    'Conv3dNormed',
    'D2Sigmoid',
    'GroupedBatchNorm',
    'SigmoidCrisp',
    'd2sigmoid',
)


class _D2SigmoidFunction(torch.autograd.Function):
    """``s(1-s)(2s-1)`` with ``s = sigmoid(x)``, saving only ``s`` for backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        ctx.save_for_backward(s)
        return s * (1 - s) * (2 * s - 1)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> Tensor:
        (s,) = ctx.saved_tensors  # type: ignore[attr-defined]
        p = s * (1 - s)
        # d/dx [p (2s - 1)] = p (6p - 1)
        return grad * p * (6 * p - 1)


def d2sigmoid(x: Tensor) -> Tensor:
    """Minus the second derivative of the logistic sigmoid.

    ``D2Sigmoid(x) = s(1-s)(2s-1)`` with ``s = sigmoid(x)``; its range is about
    ``[-0.096, 0.096]``. A custom autograd function stores only ``s``.

    Args:
        x: input of any shape.

    Returns:
        a tensor of the shape of ``x``.
    """
    return _D2SigmoidFunction.apply(x)


class D2Sigmoid(nn.Module):
    """Module form of :func:`d2sigmoid`."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply the activation element-wise.

        Args:
            x: input of any shape.

        Returns:
            a tensor of the shape of ``x``.
        """
        return d2sigmoid(x)


class SigmoidCrisp(nn.Module):
    """Sharpened sigmoid ``sigmoid(x / (smooth + sigmoid(gamma)))``.

    ``gamma`` is one learnable scalar (initialised to 1), so the temperature
    lies in ``(smooth, 1 + smooth)``.
    """

    def __init__(self, smooth: float = 1e-2) -> None:
        """Initialise the activation.

        Args:
            smooth: lower bound of the temperature.
        """
        super().__init__()
        self.smooth = smooth
        self.gamma = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the activation element-wise.

        Args:
            x: input of any shape.

        Returns:
            probabilities in ``(0, 1)`` of the shape of ``x``.
        """
        temperature = self.smooth + torch.sigmoid(self.gamma)
        return torch.sigmoid(x / temperature)


class Conv2dNormed(nn.Sequential):
    """2D convolution without bias followed by GroupNorm."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        norm_groups: int = 4,
    ) -> None:
        """Initialise the layer.

        Args:
            in_channels: input channels C_in.
            out_channels: output channels C_out.
            kernel_size: odd kernel size; padding keeps the size at stride 1.
            stride: convolution stride.
            groups: convolution groups.
            norm_groups: GroupNorm groups (must divide ``out_channels``).
        """
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.GroupNorm(norm_groups, out_channels),
        )


class Conv3dNormed(nn.Sequential):
    """3D convolution (over T, H, W) without bias followed by GroupNorm."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        groups: int = 1,
        norm_groups: int = 4,
    ) -> None:
        """Initialise the layer.

        Args:
            in_channels: input channels C_in.
            out_channels: output channels C_out.
            kernel_size: odd cubic kernel size, zero padded (also in T).
            groups: convolution groups.
            norm_groups: GroupNorm groups (must divide ``out_channels``).
        """
        super().__init__(
            nn.Conv3d(
                in_channels,
                out_channels,
                kernel_size,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.GroupNorm(norm_groups, out_channels),
        )


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis (dim 1) of a channels-first tensor."""

    def forward(self, x: Tensor) -> Tensor:
        """Normalise every pixel over its channels.

        Args:
            x: BxCx... tensor.

        Returns:
            a tensor of the shape of ``x`` (channels-last in memory).
        """
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class GroupedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are computed per group of a folded batch.

    SSG2 folds the T supports into the batch (a ``B*T`` batch laid out ``b``-major,
    i.e. from a BxTx... tensor). ``forward(x, groups=T)`` then normalises each
    sequence element ``t`` with the statistics of its own B samples, exactly as a
    per-support loop over batches of B would. With ``groups=1`` or in evaluation
    mode it is a plain BatchNorm. Running statistics are updated once per call
    with the mean over the groups of the per-group statistics.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f'expected at least a 2D input, got {x.dim()}D')

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:
        """Normalise the batch.

        Args:
            x: (B*G)xCx... tensor, laid out as BxGxCx... flattened.
            groups: the number G of groups that get separate statistics.

        Returns:
            a tensor of the shape of ``x``.
        """
        use_batch_stats = self.training or not self.track_running_stats
        if groups == 1 or not use_batch_stats:
            return super().forward(x)
        n, c = x.shape[:2]
        if n % groups:
            raise ValueError(f'batch of {n} does not split into {groups} groups')
        factor = 0.0
        running_mean = running_var = None
        if self.training and self.track_running_stats:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
            else:
                factor = self.momentum
            assert self.running_mean is not None and self.running_var is not None
            running_mean = self.running_mean.repeat(groups)
            running_var = self.running_var.repeat(groups)
        weight = self.weight.repeat(groups) if self.weight is not None else None
        bias = self.bias.repeat(groups) if self.bias is not None else None
        y = F.batch_norm(
            x.reshape(n // groups, groups * c, *x.shape[2:]),
            running_mean,
            running_var,
            weight,
            bias,
            True,
            factor,
            self.eps,
        )
        if running_mean is not None and running_var is not None:
            # through .data, like the native kernel, so that autograd nodes of
            # earlier calls that saved the buffers are not invalidated
            assert self.running_mean is not None and self.running_var is not None
            self.running_mean.data.copy_(running_mean.view(groups, c).mean(0))
            self.running_var.data.copy_(running_var.view(groups, c).mean(0))
        return y.view(x.shape)
