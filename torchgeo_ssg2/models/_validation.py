"""Input checks shared by the models."""

from torch import Tensor

__all__ = ('check_image', 'check_support')


def check_image(image: Tensor, in_channels: int, name: str = 'image') -> None:
    """Check a BxCxHxW image batch.

    Args:
        image: the batch.
        in_channels: expected C.
        name: name used in error messages.

    Raises:
        ValueError: for a wrong rank, channel count or size.
    """
    if image.dim() != 4:
        raise ValueError(f'{name} must be BxCxHxW (4D), got shape {tuple(image.shape)}')
    if image.shape[1] != in_channels:
        raise ValueError(
            f'{name} has {image.shape[1]} channels, the model expects {in_channels}'
        )
    h, w = image.shape[-2:]
    if h % 32 or w % 32 or h == 0 or w == 0:
        raise ValueError(
            f'{name} height and width must be positive multiples of 32, got {h}x{w}'
        )


def check_support(image: Tensor, support_image: Tensor) -> None:
    """Check a BxTxCxHxW support batch against its BxCxHxW targets.

    Args:
        image: the (already checked) target batch.
        support_image: the supports.

    Raises:
        ValueError: for a wrong rank, T < 1 or a mismatch with the targets.
    """
    if support_image.dim() != 5:
        raise ValueError(
            'support_image must be BxTxCxHxW (5D), got shape '
            f'{tuple(support_image.shape)}'
        )
    b, t, c, h, w = support_image.shape
    if t < 1:
        raise ValueError('support_image needs at least one support (T >= 1)')
    if (b, c, h, w) != (image.shape[0], *image.shape[1:]):
        raise ValueError(
            f'support_image BxTxCxHxW = {tuple(support_image.shape)} does not match '
            f'image BxCxHxW = {tuple(image.shape)}'
        )
