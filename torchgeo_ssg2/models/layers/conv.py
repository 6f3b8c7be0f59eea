"""Convolutions: 2D/3D convolution + GroupNorm and the depthwise 3D convolution."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

__all__ = ('Conv2dNormed', 'Conv3dNormed', 'DepthwiseConv3d')


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


class _Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that stays in float32 under CPU autocast.

    oneDNN's bfloat16 grouped 3D convolution on the CPU returns non-finite weight
    gradients for some inputs (seen with torch 2.14); other devices keep autocast's
    lower precision.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Convolve.

        Args:
            x: BxCxTxHxW input.

        Returns:
            the BxC'xTxHxW output.
        """
        if x.device.type == 'cpu' and torch.is_autocast_enabled('cpu'):
            with torch.autocast('cpu', enabled=False):
                return super().forward(x.float())
        return super().forward(x)


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
            _Conv3d(
                in_channels,
                out_channels,
                kernel_size,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.GroupNorm(norm_groups, out_channels),
        )


class _DepthwiseConv3dFunction(torch.autograd.Function):
    """Depthwise stride-1 'same' 3D convolution with a leaner backward.

    The input gradient is the same convolution of the output gradient with the
    spatially flipped kernel (exact for stride 1, odd kernel, ``k // 2`` zero
    padding), i.e. one more forward-kernel call; only the weight gradient uses
    the generic ``convolution_backward``, whose input-gradient part is slower on
    the CPU. (A channels-last forward is faster as such, but the layout
    conversions of 5D tensors cost more than it saves.)
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, x: Tensor, weight: Tensor, bias: Tensor | None
    ) -> Tensor:
        pad = [k // 2 for k in weight.shape[2:]]
        groups = weight.shape[0]
        y = F.conv3d(x, weight, bias, padding=pad, groups=groups)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None  # type: ignore[attr-defined]
        return y

    @staticmethod
    def backward(
        ctx: FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        pad = [k // 2 for k in weight.shape[2:]]
        groups = weight.shape[0]
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if needs[0]:
            grad_x = F.conv3d(grad, weight.flip(2, 3, 4), padding=pad, groups=groups)
        if needs[1]:
            grad_w = torch.ops.aten.convolution_backward(
                grad,
                x.contiguous(),
                weight,
                None,
                [1, 1, 1],
                pad,
                [1, 1, 1],
                False,
                [0, 0, 0],
                groups,
                [False, True, False],
            )[1]
        if ctx.has_bias and needs[2]:  # type: ignore[attr-defined]
            grad_b = grad.sum((0, 2, 3, 4))
        return grad_x, grad_w, grad_b


class DepthwiseConv3d(nn.Conv3d):
    """Depthwise 3D convolution (stride 1, zero 'same' padding, odd kernel).

    Computes exactly ``nn.Conv3d(c, c, k, padding=k // 2, groups=c)``; with
    ``fast = True`` (the default) it goes through a custom autograd function
    that computes the input gradient as a convolution with the flipped kernel
    (about 20 % less backward time than the generic path on the CPU).
    ``fast = False`` is the plain reference path. Parameters and state
    dict are those of the plain ``nn.Conv3d``.
    """

    def __init__(self, channels: int, kernel_size: int = 3, bias: bool = True) -> None:
        """Initialise the layer.

        Args:
            channels: channels C (input = output = groups).
            kernel_size: odd cubic kernel size.
            bias: learn a per-channel bias.

        Raises:
            ValueError: for an even kernel size.
        """
        if kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}')
        super().__init__(
            channels,
            channels,
            kernel_size,
            padding=kernel_size // 2,
            groups=channels,
            bias=bias,
        )
        #: use the custom autograd function (same function, faster on the CPU)
        self.fast = True

    def forward(self, x: Tensor) -> Tensor:
        """Convolve every channel with its own kernel.

        Args:
            x: BxCxTxHxW input.

        Returns:
            BxCxTxHxW output.
        """
        if not self.fast:
            return super().forward(x)
        weight, bias = self.weight, self.bias
        device = x.device.type
        if not torch.amp.is_autocast_available(device):  # e.g. the meta device
            return _DepthwiseConv3dFunction.apply(x, weight, bias)
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        with torch.autocast(device, enabled=False):
            return _DepthwiseConv3dFunction.apply(x, weight, bias)
