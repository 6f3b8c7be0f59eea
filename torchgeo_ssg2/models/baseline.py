"""PTAViT: the UNet-like single-image baseline of the SSG2 paper."""

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ._validation import check_image
from .attention import set_attention_chunk_size
from .decoder import PTAViTDecoder
from .encoder import PTAViTEncoder
from .heads import ConditionedMultitaskHead
from .presets import get_config

__all__ = ('PTAViT',)


class PTAViT(nn.Module):
    """UNet-like PTAViT: encoder, decoder and a conditioned multitask head.

    The same backbone as :class:`~torchgeo_ssg2.models.SSG2` on one image, without
    fusion, cross-attention or a NULL class. The decoder's full-resolution skip is
    the ``conv1`` output.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        preset: str = 'paper',
        **overrides: object,
    ) -> None:
        """Initialise the model.

        Args:
            in_channels: input bands C.
            num_classes: classes K.
            preset: a name from :func:`~torchgeo_ssg2.models.presets.list_presets`.
            **overrides: :class:`~torchgeo_ssg2.models.presets.ModelConfig` fields
                (the SSG2-only ``blocks_3d`` and ``support_chunk_size`` are unused).

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
        set_attention_chunk_size(self, self.config.attention_chunk_size)

    def forward(self, image: Tensor) -> Tensor:
        """Predict segmentation, boundary and distance maps.

        Args:
            image: BxCxHxW images (H, W multiples of 32).

        Returns:
            Bx3KxHxW probabilities: ``[0:K]`` segmentation, ``[K:2K]`` boundary,
            ``[2K:3K]`` distance.
        """
        check_image(image, self.in_channels)
        if self.config.checkpointing and torch.is_grad_enabled():
            features = checkpoint(self._features, image, use_reentrant=False)
        else:
            features = self._features(image)
        return self.head(features)

    def _features(self, image: Tensor) -> Tensor:
        return self.decoder(self.encoder(image))
