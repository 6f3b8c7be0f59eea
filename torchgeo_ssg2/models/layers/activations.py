"""The activations of the PTAViT family: D2Sigmoid and SigmoidCrisp."""

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

__all__ = ('D2Sigmoid', 'SigmoidCrisp', 'd2sigmoid')


class _D2SigmoidFunction(torch.autograd.Function):
    """``s(1-s)(2s-1)`` with ``s = sigmoid(x)``, saving only ``s`` for backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        ctx.save_for_backward(s)
        # p = s - s², out = (2s - 1) p: three temporaries fewer than the plain chain
        p = torch.addcmul(s, s, s, value=-1)
        return torch.mul(s, 2).sub_(1).mul_(p)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> Tensor:
        (s,) = ctx.saved_tensors  # type: ignore[attr-defined]
        p = torch.addcmul(s, s, s, value=-1)
        # d/dx [p (2s - 1)] = p (6p - 1)
        return torch.mul(p, 6).sub_(1).mul_(p).mul_(grad)


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
