"""Dubai aerial imagery (Humans in the Loop / MBRSC), the embedded demo data."""

import os
import re
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from torchgeo.datasets import DatasetNotFoundError, NonGeoDataset
from torchgeo.datasets.utils import Sample

from ..plotting import plot_segmentation
from .images import image_size, read_image

__all__ = ('DubaiAerial',)

#: Splits of :class:`DubaiAerial`.
DubaiSplit = Literal['train', 'val', 'test']


class DubaiAerial(NonGeoDataset):
    """Dubai aerial imagery semantic segmentation dataset.

    RGB aerial images of Dubai annotated with 6 land-cover colours by Humans in the
    Loop in a joint project with the Mohammed Bin Rashid Space Centre (CC0 1.0).

    Dataset format (the original layout; folders ``Tile N`` renamed ``tile_N``)::

        root/tile_1/images/image_part_001.jpg
        root/tile_1/masks/image_part_001.png
        ...

    Images are RGB JPEGs whose size is constant within a tile and differs between
    tiles (509x544 to 1126x1058 px in the embedded copy). Masks are RGB (or
    palette) PNGs of the same size, one colour per class.

    Dataset classes (mask colour, class index):

    0. Building (#3C1098)
    1. Land, unpaved area (#8429F6)
    2. Road (#6EC1E4)
    3. Vegetation (#FEDD3A)
    4. Water (#E2A929)

    Pixels coloured **Unlabeled** (#9B9B9B, about 0.7 % of the pixels) and pure
    **black** (#000000, < 0.01 %) are set to :attr:`ignore_index`. Unlabeled is
    treated as "no label" rather than as a land-cover class: annotators used it
    for areas they did not classify, so it has no consistent appearance to learn.
    Any other colour is an error naming the file, the colour and its pixel count.
    (The colours in the folder's ``classes.json`` do not match the masks and are
    not used.)

    Splits are by whole image: inside every tile the images are shuffled with a
    fixed seed and the first ``round(val_pct * n)`` go to ``val``, the next
    ``round(test_pct * n)`` to ``test`` and the rest to ``train`` (at least one
    image each for val and test when the tile has three or more images). With the
    9 images per tile of the embedded copy this gives 7/1/1 images per tile.

    Samples hold whole images of varying size; cut patches with
    :class:`~torchgeo_ssg2.datamodules.base.RandomPatchDataset` or
    :class:`~torchgeo_ssg2.datamodules.base.GridPatchDataset` to batch them.

    If you use this dataset in your research, please credit Humans in the Loop and
    MBRSC: https://humansintheloop.org/resources/datasets/semantic-segmentation-dataset-2/
    """

    #: Class names, in index order.
    classes: ClassVar[tuple[str, ...]] = (
        'Building',
        'Land',
        'Road',
        'Vegetation',
        'Water',
    )

    #: Mask colour (R, G, B) of every class, in index order.
    colormap: ClassVar[tuple[tuple[int, int, int], ...]] = (
        (60, 16, 152),
        (132, 41, 246),
        (110, 193, 228),
        (254, 221, 58),
        (226, 169, 41),
    )

    #: Mask colours that become :attr:`ignore_index` (Unlabeled and black).
    ignore_colors: ClassVar[tuple[tuple[int, int, int], ...]] = (
        (155, 155, 155),
        (0, 0, 0),
    )

    #: Mask value of ignored pixels.
    ignore_index: ClassVar[int] = 255

    #: Per-channel mean and standard deviation (R, G, B) of the 42 training images
    #: (the embedded images of the ``train`` split; validation and test left out).
    mean: ClassVar[tuple[float, float, float]] = (105.52, 105.49, 105.80)
    std: ClassVar[tuple[float, float, float]] = (79.21, 78.10, 81.26)

    rgb_bands: ClassVar[tuple[str, ...]] = ('R', 'G', 'B')

    def __init__(
        self,
        root: str | os.PathLike[str] = 'data/dubai_aerial/data',
        split: DubaiSplit = 'train',
        tiles: Sequence[int] | None = None,
        transforms: Callable[[Sample], Sample] | None = None,
        val_pct: float = 0.15,
        test_pct: float = 0.15,
        seed: int = 0,
        cache: bool = False,
    ) -> None:
        """Initialize a new DubaiAerial dataset instance.

        Args:
            root: Directory holding the ``tile_N`` folders.
            split: One of 'train', 'val' or 'test'.
            tiles: Tile numbers to use (e.g. ``[1, 3]``); all tiles under *root*
                if None.
            transforms: A function/transform that takes a sample and returns a
                transformed version.
            val_pct: Fraction of the images of every tile used for validation.
            test_pct: Fraction of the images of every tile used for testing.
            seed: Seed of the image split.
            cache: Keep decoded images and masks in memory (as uint8) after the
                first read.

        Raises:
            AssertionError: If *split* is invalid.
            DatasetNotFoundError: If *root* holds no ``tile_N`` folder.
            ValueError: If a requested tile is missing, a tile has no images, an
                image has no mask or a mask differs in size from its image, or the
                fractions are invalid.
        """
        assert split in ('train', 'val', 'test'), f'invalid split {split!r}'
        if not (0 <= val_pct < 1 and 0 <= test_pct < 1 and val_pct + test_pct < 1):
            raise ValueError(
                f'val_pct={val_pct} and test_pct={test_pct} must be in [0, 1) '
                'and sum to less than 1'
            )
        self.root = os.fspath(root)
        self.split = split
        self.transforms = transforms
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        available = self._find_tiles()
        if not available:
            raise DatasetNotFoundError(self)
        if tiles is None:
            selected = sorted(available)
        else:
            missing = sorted(set(tiles) - set(available))
            if missing:
                raise ValueError(
                    f'tiles {missing} not found under {self.root!r} '
                    f'(found {sorted(available)})'
                )
            selected = sorted(set(tiles))

        self.files: list[tuple[str, str]] = []
        #: Tile number of every item (usable as support groups).
        self.groups: list[int] = []
        #: (height, width) of every item.
        self.sizes: list[tuple[int, int]] = []
        for tile in selected:
            pairs, sizes = self._pair_files(available[tile])
            n = len(pairs)
            order = np.random.default_rng([seed, tile]).permutation(n)
            n_val = round(val_pct * n)
            n_test = round(test_pct * n)
            if n >= 3:
                n_val = max(n_val, 1) if val_pct > 0 else 0
                n_test = max(n_test, 1) if test_pct > 0 else 0
            bounds = {
                'val': (0, n_val),
                'test': (n_val, n_val + n_test),
                'train': (n_val + n_test, n),
            }
            start, stop = bounds[split]
            for k in sorted(order[start:stop]):
                self.files.append(pairs[k])
                self.groups.append(tile)
                self.sizes.append(sizes[k])

        codes = [self._pack(np.array(c)) for c in self.colormap + self.ignore_colors]
        values = list(range(len(self.colormap)))
        values += [self.ignore_index] * len(self.ignore_colors)
        order = np.argsort(codes)
        self._codes = np.array(codes, dtype=np.int64)[order]
        self._values = np.array(values, dtype=np.uint8)[order]

    def _find_tiles(self) -> dict[int, str]:
        """Find the ``tile_N`` folders under :attr:`root`.

        Returns:
            Tile number -> folder path.
        """
        if not os.path.isdir(self.root):
            return {}
        tiles = {}
        for name in os.listdir(self.root):
            match = re.fullmatch(r'tile_(\d+)', name)
            path = os.path.join(self.root, name)
            if match and os.path.isdir(path):
                tiles[int(match.group(1))] = path
        return tiles

    @staticmethod
    def _pair_files(
        tile_dir: str,
    ) -> tuple[list[tuple[str, str]], list[tuple[int, int]]]:
        """List the (image, mask) pairs of one tile and check them.

        Args:
            tile_dir: Path of a ``tile_N`` folder.

        Returns:
            Sorted (image path, mask path) pairs and their (height, width).

        Raises:
            ValueError: If the tile has no image, an image has no mask, or the
                sizes of an image and its mask differ.
            UnreadableImageError: If a file is not a readable image.
        """
        image_dir = os.path.join(tile_dir, 'images')
        mask_dir = os.path.join(tile_dir, 'masks')
        names = (
            sorted(f for f in os.listdir(image_dir) if f.lower().endswith('.jpg'))
            if os.path.isdir(image_dir)
            else []
        )
        if not names:
            raise ValueError(f'{image_dir}: no *.jpg images')
        pairs = []
        sizes = []
        for name in names:
            image = os.path.join(image_dir, name)
            mask = os.path.join(mask_dir, os.path.splitext(name)[0] + '.png')
            if not os.path.isfile(mask):
                raise ValueError(f'{image}: no mask {mask}')
            size, mask_size = image_size(image), image_size(mask)
            if size != mask_size:
                raise ValueError(
                    f'{mask}: size {mask_size[1]}x{mask_size[0]} differs from its '
                    f'image {image} ({size[1]}x{size[0]})'
                )
            pairs.append((image, mask))
            sizes.append(size)
        return pairs, sizes

    @staticmethod
    def _pack(rgb: np.ndarray) -> np.ndarray:
        """Pack RGB triples into one integer per pixel.

        Args:
            rgb: Array of shape (..., 3), uint8.

        Returns:
            Array of shape (...), int64.
        """
        rgb = rgb.astype(np.int64)
        return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]

    def decode_mask(self, rgb: np.ndarray, path: str = '<array>') -> np.ndarray:
        """Convert an RGB mask to class indices.

        Args:
            rgb: Mask colours, shape (H, W, 3), uint8.
            path: File name used in error messages.

        Returns:
            Class indices, shape (H, W), uint8 (:attr:`ignore_index` for ignored
            pixels).

        Raises:
            ValueError: If the mask holds a colour that is neither a class nor an
                ignored colour.
        """
        packed = self._pack(rgb)
        pos = np.searchsorted(self._codes, packed).clip(max=len(self._codes) - 1)
        bad = self._codes[pos] != packed
        if bad.any():
            colors, counts = np.unique(packed[bad], return_counts=True)
            listing = ', '.join(
                f'#{c:06X} ({n} px)'
                for c, n in zip(colors[:5], counts[:5], strict=True)
            )
            raise ValueError(
                f'{path}: unknown mask colour(s) {listing}'
                + (f' and {len(colors) - 5} more' if len(colors) > 5 else '')
            )
        return self._values[pos]

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Read (and possibly cache) one image and its mask.

        Args:
            index: Item index.

        Returns:
            Image (H, W, 3) uint8 and mask (H, W) uint8.

        Raises:
            UnreadableImageError: If the image or its mask is corrupt or
                truncated (the message names the file).
        """
        if index in self._cache:
            return self._cache[index]
        image_path, mask_path = self.files[index]
        image = read_image(image_path, 'RGB')
        mask = self.decode_mask(read_image(mask_path, 'RGB'), mask_path)
        if self.cache:
            self._cache[index] = (image, mask)
        return image, mask

    def __getitem__(self, index: int) -> Sample:
        """Return one whole image and its mask.

        Args:
            index: Index to return.

        Returns:
            ``image`` float32 (3, H, W) in [0, 255] and ``mask`` int64 (H, W).

        Raises:
            IndexError: If *index* is out of range.
        """
        return self.load_window(index, slice(None), slice(None))

    def load_window(self, index: int, rows: slice, cols: slice) -> Sample:
        """Return a window of one image and its mask.

        Cropping happens before the conversion to float, so patches of large
        images are cheap (especially with ``cache=True``).

        Args:
            index: Index of the image.
            rows: Row slice of the window.
            cols: Column slice of the window.

        Returns:
            ``image`` float32 (3, h, w) in [0, 255] and ``mask`` int64 (h, w).

        Raises:
            IndexError: If *index* is out of range.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f'index {index} out of range for {len(self)} images')
        image, mask = self._load(index % len(self))
        sample: Sample = {
            'image': torch.from_numpy(image[rows, cols]).permute(2, 0, 1).float(),
            'mask': torch.from_numpy(mask[rows, cols]).long(),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def __len__(self) -> int:
        """Return the number of images in the split.

        Returns:
            Length of the dataset.
        """
        return len(self.files)

    def plot(
        self, sample: Sample, show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Plot a sample: image, mask and (if present) prediction side by side.

        Args:
            sample: A sample with ``image`` (3, H, W), ``mask`` (H, W) and optional
                ``prediction`` (H, W).
            show_titles: Flag indicating whether to show titles above each panel.
            suptitle: Optional string to use as a suptitle.

        Returns:
            A matplotlib Figure with the rendered sample.
        """
        return plot_segmentation(
            sample['image'],
            sample.get('mask'),
            self.colormap,
            sample.get('prediction'),
            show_titles=show_titles,
            suptitle=suptitle,
        )
