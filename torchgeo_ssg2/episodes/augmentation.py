"""Episode augmentation: one kornia pipeline applied to a target and its supports."""

from collections.abc import Sequence
from typing import Any

import kornia.augmentation as K
from torch import Tensor, nn

__all__ = ('EpisodeAugmentation',)


class EpisodeAugmentation(nn.Module):
    """Applies a kornia augmentation to the target and, independently, the supports.

    A datamodule assigns it to ``aug`` / ``train_aug``; torchgeo's
    ``on_after_batch_transfer`` then calls it on every batch.

    Args:
        *transforms: kornia augmentations (e.g. ``K.Normalize``, flips).
        square_only: kornia augmentations applied after *transforms* to square
            images only (e.g. 90° rotations, which would crop a non-square image
            and fill its mask with background); images whose height and width
            differ skip them.
    """

    def __init__(
        self, *transforms: nn.Module, square_only: Sequence[nn.Module] = ()
    ) -> None:
        super().__init__()
        self.aug = K.AugmentationSequential(*transforms, data_keys=None, keepdim=True)
        self.square_aug = self.aug
        if square_only:
            self.square_aug = K.AugmentationSequential(
                *transforms, *square_only, data_keys=None, keepdim=True
            )

    def _augment(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """The pipeline for the images' shape, applied.

        Args:
            tensors: ``image`` N x C x H x W and optional ``mask`` N x H x W.

        Returns:
            The augmented tensors.
        """
        height, width = tensors['image'].shape[-2:]
        return (self.square_aug if height == width else self.aug)(tensors)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Augment one batch.

        Args:
            batch: ``image`` B x C x H x W, optional ``mask`` B x H x W,
                ``support_image`` B x T x C x H x W and ``support_mask``
                B x T x H x W; other keys pass through.

        Returns:
            The batch with augmented tensors (same keys and shapes).
        """
        batch = dict(batch)
        target = {k: batch[k] for k in ('image', 'mask') if k in batch}
        batch.update(self._augment(target))
        if 'support_image' in batch:
            b, t = batch['support_image'].shape[:2]
            supports: dict[str, Tensor] = {
                'image': batch['support_image'].flatten(0, 1)
            }
            if 'support_mask' in batch:
                supports['mask'] = batch['support_mask'].flatten(0, 1)
            out = self._augment(supports)
            batch['support_image'] = out['image'].unflatten(0, (b, t))
            if 'support_mask' in batch:
                batch['support_mask'] = out['mask'].unflatten(0, (b, t))
        return batch
