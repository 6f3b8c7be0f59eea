"""Episodic data module base class for GeoDatasets: one GeoDataset per split."""

from typing import Any

from matplotlib.figure import Figure
from torchgeo.datamodules import GeoDataModule
from torchgeo.datasets import GeoDataset
from torchgeo.datasets.utils import Sample

from ..episodes import (
    EpisodeDataset,
    GeoEpisodeSampler,
    GeoReader,
    GeoStrategy,
    GeoSupportPolicy,
)
from ..normalization import Normalization
from ..plotting import plot_episode
from .base import (
    datamodule_normalization,
    episode_augmentations,
    save_normalization,
)

__all__ = ('GeoEpisodeDataModule',)


class GeoEpisodeDataModule(GeoDataModule):
    """Base class of the data modules that produce SSG2 episodes of GeoDataset windows.

    A subclass says how each split's GeoDataset is built
    (:meth:`split_dataset`) and which statistics it normalises with
    (:attr:`mean`, :attr:`std`, :attr:`bands`, :attr:`input_dtype`); this class
    builds the episodes the same way for all of them:

    * training: random target windows, new every epoch
      (:class:`~torchgeo_ssg2.episodes.GeoEpisodeSampler`; Lightning calls its
      ``set_epoch``), supports drawn by a
      :class:`~torchgeo_ssg2.episodes.GeoSupportPolicy` from the same split;
    * validation, test and prediction: the grid of windows inside their split
      (``GeoEpisodeSampler(grid=True)``), with fixed supports.

    Episodes are read by :class:`~torchgeo_ssg2.episodes.EpisodeDataset` through a
    :class:`~torchgeo_ssg2.episodes.GeoReader`: every band of an image nodata pixel
    (the nodata value, NaN or inf) of the targets and supports is read as the band
    mean, so that it is 0 once normalised, as the large-raster predictor feeds it,
    and its mask gets the ignore index; a support with more than half of its pixels
    ignored is replaced by a spare window of its draw. ``aug`` and ``train_aug`` are
    :class:`~torchgeo_ssg2.episodes.EpisodeAugmentation` modules applied by
    torchgeo's ``on_after_batch_transfer``: normalisation, and in training random
    flips and 90° rotations, every support independently of the target.

    Batches: ``image`` BxCxHxW, ``mask`` BxHxW, ``support_image`` BxTxCxHxW,
    ``support_mask`` BxTxHxW, ``bounds`` Bx9, ``transform`` Bx9.
    """

    #: Band names of the images, when known.
    bands: tuple[str, ...] | None = None

    #: NumPy dtype name of the raw images, when known.
    input_dtype: str | None = None

    #: Image nodata value (None: the image rasters' own, if any).
    nodata: float | None = None

    def __init__(
        self,
        dataset_class: type[GeoDataset],
        *,
        batch_size: int = 8,
        patch_size: int = 256,
        sequence_length: int = 4,
        eval_sequence_length: int | None = None,
        length: int | None = None,
        support_strategy: GeoStrategy = 'near',
        ignore_index: int = 255,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = True,
        **kwargs: Any,
    ) -> None:
        """Initialize a new GeoEpisodeDataModule instance.

        Args:
            dataset_class: Class of the split datasets (torchgeo's convention).
            batch_size: Size of each mini-batch.
            patch_size: Window size in pixels (a multiple of 32 for SSG2).
            sequence_length: Number of supports T per target in training.
            eval_sequence_length: T for validation, test and prediction (default:
                *sequence_length*).
            length: Training episodes per epoch (default: about the number of
                non-overlapping windows of the training area).
            support_strategy: ``'random'``, ``'near'`` or ``'stratified'`` (see
                :class:`~torchgeo_ssg2.episodes.GeoSupportPolicy`).
            ignore_index: Mask value excluded from losses and metrics.
            num_workers: Number of workers for parallel data loading.
            seed: Seed of the windows and support draws.
            augment: Random flips and 90° rotations in training.
            **kwargs: Kept in ``self.kwargs`` for :meth:`split_dataset`.
        """
        super().__init__(
            dataset_class,
            batch_size=batch_size,
            patch_size=patch_size,
            length=length,
            num_workers=num_workers,
            **kwargs,
        )
        self.sequence_length = sequence_length
        self.eval_sequence_length = eval_sequence_length or sequence_length
        self.support_strategy: GeoStrategy = support_strategy
        self.ignore_index = ignore_index
        self.seed = seed
        self.augment = augment

    @property
    def normalization(self) -> Normalization:
        """The statistics the images are normalised with, in their raw units.

        A single :attr:`mean` / :attr:`std` value is repeated for every band
        when :attr:`bands` is known (:func:`datamodule_normalization`).
        """
        return datamodule_normalization(
            self.mean, self.std, self.bands, self.input_dtype
        )

    def split_dataset(self, split: str) -> GeoDataset:
        """The GeoDataset of one split (``image`` and ``mask`` samples).

        Args:
            split: ``'train'``, ``'val'`` or ``'test'``.

        Returns:
            The dataset.
        """
        return self.dataset_class(split=split, **self.kwargs)  # type: ignore[call-arg]

    def _augmentations(self) -> None:
        """Set ``aug`` and ``train_aug`` from the statistics, and record them."""
        normalization = self.normalization
        save_normalization(self, normalization)
        self.aug, train_aug = episode_augmentations(
            normalization.mean, normalization.std
        )
        self.train_aug = train_aug if self.augment else None

    def episodes(
        self, split: str, dataset: GeoDataset
    ) -> tuple[EpisodeDataset, GeoEpisodeSampler]:
        """The episode dataset and target sampler of one split.

        Args:
            split: ``'train'``, ``'val'`` or ``'test'``.
            dataset: The split's GeoDataset.

        Returns:
            The episodes and their sampler.
        """
        training = split == 'train'
        policy = GeoSupportPolicy(
            dataset,
            size=self.patch_size,  # type: ignore[arg-type]
            sequence_length=(
                self.sequence_length if training else self.eval_sequence_length
            ),
            strategy=self.support_strategy,
            seed=self.seed,
            fixed=not training,
        )
        sampler = GeoEpisodeSampler(
            dataset,
            size=self.patch_size,  # type: ignore[arg-type]
            length=self.length if training else None,
            grid=not training,
            seed=self.seed,
            fixed=not training,
        )
        self._check_supports(split, policy, sampler)
        reader = GeoReader(
            dataset,
            self.nodata,
            ignore_index=self.ignore_index,
            fill=self.normalization.mean,
        )
        episodes = EpisodeDataset(reader, policy, mask_nodata=self.ignore_index)
        return episodes, sampler

    #: Training targets whose supports are drawn up front by :meth:`_check_supports`.
    support_check_targets = 64

    def _check_supports(
        self, split: str, policy: GeoSupportPolicy, sampler: GeoEpisodeSampler
    ) -> None:
        """Draw supports before any work, so that a split too small for them fails now.

        Validation and test targets are fixed, so all of them are drawn; for
        training, the first :attr:`support_check_targets` targets of epoch 0.

        Args:
            split: ``'train'``, ``'val'`` or ``'test'``.
            policy: The split's support policy.
            sampler: The split's target sampler.

        Raises:
            ValueError: Naming the split, if a target has no room for a support
                window beside it.
        """
        targets = sampler.target_windows(0)
        if split == 'train':
            targets = targets[: self.support_check_targets]
        for target in targets:
            try:
                policy.draw(target, epoch=0)
            except ValueError as error:
                raise ValueError(
                    f'the {split} split has no room for supports: {error}; use a '
                    'smaller patch_size or give the split a larger area'
                ) from None

    def setup(self, stage: str) -> None:
        """Set up the episode datasets and samplers.

        Args:
            stage: ``'fit'``, ``'validate'``, ``'test'`` or ``'predict'``.
        """
        self._augmentations()
        if stage in ('fit',):
            self.train_dataset, self.train_sampler = self.episodes(
                'train', self.split_dataset('train')
            )
        if stage in ('fit', 'validate'):
            self.val_dataset, self.val_sampler = self.episodes(
                'val', self.split_dataset('val')
            )
        if stage in ('test',):
            self.test_dataset, self.test_sampler = self.episodes(
                'test', self.split_dataset('test')
            )
        if stage in ('predict',):
            self.predict_dataset, self.predict_sampler = self.episodes(
                'test', self.split_dataset('test')
            )

    @property
    def colormap(self) -> Any:
        """RGB (0-255) per class for plots, or None."""
        return None

    @property
    def classes(self) -> Any:
        """Class names for plots, or None."""
        return None

    def display_bands(self) -> list[int] | None:
        """Indices of the bands shown in plots (default: the first three)."""
        return None

    def plot(self, sample: Sample, **kwargs: Any) -> Figure:
        """Plot an episode: the target row and one row per support.

        Args:
            sample: ``image`` (C, H, W), ``mask`` (H, W), optional
                ``prediction``, ``support_image`` (T, C, H, W), ``support_mask``
                (T, H, W) and the other keys of
                :func:`~torchgeo_ssg2.plotting.plot_episode`.
            **kwargs: Passed to :func:`~torchgeo_ssg2.plotting.plot_episode`.

        Returns:
            The figure.
        """
        idx = self.display_bands()
        shown = dict(sample)
        if idx is not None:
            shown['image'] = sample['image'][idx]
            if 'support_image' in sample:
                shown['support_image'] = sample['support_image'][:, idx]
        return plot_episode(
            shown, colormap=self.colormap, classes=self.classes, **kwargs
        )
