"""Episodic data module base class for non-geo datasets, and patch datasets."""

import math
from collections.abc import Sequence
from typing import Any

import kornia.augmentation as K
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchgeo.datamodules import NonGeoDataModule
from torchgeo.datasets import NonGeoDataset
from torchgeo.datasets.utils import Sample

from ..datasets.episodes import EpisodeDataset
from ..normalization import Normalization
from ..samplers.episode import EpisodeIndex, EpisodeSampler
from ..samplers.support import SupportIndexSampler, SupportStrategy

__all__ = (
    'EpisodicNonGeoDataModule',
    'GridPatchDataset',
    'RandomPatchDataset',
    'plot_episode',
    'save_normalization',
    'statistic_values',
)


def statistic_values(values: Any) -> list[float]:
    """The values of a mean or std tensor, as the decimals they were written as.

    The statistics are float32 tensors (for kornia); each value is given back as
    the shortest decimal that rounds to the same float32 (107.67 rather than
    107.66999816894531).

    Args:
        values: A tensor, or a number or sequence of numbers.

    Returns:
        The values, flattened.
    """
    array = np.asarray(torch.as_tensor(values).detach().cpu(), dtype=np.float32)
    return [float(str(v)) for v in array.flatten()]


def save_normalization(
    datamodule: LightningDataModule, normalization: Normalization
) -> None:
    """Record a datamodule's statistics in its saved hyper-parameters.

    Lightning writes the hyper-parameters into every checkpoint as
    ``datamodule_hyper_parameters``: ``normalization`` (the record's plain dict,
    read by :meth:`Normalization.from_checkpoint`) and plain ``mean`` and ``std``
    lists.

    Args:
        datamodule: The datamodule.
        normalization: The statistics it normalises with.
    """
    record = normalization.to_dict()
    datamodule.save_hyperparameters(
        {'normalization': record, 'mean': record['mean'], 'std': record['std']}
    )


def _to_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    """Turn ``size`` or ``(height, width)`` into ``(height, width)``.

    Args:
        size: An int or a pair of ints.

    Returns:
        The pair.

    Raises:
        ValueError: If a size is not positive.
    """
    pair = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(pair) < 1:
        raise ValueError(f'patch size must be positive, got {size}')
    return pair


class _PatchDataset(Dataset[Sample]):
    """Shared logic of the patch datasets: image sizes, windows, padding."""

    def __init__(self, dataset: Dataset[Sample], size: int | tuple[int, int]) -> None:
        self.dataset = dataset
        self.size = _to_pair(size)
        sizes = getattr(dataset, 'sizes', None)
        if sizes is None:
            n = len(dataset)  # type: ignore[arg-type]
            sizes = [tuple(dataset[i]['image'].shape[-2:]) for i in range(n)]
        self.sizes: list[tuple[int, int]] = [(int(h), int(w)) for h, w in sizes]
        self.ignore_index: int | None = getattr(dataset, 'ignore_index', None)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _window(self, index: int, top: int, left: int) -> Sample:
        """Read the window of :attr:`size` at (top, left), padding past the border.

        Args:
            index: Index of the image in the wrapped dataset.
            top: First row.
            left: First column.

        Returns:
            ``image`` (C, h, w) and ``mask`` (h, w) of the window; the other keys of
            the wrapped dataset's samples are dropped.

        Raises:
            ValueError: If padding is needed but the dataset has no ignore_index.
        """
        ph, pw = self.size
        rows, cols = slice(top, top + ph), slice(left, left + pw)
        load_window = getattr(self.dataset, 'load_window', None)
        if callable(load_window):
            sample = load_window(index, rows, cols)
        else:
            sample = self.dataset[index]
            sample = {
                'image': sample['image'][..., rows, cols],
                **(
                    {'mask': sample['mask'][..., rows, cols]}
                    if 'mask' in sample
                    else {}
                ),
            }
        out: Sample = {'image': sample['image']}
        if 'mask' in sample:
            out['mask'] = sample['mask']
        h, w = out['image'].shape[-2:]
        if (h, w) != (ph, pw):
            if 'mask' in out and self.ignore_index is None:
                raise ValueError(
                    f'image {index} of {type(self.dataset).__name__} is smaller than '
                    f'the patch size {self.size} and the dataset has no ignore_index '
                    'to pad its mask with'
                )
            pad = (0, pw - w, 0, ph - h)
            out['image'] = torch.nn.functional.pad(out['image'], pad)
            if 'mask' in out:
                out['mask'] = torch.nn.functional.pad(
                    out['mask'], pad, value=float(self.ignore_index or 0)
                )
        return out

    def _group_of(self, image_index: int) -> Any:
        groups = getattr(self.dataset, 'groups', None)
        return image_index if groups is None else groups[image_index]


