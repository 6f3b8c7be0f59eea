"""Output heads: the conditioned multitask head and the Hamacher fuzzy set operations.

:class:`ConditionedMultitaskHead` predicts, in this order, segmentation, boundary
and distance maps (3K channels), each conditioned on the previous predictions:
distance first, then the boundary given the distance, then the segmentation
given both.
"""

import torch
from torch import Tensor, nn

from .layers import Conv2dNormed, SigmoidCrisp

__all__ = (
    'ConditionedMultitaskHead',
    'HeadSingle',
    'hamacher_conorm',
    'hamacher_tnorm',
)

#: Hamacher parameter of the fuzzy set operations
HAMACHER_P = 1e-5


def hamacher_tnorm(x: Tensor, y: Tensor, p: float = HAMACHER_P) -> Tensor:
    """Hamacher t-norm (fuzzy intersection) ``xy / (p + (1-p)(x + y - xy))``.

    Args:
        x: memberships in [0, 1].
        y: memberships in [0, 1], broadcastable against ``x``.
        p: Hamacher parameter.

    Returns:
        the fuzzy intersection, broadcast shape.
    """
    xy = x * y
    return xy / (p + (1 - p) * (x + y - xy))


def hamacher_conorm(x: Tensor, y: Tensor, p: float = HAMACHER_P) -> Tensor:
    """Dual t-conorm (fuzzy union) ``1 - tnorm(1 - x, 1 - y)``.

    Args:
        x: memberships in [0, 1].
        y: memberships in [0, 1], broadcastable against ``x``.
        p: Hamacher parameter.

    Returns:
        the fuzzy union, broadcast shape.
    """
    return 1 - hamacher_tnorm(1 - x, 1 - y, p)


class HeadSingle(nn.Sequential):
    """``Conv3x3+GN → Conv3x3+GN → ReLU → Conv1x1`` logits."""

    def __init__(
        self, in_channels: int, channels: int, num_outputs: int, norm_groups: int = 4
    ) -> None:
        """Initialise the head.

        Args:
            in_channels: input channels.
            channels: hidden channels.
            num_outputs: output logits.
            norm_groups: GroupNorm groups.
        """
        super().__init__(
            Conv2dNormed(in_channels, channels, 3, norm_groups=norm_groups),
            Conv2dNormed(channels, channels, 3, norm_groups=norm_groups),
            nn.ReLU(),
            nn.Conv2d(channels, num_outputs, 1),
        )


class ConditionedMultitaskHead(nn.Module):
    """Segmentation, boundary and distance head (the original's ``head_cmtsk``).

    ``dist = act(HeadSingle(X))`` (softmax over classes, SigmoidCrisp when K = 1);
    ``bound = SigmoidCrisp(HeadSingle(cat[X, E_d(dist)]))``;
    ``segm = segm_act(HeadSingle(cat[E_c(cat[E_b(bound), E_d(dist)]), X]))``
    where the ``E`` are ReLU(Conv1x1+GN) equalisers.
    """

    def __init__(
        self,
        channels: int,
        num_outputs: int,
        segm_act: str = 'sigmoid',
        norm_groups: int = 4,
    ) -> None:
        """Initialise the head.

        Args:
            channels: input (and hidden) channels F.
            num_outputs: K, output channels per task.
            segm_act: ``'sigmoid'`` (SigmoidCrisp, multi-label) or ``'softmax'``.
            norm_groups: GroupNorm groups.

        Raises:
            ValueError: for an unknown ``segm_act``.
        """
        super().__init__()
        if segm_act not in ('sigmoid', 'softmax'):
            raise ValueError(
                f"segm_act must be 'sigmoid' or 'softmax', got {segm_act!r}"
            )
        self.num_outputs = num_outputs
        self.segm_act = segm_act
        c, k, g = channels, num_outputs, norm_groups
        self.dist_logits = HeadSingle(c, c, k, g)
        self.dist_eq = Conv2dNormed(k, c, 1, norm_groups=g)
        self.bound_logits = HeadSingle(2 * c, c, k, g)
        self.bound_eq = Conv2dNormed(k, c, 1, norm_groups=g)
        self.comb = Conv2dNormed(2 * c, c, 1, norm_groups=g)
        self.segm_logits = HeadSingle(2 * c, c, k, g)
        self.bound_act = SigmoidCrisp()
        self.dist_act = SigmoidCrisp() if k == 1 else None
        self.segm_crisp = SigmoidCrisp() if segm_act == 'sigmoid' or k == 1 else None

    def forward(self, x: Tensor) -> Tensor:
        """Predict the three maps.

        Args:
            x: BxFxHxW features.

        Returns:
            Bx3KxHxW probabilities: ``[0:K]`` segmentation, ``[K:2K]`` boundary,
            ``[2K:3K]`` distance.
        """
        dist = self.dist_logits(x)
        dist = self.dist_act(dist) if self.dist_act is not None else dist.softmax(1)
        dist_eq = torch.relu(self.dist_eq(dist))
        bound = self.bound_act(self.bound_logits(torch.cat((x, dist_eq), dim=1)))
        bound_eq = torch.relu(self.bound_eq(bound))
        comb = torch.relu(self.comb(torch.cat((bound_eq, dist_eq), dim=1)))
        segm = self.segm_logits(torch.cat((comb, x), dim=1))
        segm = self.segm_crisp(segm) if self.segm_crisp is not None else segm.softmax(1)
        return torch.cat((segm, bound, dist), dim=1)
