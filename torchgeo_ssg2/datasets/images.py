"""Reading image files (JPEG, PNG) with errors that name the file."""

import numpy as np
from PIL import Image

__all__ = ('UnreadableImageError', 'image_size', 'read_image')


class UnreadableImageError(OSError):
    """An image file is corrupt, truncated or not an image."""

    def __init__(self, path: str, error: BaseException) -> None:
        """Initialize a new UnreadableImageError.

        Args:
            path: The file.
            error: What the decoder reported.
        """
        self.path = path
        reason = ' '.join(str(error).split()) or type(error).__name__
        super().__init__(f'{path}: corrupt or truncated image ({reason})')


# What PIL raises for a broken file: OSError (unidentified, truncated), SyntaxError
# and ValueError (malformed chunks), EOFError, and DecompressionBombError.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)


def image_size(path: str) -> tuple[int, int]:
    """The (height, width) of an image, from its header.

    Args:
        path: The file.

    Returns:
        (height, width) in pixels.

    Raises:
        UnreadableImageError: If the file is not a readable image.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
    except _DECODE_ERRORS as error:
        raise UnreadableImageError(path, error) from error
    return height, width


def read_image(path: str, mode: str) -> np.ndarray:
    """Decode a whole image into an array.

    Every pixel is decoded (PIL decodes lazily), so a truncated file fails here,
    with the file's name, and never yields a partly grey image.

    Args:
        path: The file.
        mode: PIL mode to convert to (``'RGB'`` gives (H, W, 3), ``'L'`` (H, W)).

    Returns:
        uint8 array, (H, W, bands) or (H, W).

    Raises:
        UnreadableImageError: If the file is corrupt, truncated or not an image.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return np.array(image.convert(mode))
    except _DECODE_ERRORS as error:
        raise UnreadableImageError(path, error) from error
