"""ISIC 2018 Task 1 (skin lesion boundary segmentation), also reading ISIC 2017."""

import csv
import glob
import os
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torchgeo.datasets import DatasetNotFoundError, NonGeoDataset
from torchgeo.datasets.utils import (
    Path,
    Sample,
)

from ..plotting import plot_segmentation
from .archives import extract_staged
from .images import read_image

__all__ = ('ISIC2018',)

Split = Literal['train', 'val', 'test']


class ISIC2018(NonGeoDataset):
    """ISIC 2018 Task 1: lesion boundary segmentation (binary).

    Reads three layouts under ``root`` (``layout='auto'`` picks the first found):

    * ``"2018"``, the official ISIC 2018 distribution, extracted or as its zips
      (a zip is extracted on first use where its folder is missing, through a
      staging folder renamed when complete, so an interrupted extraction is redone):
      ``ISIC2018_Task1-2_{Training,Validation,Test}_Input/ISIC_*.jpg`` and
      ``ISIC2018_Task1_{Training,Validation,Test}_GroundTruth/ISIC_*_segmentation.png``;
    * ``"2017"``, the official ISIC 2017 Part 1 distribution:
      ``ISIC-2017_{Training,Validation,Test_v2}_Data/ISIC_*.jpg`` and
      ``ISIC-2017_{Training,Validation,Test_v2}_Part1_GroundTruth/*_segmentation.png``
      (superpixel PNGs beside the images are ignored);
    * ``"folder"``: ``<split folder>/images/ISIC_*.jpg`` and
      ``<split folder>/masks/ISIC_*_segmentation.png`` with split folders ``train``,
      ``val``, ``test`` (as in ``isic2017_256``, which has ``train`` only); an
      ``index.csv`` with ``split`` and ``image_id`` columns, if present, fixes the
      items and their order.

    With ``split_fractions`` the split is instead carved deterministically (seeded
    permutation) out of one source split (``split_source``), e.g. the common random
    split of the 2,594 training images, or a train/val/test split of a folder that
    only has ``train``.

    Dataset features:

    * dermoscopic RGB images of varying size (ISIC 2018: 2,594 train, 100 val,
      1,000 test); one lesion per image
    * masks are 0/255 single-channel PNGs, returned as 0/1

    Samples:

    * ``image``: float32 (3, H, W), values 0-255
    * ``mask``: long (H, W), 1 = lesion

    The challenge metric is the thresholded Jaccard (a per-image IoU below 0.65 counts
    as 0; :class:`torchgeo_ssg2.metrics.ThresholdedJaccard`); report Dice and IoU
    beside it, and say which split was used.

    If you use this dataset in your research, please cite:

    * https://arxiv.org/abs/1902.03368 (ISIC 2018)
    * https://arxiv.org/abs/1710.05006 (ISIC 2017)
    """

    classes = ('background', 'lesion')
    colormap = ((0, 0, 0), (255, 0, 0))
    all_bands = ('R', 'G', 'B')
    rgb_bands = ('R', 'G', 'B')

    #: layout -> split -> (image folder, mask folder), relative to ``root``.
    layouts: ClassVar[dict[str, dict[str, tuple[str, str]]]] = {
        '2018': {
            'train': (
                'ISIC2018_Task1-2_Training_Input',
                'ISIC2018_Task1_Training_GroundTruth',
            ),
            'val': (
                'ISIC2018_Task1-2_Validation_Input',
                'ISIC2018_Task1_Validation_GroundTruth',
            ),
            'test': ('ISIC2018_Task1-2_Test_Input', 'ISIC2018_Task1_Test_GroundTruth'),
        },
        '2017': {
            'train': (
                'ISIC-2017_Training_Data',
                'ISIC-2017_Training_Part1_GroundTruth',
            ),
            'val': (
                'ISIC-2017_Validation_Data',
                'ISIC-2017_Validation_Part1_GroundTruth',
            ),
            'test': ('ISIC-2017_Test_v2_Data', 'ISIC-2017_Test_v2_Part1_GroundTruth'),
        },
        'folder': {
            'train': (os.path.join('train', 'images'), os.path.join('train', 'masks')),
            'val': (os.path.join('val', 'images'), os.path.join('val', 'masks')),
            'test': (os.path.join('test', 'images'), os.path.join('test', 'masks')),
        },
    }

    def __init__(
        self,
        root: Path = 'data',
        split: Split = 'train',
        transforms: Callable[[Sample], Sample] | None = None,
        size: int | tuple[int, int] = 256,
        resize: Literal['stretch', 'pad'] | None = 'stretch',
        layout: Literal['auto', '2018', '2017', 'folder'] = 'auto',
        split_fractions: Sequence[float] | None = None,
        split_source: Split = 'train',
        split_seed: int = 0,
    ) -> None:
        """Initialize a new ISIC2018 instance.

        Args:
            root: folder holding the data set.
            split: ``"train"``, ``"val"`` or ``"test"``.
            transforms: a function/transform that takes a sample and returns it
                transformed.
            size: output (H, W) (an int for a square) when *resize* is set.
            resize: ``"stretch"`` resizes to *size* ignoring the aspect ratio;
                ``"pad"`` keeps the aspect ratio, fits the longer side to *size* and
                pads the rest with zeros (image) and background (mask); None keeps
                the original size (batching then needs equal sizes).
            layout: ``"2018"``, ``"2017"``, ``"folder"``, or ``"auto"``.
            split_fractions: (train, val, test) fractions; when given, the split is
                carved out of *split_source* with a permutation seeded by
                *split_seed*.
            split_source: the split the fractions are carved from.
            split_seed: seed of the permutation.

        Raises:
            DatasetNotFoundError: If no layout is found.
            FileNotFoundError: If the split's folder or a mask is missing.
            ValueError: If an argument is invalid.
        """
        if split not in ('train', 'val', 'test'):
            raise ValueError(f"split must be 'train', 'val' or 'test', not {split!r}")
        if resize not in ('stretch', 'pad', None):
            raise ValueError(f"resize must be 'stretch', 'pad' or None, not {resize!r}")
        if layout not in ('auto', *self.layouts):
            raise ValueError(f'unknown layout {layout!r}')
        self.root = root
        self.split = split
        self.transforms = transforms
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.resize = resize
        self.layout = self._find_layout(layout)

        if split_fractions is None:
            self.files = self._list(split)
        else:
            fractions = [float(f) for f in split_fractions]
            if (
                len(fractions) != 3
                or min(fractions) < 0
                or abs(sum(fractions) - 1) > 1e-6
            ):
                raise ValueError(
                    f'split_fractions must be 3 non-negative numbers summing to 1, '
                    f'not {split_fractions!r}'
                )
            files = self._list(split_source)
            order = np.random.default_rng(split_seed).permutation(len(files))
            n_val = round(fractions[1] * len(files))
            n_test = round(fractions[2] * len(files))
            n_train = len(files) - n_val - n_test
            bounds = {
                'train': (0, n_train),
                'val': (n_train, n_train + n_val),
                'test': (n_train + n_val, len(files)),
            }[split]
            self.files = [files[i] for i in sorted(order[bounds[0] : bounds[1]])]
        if not self.files:
            raise ValueError(f'split {split!r} of {root!r} holds no images')

    def _find_layout(self, layout: str) -> str:
        """Find the layout under :attr:`root`, extracting its missing folders.

        A folder that is absent while its zip is present is extracted
        (:func:`~torchgeo_ssg2.datasets.archives.extract_staged`: through a
        staging folder, so a half-done extraction is never taken for a complete
        folder and is redone by the next run).

        Args:
            layout: A key of :attr:`layouts`, or ``"auto"``.

        Returns:
            The layout found.

        Raises:
            DatasetNotFoundError: If no folder or zip of the layout is found.
            RuntimeError: If an archive is unreadable.
        """
        root = str(self.root)
        candidates = list(self.layouts) if layout == 'auto' else [layout]
        for name in candidates:
            folders = dict.fromkeys(
                f for pair in self.layouts[name].values() for f in pair
            )
            found = False
            for folder in folders:
                directory = os.path.join(root, folder)
                archive = directory + '.zip'
                if not os.path.isdir(directory) and os.path.isfile(archive):
                    extract_staged(
                        archive,
                        os.path.dirname(directory),
                        os.path.basename(directory),
                    )
                found = found or os.path.isdir(directory)
            if found:
                return name
        raise DatasetNotFoundError(self)

    def _list(self, split: str) -> list[tuple[str, str]]:
        image_dir, mask_dir = (
            os.path.join(self.root, f) for f in self.layouts[self.layout][split]
        )
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(
                f'{image_dir}: split {split!r} not found in the {self.layout!r} layout; '
                'pass split_fractions=(train, val, test) to carve it out of '
                f'{os.path.dirname(image_dir) or "the training images"}'
            )
        ids = self._index_ids(split)
        if ids is None:
            paths = sorted(glob.glob(os.path.join(image_dir, 'ISIC_*.jpg')))
            ids = [os.path.splitext(os.path.basename(p))[0] for p in paths]
        files = []
        missing = []
        for image_id in ids:
            image = os.path.join(image_dir, f'{image_id}.jpg')
            mask = os.path.join(mask_dir, f'{image_id}_segmentation.png')
            if not os.path.isfile(image):
                missing.append(image)
            if not os.path.isfile(mask):
                missing.append(mask)
            files.append((image, mask))
        if missing:
            shown = ', '.join(missing[:5])
            more = f' and {len(missing) - 5} more' if len(missing) > 5 else ''
            raise FileNotFoundError(f'{len(missing)} missing file(s): {shown}{more}')
        return files

    def _index_ids(self, split: str) -> list[str] | None:
        if self.layout != 'folder':
            return None
        path = os.path.join(self.root, 'index.csv')
        if not os.path.isfile(path):
            return None
        with open(path, newline='') as f:
            rows = list(csv.DictReader(f))
        if not rows or not {'split', 'image_id'} <= set(rows[0]):
            raise ValueError(f"{path}: expected the columns 'split' and 'image_id'")
        return [row['image_id'] for row in rows if row['split'] == split]

    def __len__(self) -> int:
        """Return the number of images in the split.

        Returns:
            Number of images.
        """
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        """Return one image and its mask.

        Args:
            index: position in the split.

        Returns:
            ``{"image": float (3, H, W), "mask": long (H, W)}``.

        Raises:
            ValueError: If an image and its mask differ in size.
            UnreadableImageError: If the image or its mask is corrupt or
                truncated (the message names the file).
        """
        image_path, mask_path = self.files[index]
        image = Image.fromarray(read_image(image_path, 'RGB'))
        mask = Image.fromarray(read_image(mask_path, 'L'))
        if image.size != mask.size:
            raise ValueError(
                f'{mask_path}: mask size {mask.size} differs from the image size '
                f'{image.size} of {image_path}'
            )
        image, mask = self._resize(image, mask)
        image_t = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)
        mask_t = torch.from_numpy((np.array(mask) > 127).astype(np.int64))
        sample: Sample = {'image': image_t, 'mask': mask_t}
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _resize(
        self, image: Image.Image, mask: Image.Image
    ) -> tuple[Image.Image, Image.Image]:
        height, width = self.size
        if self.resize is None or image.size == (width, height):
            return image, mask
        if self.resize == 'stretch':
            return (
                image.resize((width, height), Image.Resampling.BILINEAR),
                mask.resize((width, height), Image.Resampling.NEAREST),
            )
        scale = min(width / image.width, height / image.height)
        new = (
            max(1, round(image.width * scale)),
            max(1, round(image.height * scale)),
        )
        offset = ((width - new[0]) // 2, (height - new[1]) // 2)
        padded_image = Image.new('RGB', (width, height))
        padded_image.paste(image.resize(new, Image.Resampling.BILINEAR), offset)
        padded_mask = Image.new('L', (width, height))
        padded_mask.paste(mask.resize(new, Image.Resampling.NEAREST), offset)
        return padded_image, padded_mask

    def plot(
        self,
        sample: Sample,
        show_titles: bool = True,
        suptitle: str | None = None,
        alpha: float = 0.5,
    ) -> Figure:
        """Plot a sample: image, mask and optional prediction.

        Args:
            sample: a sample from :meth:`__getitem__`, optionally with
                ``"prediction"`` (H, W) of 0/1.
            show_titles: whether to title the panels.
            suptitle: optional figure title.
            alpha: opacity of the overlays.

        Returns:
            The figure.
        """
        # Shift so that only the lesion (class 0 after the shift) is drawn.
        lesion = {
            key: sample[key].detach().cpu().long() - 1
            for key in ('mask', 'prediction')
            if key in sample
        }
        return plot_segmentation(
            sample['image'],
            lesion.get('mask'),
            [self.colormap[1]],
            lesion.get('prediction'),
            show_titles=show_titles,
            suptitle=suptitle,
            alpha=alpha,
        )
