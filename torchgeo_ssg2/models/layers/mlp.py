"""The feed-forward layer of the PTAViT blocks."""

from torch import nn

__all__ = ('FeedForward',)


class FeedForward(nn.Sequential):
    """Channels-last ``Linear(d, m·d) → GELU → Dropout → Linear(m·d, d) → Dropout``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.1) -> None:
        """Initialise the layer.

        Args:
            dim: channels d (the last axis of the input).
            mult: expansion m of the hidden layer.
            dropout: dropout probability.
        """
        super().__init__(
            nn.Linear(dim, mult * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mult * dim, dim),
            nn.Dropout(dropout),
        )