class RandomPatchDataset(_PatchDataset):
    """Random square (or rectangular) patches of the images of a dataset.

    Item ``i`` is a patch of image ``i % n`` of a table that lists every image once
    per patch needed to cover it, so larger images give proportionally more
    patches; the table is shuffled once (seeded), so an epoch shorter than the
    table still samples every image. The patch position is drawn from a generator seeded by
    ``(seed, epoch, i)``: reproducible, independent of worker or rank, and new
    every epoch (:meth:`set_epoch`, or an ``(index, epoch)`` pair as index).

    Args:
        dataset: Map-style dataset with ``image`` (C, H, W) and ``mask`` (H, W)
            samples of any size. A ``sizes`` attribute ((H, W) per item) avoids
            reading every image at construction, and a
            ``load_window(index, rows, cols)`` method avoids reading whole images.
        size: Patch size, ``size`` or ``(height, width)``.
        length: Number of patches per epoch; defaults to the number of
            non-overlapping patches that cover all images.
        seed: Seed of the patch positions.
    """

    def __init__(
        self,
        dataset: Dataset[Sample],
        size: int | tuple[int, int],
        length: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, size)
        ph, pw = self.size
        table = [
            k
            for k, (h, w) in enumerate(self.sizes)
            for _ in range(math.ceil(h / ph) * math.ceil(w / pw))
        ]
        # A fixed shuffle of the table, so that an epoch shorter than the table
        # (``length``) still draws from every image in proportion to its area
        # instead of from the first images only.
        order = np.random.default_rng([seed, len(table)]).permutation(len(table))
        self.table: list[int] = [table[j] for j in order]
        self.length = len(self.table) if length is None else int(length)
        if self.length < 1 or not self.table:
            raise ValueError(f'RandomPatchDataset needs length >= 1, got {length}')
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the patch positions.

        Args:
            epoch: The epoch.
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def image_index(self, index: int) -> int:
        """Index of the image that patch *index* is cut from.

        Args:
            index: Patch index.

        Returns:
            Image index in the wrapped dataset.
        """
        return self.table[index % len(self.table)]

    @property
    def groups(self) -> list[Any]:
        """Group of every patch: the wrapped dataset's group of its image."""
        return [self._group_of(self.image_index(i)) for i in range(len(self))]

    def __getitem__(self, index: int | tuple[int, int]) -> Sample:
        """Return one random patch.

        Args:
            index: Patch index, or an ``(index, epoch)`` pair.

        Returns:
            ``image`` (C, h, w) and ``mask`` (h, w) with (h, w) = :attr:`size`.

        Raises:
            IndexError: If *index* is out of range.
        """
        epoch = self.epoch
        if isinstance(index, tuple):
            index, epoch = int(index[0]), int(index[1])
        if not 0 <= index < len(self):
            raise IndexError(f'patch index {index} out of range for {len(self)}')
        k = self.image_index(index)
        h, w = self.sizes[k]
        rng = np.random.default_rng([self.seed, epoch, index])
        top = int(rng.integers(0, max(h - self.size[0], 0) + 1))
        left = int(rng.integers(0, max(w - self.size[1], 0) + 1))
        return self._window(k, top, left)


