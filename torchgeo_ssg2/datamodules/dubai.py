"""Dubai aerial imagery episodic data module."""

from typing import Any

import torch

from ..datasets.dubai import DubaiAerial
from ..episodes import IndexStrategy
from .base import EpisodicNonGeoDataModule

__all__ = ('DubaiAerialDataModule',)


class DubaiAerialDataModule(EpisodicNonGeoDataModule):
    """SSG2 episodes of patches of the Dubai aerial images.

    Splits are by whole image (:class:`~torchgeo_ssg2.datasets.DubaiAerial`, fixed
    seed). Training targets are random patches (new positions every epoch) with
    random flips and 90° rotations; validation, test and prediction use the
    non-overlapping grid of windows over the held-out images, with fixed supports.
    Supports always come from the same split as their target. Images are cached in
    memory once read (``cache=True`` unless given in *kwargs*).
    """

    mean = torch.tensor(DubaiAerial.mean)
    std = torch.tensor(DubaiAerial.std)
    bands = ('R', 'G', 'B')
    input_dtype = 'uint8'

    def __init__(
        self,
        batch_size: int = 8,
        patch_size: int = 128,
        sequence_length: int = 4,
        eval_sequence_length: int | None = None,
        num_workers: int = 0,
        support_strategy: IndexStrategy = 'random',
        length: int | None = None,
        seed: int = 0,
        augment: bool = True,
        **kwargs: Any,
    ) -> None:
        """Initialize a new DubaiAerialDataModule instance.

        Args:
            batch_size: Size of each mini-batch.
            patch_size: Size of the square patches (a multiple of 32 for SSG2).
            sequence_length: Number of supports T per target in training.
            eval_sequence_length: T for validation, test and prediction (defaults
                to *sequence_length*).
            num_workers: Number of workers for parallel data loading.
            support_strategy: 'random' (any patch of the split) or 'same_source'
                (a patch of the same tile).
            length: Training patches per epoch (defaults to the number of patches
                that tile the training images once).
            seed: Seed of the support draws, patch positions and shuffling.
            augment: Apply random flips and 90° rotations in training.
            **kwargs: Additional keyword arguments passed to
                :class:`~torchgeo_ssg2.datasets.DubaiAerial` (``root``, ``tiles``,
                ``val_pct``, ``test_pct``, ...).
        """
        kwargs.setdefault('cache', True)
        super().__init__(
            DubaiAerial,
            batch_size=batch_size,
            num_workers=num_workers,
            sequence_length=sequence_length,
            eval_sequence_length=eval_sequence_length,
            patch_size=patch_size,
            length=length,
            support_strategy=support_strategy,
            seed=seed,
            augment=augment,
            **kwargs,
        )
