"""Episodic data module base class for non-geo datasets, and the statistics record."""

from typing import Any

import kornia.augmentation as K
import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, Dataset
from torchgeo.datamodules import NonGeoDataModule
from torchgeo.datasets import NonGeoDataset
from torchgeo.datasets.utils import Sample

from ..datasets.patches import GridPatchDataset, RandomPatchDataset, to_pair
from ..episodes import (
    EpisodeAugmentation,
    EpisodeDataset,
    EpisodeReader,
    EpisodeSampler,
    IndexStrategy,
    IndexSupportPolicy,
    ItemReader,
)
from ..normalization import Normalization
from ..plotting import plot_episode

__all__ = (
    'EpisodicNonGeoDataModule',
    'datamodule_normalization',
    'episode_augmentations',
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


def datamodule_normalization(
    mean: Any, std: Any, bands: tuple[str, ...] | None, dtype: str | None
) -> Normalization:
    """The statistics a datamodule normalises with, as a record.

    A single mean / std value is repeated for every band when the bands are
    known.

    Args:
        mean: The datamodule's ``mean`` (tensor, number or sequence).
        std: Its ``std``.
        bands: Its band names, when known.
        dtype: The NumPy dtype name of its raw images, when known.

    Returns:
        The statistics.
    """
    means, stds = statistic_values(mean), statistic_values(std)
    if bands is not None and len(means) == len(stds) == 1:
        means, stds = means * len(bands), stds * len(bands)
    return Normalization(means, stds, bands, dtype)


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


class EpisodicNonGeoDataModule(NonGeoDataModule):
    """Base class for data modules that produce SSG2 episodes from non-geo datasets.

    Every split (``dataset_class(split=...)``) is optionally cut into patches
    (:class:`~torchgeo_ssg2.datasets.RandomPatchDataset` for training,
    :class:`~torchgeo_ssg2.datasets.GridPatchDataset` for validation, test and
    prediction) and read as :class:`~torchgeo_ssg2.episodes.EpisodeDataset`
    episodes: the T supports of every target come from the same split, drawn by
    an :class:`~torchgeo_ssg2.episodes.IndexSupportPolicy`. Training draws (and
    patch positions) change every epoch (the epoch travels with the index through
    :class:`~torchgeo_ssg2.episodes.EpisodeSampler`, also under DDP); validation,
    test and prediction use ``fixed=True`` supports. Prediction uses the test
    split.

    Batches: ``image`` BxCxHxW, ``mask`` BxHxW, ``support_image`` BxTxCxHxW,
    ``support_mask`` BxTxHxW. ``aug`` and ``train_aug`` are
    :class:`~torchgeo_ssg2.episodes.EpisodeAugmentation` modules that torchgeo's
    ``on_after_batch_transfer`` applies: the target and the supports are
    normalised with :attr:`mean`/:attr:`std`; in training they are also
    augmented with random flips and 90° rotations, every support independently
    of the target and of the other supports.

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
        support_strategy: IndexStrategy = 'random',
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
            length: Training patches per epoch (see
                :class:`~torchgeo_ssg2.datasets.RandomPatchDataset`).
            support_strategy: 'random' or 'same_source' (supports from the
                target's group, e.g. its tile; see
                :class:`~torchgeo_ssg2.episodes.IndexSupportPolicy`).
            seed: Seed of the support draws, patch positions and shuffling.
            augment: Apply random flips and 90° rotations in training.
            **kwargs: Additional keyword arguments passed to *dataset_class*.
        """
        super().__init__(dataset_class, batch_size, num_workers, **kwargs)
        self.sequence_length = sequence_length
        self.eval_sequence_length = eval_sequence_length or sequence_length
        self.patch_size = None if patch_size is None else to_pair(patch_size)
        self.length = length
        self.support_strategy = support_strategy
        self.seed = seed
        save_normalization(self, self.normalization)

        self.aug, train_aug = episode_augmentations(self.mean, self.std)
        if augment:
            self.train_aug = train_aug

    @property
    def normalization(self) -> Normalization:
        """The statistics the images are normalised with.

        A single :attr:`mean` / :attr:`std` value is repeated for every band
        when :attr:`bands` is known (:func:`datamodule_normalization`).
        """
        return datamodule_normalization(
            self.mean, self.std, self.bands, self.input_dtype
        )

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
        reader: EpisodeReader
        if self.patch_size is None:
            reader = ItemReader(dataset)
        elif training:
            reader = RandomPatchDataset(
                dataset, self.patch_size, length=self.length, seed=self.seed
            )
        else:
            reader = GridPatchDataset(dataset, self.patch_size)
        strategy = self.support_strategy
        groups = getattr(reader, 'groups', None)
        if groups is None:
            groups = getattr(dataset, 'groups', None)
        policy = IndexSupportPolicy(
            len(reader),  # type: ignore[arg-type]
            self.sequence_length if training else self.eval_sequence_length,
            strategy=strategy,
            groups=groups if strategy == 'same_source' else None,
            seed=self.seed,
            fixed=not training,
            # patches of one image: no support may share a pixel with its target
            footprints=getattr(reader, 'footprint', None),
        )
        return EpisodeDataset(reader, policy)

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

        Training uses an :class:`~torchgeo_ssg2.episodes.EpisodeSampler`
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

    def base_dataset(self) -> Any:
        """The dataset behind the validation (or test, or training) episodes.

        Returns:
            The innermost dataset (episodes, readers and patches unwrapped), or
            None.
        """
        dataset: Any = (
            self.dataset or self.val_dataset or self.test_dataset or self.train_dataset
        )
        while dataset is not None and hasattr(dataset, 'reader'):
            dataset = dataset.reader
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
            **kwargs: Passed to :func:`~torchgeo_ssg2.plotting.plot_episode` or
                the dataset's plot.

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


def episode_augmentations(
    mean: Any, std: Any, rotate: bool = True
) -> tuple[EpisodeAugmentation, EpisodeAugmentation]:
    """The evaluation and training augmentations of SSG2 episodes.

    Args:
        mean: Per-band mean (or one value) of the raw images.
        std: Per-band std (or one value) of the raw images.
        rotate: Add random 90° rotations in training, to square images only
            (batches whose height and width differ are flipped only).

    Returns:
        ``(aug, train_aug)``: normalisation; normalisation, random horizontal and
        vertical flips (and 90° rotations).
    """
    mean = torch.as_tensor(mean, dtype=torch.float32)
    std = torch.as_tensor(std, dtype=torch.float32)
    rotations = [K.RandomRotation90(times=(0, 3))] if rotate else []
    return EpisodeAugmentation(K.Normalize(mean=mean, std=std)), EpisodeAugmentation(
        K.Normalize(mean=mean, std=std),
        K.RandomHorizontalFlip(),
        K.RandomVerticalFlip(),
        square_only=rotations,
    )
