"""PTAViT: the UNet-like single-image baseline of the SSG2 paper."""

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ._validation import check_image
from .attention import _set_chunk_size
from .decoder import PTAViTDecoder
from .encoder import PTAViTEncoder
from .heads import ConditionedMultitaskHead
from .presets import get_config

__all__ = ('PTAViT',)


class PTAViT(nn.Module):
    """UNet-like PTAViT: encoder, decoder and a conditioned multitask head.

    The same backbone as :class:`~torchgeo_ssg2.models.SSG2` on one image, without
    fusion, cross-attention or a NULL class. The decoder's full-resolution skip is
    the ``conv1`` output. ``forward = forward_head ∘ forward_features``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        preset: str = 'paper',
        *,
        checkpointing: bool = False,
        attention_chunk_size: int | None = None,
        **overrides: object,
    ) -> None:
        """Initialise the model.

        Args:
            in_channels: input bands C.
            num_classes: classes K.
            preset: a name from :func:`~torchgeo_ssg2.models.presets.list_presets`.
            checkpointing: see :meth:`set_grad_checkpointing`.
            attention_chunk_size: see :meth:`set_attention_chunk_size`.
            **overrides: :class:`~torchgeo_ssg2.models.presets.ModelConfig` fields
                (the SSG2-only ``blocks_3d`` is unused).

        Raises:
            ValueError: for bad arguments.
        """
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f'in_channels and num_classes must be >= 1, got {in_channels}, '
                f'{num_classes}'
            )
        self.config = get_config(preset, **overrides)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_outputs = num_classes
        self.encoder = PTAViTEncoder(in_channels, self.config)
        self.decoder = PTAViTDecoder(self.config)
        self.head = ConditionedMultitaskHead(
            self.config.filters,
            num_classes,
            self.config.segm_act,
            self.config.norm_groups,
        )
        self.grad_checkpointing = False
        self.set_grad_checkpointing(checkpointing)
        self.set_attention_chunk_size(attention_chunk_size)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the encoder and decoder in backward (less memory, same result).

        Args:
            enable: on or off.
        """
        self.grad_checkpointing = bool(enable)

    def set_attention_chunk_size(self, chunk_size: int | None) -> None:
        """Query tokens per block of every Tanimoto similarity matrix.

        Blocks of ``chunk_size`` query rows, forward and backward, recomputed in
        backward: no Nq x Nk matrix is formed. ``None`` picks blocks of about 2M
        similarities (and one block, kept for backward, for smaller matrices).
        Same function either way.

        Args:
            chunk_size: rows per block (>= 1) or ``None``.

        Raises:
            ValueError: for a chunk size below 1.
        """
        _set_chunk_size(self, chunk_size)

    def forward_features(self, image: Tensor) -> Tensor:
        """Encoder and decoder.

        Args:
            image: BxCxHxW images (H, W multiples of 32).

        Returns:
            BxFxHxW decoder features.
        """
        check_image(image, self.in_channels)
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(self._features, image, use_reentrant=False)
        return self._features(image)

    def _features(self, image: Tensor) -> Tensor:
        return self.decoder(self.encoder(image))

    def forward_head(self, features: Tensor) -> Tensor:
        """The conditioned multitask head.

        Args:
            features: BxFxHxW decoder features.

        Returns:
            Bx3KxHxW probabilities: ``[0:K]`` segmentation, ``[K:2K]`` boundary,
            ``[2K:3K]`` distance.
        """
        return self.head(features)

    def forward(self, image: Tensor) -> Tensor:
        """Predict segmentation, boundary and distance maps.

        Args:
            image: BxCxHxW images (H, W multiples of 32).

        Returns:
            Bx3KxHxW probabilities: ``[0:K]`` segmentation, ``[K:2K]`` boundary,
            ``[2K:3K]`` distance.
        """
        return self.forward_head(self.forward_features(image))