class GridPatchDataset(_PatchDataset):
    """Fixed windows on a regular grid over the images of a dataset.

    Windows start every *stride* pixels; the last row and column of windows are
    moved flush with the image border so that the whole image is covered. Images
    smaller than a window are padded (masks with the dataset's ``ignore_index``).

    Args:
        dataset: Map-style dataset with ``image`` (C, H, W) and ``mask`` (H, W)
            samples of any size (see :class:`RandomPatchDataset`).
        size: Window size, ``size`` or ``(height, width)``.
        stride: Distance between windows (defaults to *size*: no overlap).
    """

    def __init__(
        self,
        dataset: Dataset[Sample],
        size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__(dataset, size)
        self.stride = self.size if stride is None else _to_pair(stride)
        #: (image index, top, left) of every window.
        self.windows: list[tuple[int, int, int]] = []
        for k, (h, w) in enumerate(self.sizes):
            tops = _starts(h, self.size[0], self.stride[0])
            lefts = _starts(w, self.size[1], self.stride[1])
            self.windows += [(k, t, left) for t in tops for left in lefts]

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def groups(self) -> list[Any]:
        """Group of every window: the wrapped dataset's group of its image."""
        return [self._group_of(k) for k, _, _ in self.windows]

    def __getitem__(self, index: int) -> Sample:
        """Return one window.

        Args:
            index: Window index.

        Returns:
            ``image`` (C, h, w) and ``mask`` (h, w) with (h, w) = :attr:`size`.
        """
        k, top, left = self.windows[index]
        return self._window(k, top, left)


def _starts(length: int, size: int, stride: int) -> list[int]:
    """Window starts along one axis, the last one flush with the border.

    Args:
        length: Image length.
        size: Window length.
        stride: Distance between windows.

    Returns:
        Start offsets.
    """
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


class _PatchEpisodeDataset(EpisodeDataset):
    """Episodes whose target and supports are random patches.

    The epoch of the episode is passed on to the :class:`RandomPatchDataset` before
    the patches are read, so patch positions change every epoch just like the
    support draws (in every worker, for ``(target, epoch)`` indices).
    """

    def __getitem__(self, index: int | EpisodeIndex | tuple[int, int]) -> Any:
        epoch = int(index[1]) if isinstance(index, tuple) else self.epoch
        set_epoch = getattr(self.dataset, 'set_epoch', None)
        if callable(set_epoch):
            set_epoch(epoch)
        return super().__getitem__(index)


class EpisodicNonGeoDataModule(NonGeoDataModule):
    """Base class for data modules that produce SSG2 episodes from non-geo datasets.

    Every split (``dataset_class(split=...)``) is optionally cut into patches
    (:class:`RandomPatchDataset` for training, :class:`GridPatchDataset` for
    validation, test and prediction) and wrapped into an
    :class:`~torchgeo_ssg2.datasets.EpisodeDataset`: the T supports of every
    target come from the same split, drawn by a
    :class:`~torchgeo_ssg2.samplers.SupportIndexSampler`. Training draws change
    every epoch (the epoch travels with the index through
    :class:`~torchgeo_ssg2.samplers.EpisodeSampler`, also under DDP); validation,
    test and prediction use ``fixed=True`` supports. Prediction uses the test
    split.

    Batches: ``image`` BxCxHxW, ``mask`` BxHxW, ``support_image`` BxTxCxHxW,
    ``support_mask`` BxTxHxW. In :meth:`on_after_batch_transfer` the target and
    the supports are normalised with :attr:`mean`/:attr:`std`; in training they
    are also augmented with random flips and 90° rotations, every support
    independently of the target and of the other supports.

    :attr:`normalization` (:attr:`mean`, :attr:`std`, :attr:`bands`,
    :attr:`input_dtype`) is saved in the hyper-parameters, so every checkpoint
    written with the data module carries it (:func:`save_normalization`).
    """

    #: Band names of the images, when known.
    bands: tuple[str, ...] | None = None

    #: NumPy dtype name of the raw images, when known.
    input_dtype: str | None = None

    def __init__(
        self,
        dataset_class: type[NonGeoDataset],
        batch_size: int = 1,
        num_workers: int = 0,
        sequence_length: int = 4,
        eval_sequence_length: int | None = None,
        patch_size: int | tuple[int, int] | None = None,
        length: int | None = None,
        support_strategy: SupportStrategy = 'random',
        seed: int = 0,
        augment: bool = True,
        **kwargs: Any,
    ) -> None:
        """Initialize a new EpisodicNonGeoDataModule instance.

        Args:
            dataset_class: Class used to instantiate the datasets; it must take a
                ``split`` argument ('train', 'val', 'test').
            batch_size: Size of each mini-batch.
            num_workers: Number of workers for parallel data loading.
            sequence_length: Number of supports T per target in training.
            eval_sequence_length: T for validation, test and prediction (defaults
                to *sequence_length*).
            patch_size: Patch size ``size`` or ``(height, width)``; None to use the
                dataset's samples as they are (they must then share one size).
            length: Training patches per epoch (see :class:`RandomPatchDataset`).
            support_strategy: 'random' or 'same_source' (supports from the
                target's group, e.g. its tile; see
                :class:`~torchgeo_ssg2.samplers.SupportIndexSampler`).
            seed: Seed of the support draws, patch positions and shuffling.
            augment: Apply random flips and 90° rotations in training.
            **kwargs: Additional keyword arguments passed to *dataset_class*.
        """
        super().__init__(dataset_class, batch_size, num_workers, **kwargs)
        self.sequence_length = sequence_length
        self.eval_sequence_length = eval_sequence_length or sequence_length
        self.patch_size = None if patch_size is None else _to_pair(patch_size)
        self.length = length
        self.support_strategy = support_strategy
        self.seed = seed
        save_normalization(self, self.normalization)

        self.aug = K.AugmentationSequential(
            K.Normalize(mean=self.mean, std=self.std), data_keys=None, keepdim=True
        )
        if augment:
            transforms: list[Any] = [
                K.Normalize(mean=self.mean, std=self.std),
                K.RandomHorizontalFlip(),
                K.RandomVerticalFlip(),
            ]
            if self.patch_size is None or self.patch_size[0] == self.patch_size[1]:
                transforms.append(K.RandomRotation90(times=(0, 3)))
            self.train_aug = K.AugmentationSequential(
                *transforms, data_keys=None, keepdim=True
            )

    @property
    def normalization(self) -> Normalization:
        """The statistics the images are normalised with.

        A single :attr:`mean` / :attr:`std` value is repeated for every band
        when :attr:`bands` is known.
        """
        mean, std = statistic_values(self.mean), statistic_values(self.std)
        if self.bands is not None and len(mean) == len(std) == 1:
            mean, std = mean * len(self.bands), std * len(self.bands)
        return Normalization(mean, std, self.bands, self.input_dtype)

    def _episodes(self, split: str) -> EpisodeDataset:
        """Build the episode dataset of one split.

        Args:
            split: 'train', 'val' or 'test'.

        Returns:
            The episodes.
        """
        dataset: Dataset[Sample] = self.dataset_class(  # type: ignore[call-arg]
            split=split, **self.kwargs
        )
        training = split == 'train'
        if self.patch_size is not None:
            if training:
                dataset = RandomPatchDataset(
                    dataset, self.patch_size, length=self.length, seed=self.seed
                )
            else:
                dataset = GridPatchDataset(dataset, self.patch_size)
        groups = getattr(dataset, 'groups', None)
        strategy = self.support_strategy
        sampler = SupportIndexSampler(
            len(dataset),  # type: ignore[arg-type]
            self.sequence_length if training else self.eval_sequence_length,
            strategy=strategy,
            groups=groups if strategy == 'same_source' else None,
            seed=self.seed,
            fixed=not training,
        )
        return _PatchEpisodeDataset(dataset, sampler)

    def setup(self, stage: str) -> None:
        """Set up the episode datasets.

        Args:
            stage: Either 'fit', 'validate', 'test', or 'predict'.
        """
        if stage in ['fit']:
            self.train_dataset = self._episodes('train')
        if stage in ['fit', 'validate']:
            self.val_dataset = self._episodes('val')
        if stage in ['test']:
            self.test_dataset = self._episodes('test')
        if stage in ['predict']:
            self.predict_dataset = self._episodes('test')

    def _dataloader_factory(self, split: str) -> DataLoader[Sample]:
        """Build the DataLoader of one split.

        Training uses an :class:`~torchgeo_ssg2.samplers.EpisodeSampler`
        (shuffled, epoch-tagged, DDP-aware); the other splits are read in order.

        Args:
            split: Either 'train', 'val', 'test', or 'predict'.

        Returns:
            The DataLoader.
        """
        dataset = self._valid_attribute(f'{split}_dataset', 'dataset')
        batch_size = self._valid_attribute(f'{split}_batch_size', 'batch_size')
        sampler = None
        if split == 'train':
            sampler = EpisodeSampler(dataset, shuffle=True, seed=self.seed)
        return DataLoader(
            dataset=dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            drop_last=split == 'train' and len(dataset) >= batch_size,
            persistent_workers=self.num_workers > 0,
        )

    def on_after_batch_transfer(self, batch: Sample, dataloader_idx: int) -> Sample:
        """Normalise (and in training augment) the target and the supports.

        Args:
            batch: A batch with ``image`` BxCxHxW, optional ``mask`` BxHxW,
                ``support_image`` BxTxCxHxW and ``support_mask`` BxTxHxW.
            dataloader_idx: The index of the dataloader to which the batch belongs.

        Returns:
            The batch, same keys and shapes.
        """
        if not self.trainer:
            return batch
        if self.trainer.training:
            split = 'train'
        elif self.trainer.validating or self.trainer.sanity_checking:
            split = 'val'
        elif self.trainer.testing:
            split = 'test'
        else:
            split = 'predict'
        aug = self._valid_attribute(f'{split}_aug', 'aug')
        return augment_episode(batch, aug)

    def base_dataset(self) -> Any:
        """The dataset behind the validation (or test, or training) episodes.

        Returns:
            The innermost dataset (patches and episodes unwrapped), or None.
        """
        dataset: Any = (
            self.dataset or self.val_dataset or self.test_dataset or self.train_dataset
        )
        while dataset is not None and hasattr(dataset, 'dataset'):
            dataset = dataset.dataset
        return dataset

    def plot(self, sample: Sample, **kwargs: Any) -> Figure | None:
        """Plot an episode, or delegate a plain sample to the dataset's plot.

        Args:
            sample: ``image`` (C, H, W), ``mask`` (H, W), optional ``prediction``
                (H, W) and ``uncertainty`` (H, W); optional ``support_image``
                (T, C, H, W), ``support_mask`` (T, H, W) and the per-step
                ``intersection`` / ``union`` class maps (T, H, W) with the NULL
                class at index ``num_classes``.
            **kwargs: Passed to :func:`plot_episode` or the dataset's plot.

        Returns:
            A matplotlib Figure, or None when there is no dataset to plot with.
        """
        dataset = self.base_dataset()
        if dataset is None:
            return None
        if 'support_image' not in sample and hasattr(dataset, 'plot'):
            return dataset.plot(sample, **kwargs)  # type: ignore[no-any-return]
        return plot_episode(
            sample,
            colormap=getattr(dataset, 'colormap', None),
            classes=getattr(dataset, 'classes', None),
            **kwargs,
        )


def augment_episode(batch: Sample, aug: Any) -> Sample:
    """Apply a kornia augmentation to the target and, independently, the supports.

    Args:
        batch: ``image`` BxCxHxW, optional ``mask`` BxHxW, ``support_image``
            BxTxCxHxW and ``support_mask`` BxTxHxW; other keys pass through.
        aug: A kornia ``AugmentationSequential`` with ``data_keys=None``.

    Returns:
        The batch with augmented tensors (same shapes).
    """
    batch = dict(batch)
    target = {k: batch[k] for k in ('image', 'mask') if k in batch}
    batch.update(aug(target))
    if 'support_image' in batch:
        b, t = batch['support_image'].shape[:2]
        supports = {'image': batch['support_image'].flatten(0, 1)}
        if 'support_mask' in batch:
            supports['mask'] = batch['support_mask'].flatten(0, 1)
        out = aug(supports)
        batch['support_image'] = out['image'].unflatten(0, (b, t))
        if 'support_mask' in batch:
            batch['support_mask'] = out['mask'].unflatten(0, (b, t))
    return batch


def _label_cmap(
    colormap: Sequence[Sequence[int]] | None, num_classes: int
) -> ListedColormap:
    """Colormap for class maps: classes, then NULL (grey); 255 is black.

    Args:
        colormap: RGB (0-255) per class, or None for matplotlib's tab10.
        num_classes: Number of real classes.

    Returns:
        A 256-entry colormap, to use with ``vmin=0, vmax=255``.
    """
    colors = np.zeros((256, 3))
    if colormap is None:
        tab = plt.get_cmap('tab10')
        colors[:num_classes] = [tab(i % 10)[:3] for i in range(num_classes)]
    else:
        colors[:num_classes] = np.asarray(colormap, dtype=float)[:num_classes] / 255
    colors[num_classes] = (0.6, 0.6, 0.6)
    return ListedColormap(colors)


def _display(image: Tensor) -> np.ndarray:
    """Scale a (C, H, W) image to an (H, W, 3) array in [0, 1].

    Args:
        image: Image; values in [0, 255] are shown as they are, others min-max
            scaled.

    Returns:
        Displayable RGB array.
    """
    array = image[:3].detach().float().cpu().permute(1, 2, 0).numpy()
    if array.shape[-1] == 1:
        array = array.repeat(3, axis=-1)
    lo, hi = float(array.min()), float(array.max())
    if lo >= 0 and 1 < hi <= 255:
        return np.clip(array / 255, 0, 1)
    return np.clip((array - lo) / max(hi - lo, 1e-12), 0, 1)


def plot_episode(
    sample: Sample,
    colormap: Sequence[Sequence[int]] | None = None,
    classes: Sequence[str] | None = None,
    show_titles: bool = True,
    suptitle: str | None = None,
) -> Figure:
    """Plot an SSG2 episode: the target row and one row per support.

    Row 0: image | mask | prediction | uncertainty (those present).
    Row 1 + t: support image | support mask | intersection view | union view of
    step t: the predicted T-intersect-S_t and T-union-S_t class maps (NULL in grey, ignored pixels
    black). The intersections are the per-step "partial views" of the target: each
    shows the part of the target that support t confirms.

    Args:
        sample: See :meth:`EpisodicNonGeoDataModule.plot`.
        colormap: RGB (0-255) per class.
        classes: Class names (their number sets the NULL index); inferred from
            *colormap* if None.
        show_titles: Show panel titles.
        suptitle: Optional figure title.

    Returns:
        The figure.
    """
    if classes is not None:
        num_classes = len(classes)
    elif colormap is not None:
        num_classes = len(colormap)
    else:
        labels = [sample[k] for k in ('mask', 'prediction') if k in sample]
        num_classes = max([int(x[x != 255].max()) + 1 for x in labels if x.numel()])
    cmap = _label_cmap(colormap, num_classes)

    def label(ax: Any, data: Tensor) -> None:
        ax.imshow(
            data.cpu().numpy(), cmap=cmap, vmin=0, vmax=255, interpolation='nearest'
        )

    rows: list[list[tuple[str, Any]]] = []
    top: list[tuple[str, Any]] = [
        ('Image', lambda ax: ax.imshow(_display(sample['image'])))
    ]
    for key, title in (('mask', 'Mask'), ('prediction', 'Prediction')):
        if key in sample:
            top.append((title, lambda ax, k=key: label(ax, sample[k])))
    if 'uncertainty' in sample:
        top.append(
            (
                'Uncertainty',
                lambda ax: ax.imshow(
                    sample['uncertainty'].float().cpu().numpy(),
                    cmap='magma',
                    vmin=0,
                    vmax=1,
                ),
            )
        )
    rows.append(top)
    steps = sample['support_image'].shape[0] if 'support_image' in sample else 0
    for t in range(steps):
        row: list[tuple[str, Any]] = [
            (
                f'Support {t + 1}',
                lambda ax, t=t: ax.imshow(_display(sample['support_image'][t])),
            )
        ]
        for key, title in (
            ('support_mask', f'Support mask {t + 1}'),
            ('intersection', f'T \u2229 S{t + 1}'),
            ('union', f'T \u222a S{t + 1}'),
        ):
            if key in sample:
                row.append((title, lambda ax, k=key, t=t: label(ax, sample[k][t])))
        rows.append(row)

    ncols = max(len(r) for r in rows)
    fig, axs = plt.subplots(
        len(rows), ncols, figsize=(3 * ncols, 3 * len(rows)), squeeze=False
    )
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axs[r][c]
            ax.axis('off')
            if c < len(row):
                title, draw = row[c]
                draw(ax)
                if show_titles:
                    ax.set_title(title, fontsize=9)
    if suptitle is not None:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
