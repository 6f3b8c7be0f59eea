"""ISIC 2018 (and 2017) episodic data module."""

from typing import Any, Literal

import torch
from torchgeo.datasets import DatasetNotFoundError

from ..datasets.isic import ISIC2018
from ..episodes import IndexStrategy
from .base import EpisodicNonGeoDataModule

__all__ = ('ISIC2018DataModule',)


class ISIC2018DataModule(EpisodicNonGeoDataModule):
    """SSG2 episodes of ISIC lesion images (binary masks: 0 background, 1 lesion).

    Every image is resized by the dataset (``size``, ``resize``); each target gets T
    supports drawn from the same split (random draws every epoch in training, fixed
    ones elsewhere). Images are normalised with per-channel statistics of the 2,000
    ISIC 2017 training images (256x256); training adds random flips and 90°
    rotations (of square images), the supports independently of the target.

    Use ``split_fractions`` (forwarded to :class:`~torchgeo_ssg2.datasets.ISIC2018`)
    to carve train/val/test out of one folder, e.g. the ``isic2017_256`` copy that
    has ``train`` only. Zips of the official distribution are extracted in
    :meth:`prepare_data`, once per node, before the ranks set up.
    """

    #: Per-channel mean / std (R, G, B; 0-255) of the ISIC 2017 training images.
    mean = torch.tensor([180.503, 150.847, 139.466])
    std = torch.tensor([39.190, 41.307, 45.015])
    bands = ('R', 'G', 'B')
    input_dtype = 'uint8'

    def __init__(
        self,
        batch_size: int = 8,
        size: int = 256,
        resize: Literal['stretch', 'pad'] | None = 'stretch',
        sequence_length: int = 4,
        eval_sequence_length: int | None = None,
        num_workers: int = 0,
        support_strategy: IndexStrategy = 'random',
        seed: int = 0,
        augment: bool = True,
        **kwargs: Any,
    ) -> None:
        """Initialize a new ISIC2018DataModule instance.

        Args:
            batch_size: size of each mini-batch.
            size: image side after resizing (a multiple of 32 for SSG2).
            resize: ``"stretch"`` or ``"pad"`` (see
                :class:`~torchgeo_ssg2.datasets.ISIC2018`); None keeps the original
                sizes (then use ``batch_size=1``).
            sequence_length: number of supports T per target in training.
            eval_sequence_length: T for validation, test and prediction (default:
                *sequence_length*).
            num_workers: number of workers for parallel data loading.
            support_strategy: ``"random"`` (see
                :class:`~torchgeo_ssg2.episodes.IndexSupportPolicy`).
            seed: seed of the support draws and shuffling.
            augment: random flips and 90° rotations in training.
            **kwargs: passed to :class:`~torchgeo_ssg2.datasets.ISIC2018`
                (``root``, ``layout``, ``split_fractions``, ``split_seed``, ...).
        """
        super().__init__(
            ISIC2018,
            batch_size=batch_size,
            num_workers=num_workers,
            sequence_length=sequence_length,
            eval_sequence_length=eval_sequence_length,
            patch_size=None,
            support_strategy=support_strategy,
            seed=seed,
            augment=augment,
            size=size,
            resize=resize,
            **kwargs,
        )

    def prepare_data(self) -> None:
        """Extract the missing folders of the distribution from its zips.

        Lightning calls this on one process per node before :meth:`setup`, so
        the ranks of a DDP run do not each extract the same multi-gigabyte zips;
        the dataset extracts nothing when its folders are in place. A split
        that is missing or empty is reported by :meth:`setup`, for the stage
        that needs it.
        """
        try:
            self.dataset_class(split='train', **self.kwargs)
        except DatasetNotFoundError:
            raise
        except (FileNotFoundError, ValueError):
            pass  # the folders are extracted before the split is listed
