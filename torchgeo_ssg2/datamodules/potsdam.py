"""ISPRS Potsdam episodic data module over the prepared GeoTIFFs (geo path)."""

import os
from collections.abc import Sequence
from typing import Any, Literal

from matplotlib.figure import Figure
from torchgeo.datasets.utils import Sample

from ..datasets.potsdam import (
    PreparedPotsdam,
    _display_bands,
    _PotsdamPlot,
    prepared_paths,
)
from ..datasets.potsdam_protocol import (
    ALL_BANDS,
    IGNORE_INDEX,
    _resolve_bands,
    get_protocol,
    split_tiles,
)
from ..datasets.prepare import prepare_potsdam
from ..episodes import GeoStrategy
from .raster import RasterEpisodeDataModule

__all__ = ('PotsdamDataModule',)

#: Per-band mean and std of the raw values (R, G, B, IR: 0-255; DSM: metres), as
#: used by the official SSG2 code (``normal.py``).
_MEAN = dict(zip(ALL_BANDS, (85.846, 91.777, 84.993, 97.276, 38.462), strict=True))
_STD = dict(zip(ALL_BANDS, (35.466, 34.850, 36.257, 35.686, 6.216), strict=True))


class PotsdamDataModule(RasterEpisodeDataModule):
    """SSG2 episodes of ISPRS Potsdam windows, read from the prepared GeoTIFFs.

    :meth:`prepare_data` runs :func:`~torchgeo_ssg2.datasets.prepare.prepare_potsdam`
    once (``root`` -> ``prepared_root``) when prepared tiles are missing.

    A configuration of :class:`~torchgeo_ssg2.datamodules.RasterEpisodeDataModule`:
    the images and masks of every split are those of a
    :class:`~torchgeo_ssg2.datasets.PreparedPotsdam` (its tiles, bands, protocol
    and label set), opened at the first :meth:`setup` (after
    :meth:`prepare_data`) and read window by window, so whole 6000x6000 tiles are
    never collated. Training targets are random windows over the training tiles
    (new every epoch); validation and test targets are the grid windows of their
    tiles, with fixed supports. Supports always come from the target's split.
    The labels were checked by the prepare step, so mask values are not read
    again (:attr:`check_values`).

    Batches: ``image`` BxCxHxW, ``mask`` BxHxW (protocol classes, ignore index
    255), ``support_image`` BxTxCxHxW, ``support_mask`` BxTxHxW, ``bounds`` Bx9,
    ``transform`` Bx9. Images and supports are normalised with the SSG2 band
    statistics; in training they are also flipped and rotated by multiples of 90°,
    every support independently of the target.

    The evaluation protocol (``"geoseg"`` or ``"full"``) is kept in
    :attr:`protocol` and saved in the hyperparameters (``protocol``), so that logged
    metrics say which protocol produced them. The band statistics of the chosen
    bands (:attr:`normalization`) are saved there too (see
    :func:`~torchgeo_ssg2.datamodules.base.save_normalization`).

    ``support_strategy`` defaults to ``'random'``, the paper's rule.
    """

    #: NumPy dtype of the prepared image stacks.
    input_dtype = 'float32'

    open_on_init = False
    check_values = False

    def __init__(
        self,
        root: str = 'data/potsdam',
        prepared_root: str | None = None,
        batch_size: int = 8,
        patch_size: int = 256,
        sequence_length: int = 4,
        eval_sequence_length: int | None = None,
        length: int | None = None,
        support_strategy: GeoStrategy = 'random',
        bands: str | Sequence[str] = 'RGBIR+DSM',
        protocol: Literal['geoseg', 'full'] = 'geoseg',
        val_tiles: Sequence[str] = ('2_10',),
        drop_7_10: bool | None = None,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = True,
        prepare: bool = True,
        **kwargs: Any,
    ) -> None:
        """Initialize a new PotsdamDataModule instance.

        Args:
            root: folder holding the official distribution (folders or zips).
            prepared_root: folder of the prepared GeoTIFFs (default
                ``<root>/prepared``).
            batch_size: size of each mini-batch.
            patch_size: window size in pixels (a multiple of 32 for SSG2).
            sequence_length: number of supports T per target in training.
            eval_sequence_length: T for validation, test and prediction (default:
                *sequence_length*).
            length: training episodes per epoch (default: about the number of
                non-overlapping windows of the training tiles).
            support_strategy: ``"random"``, ``"near"`` or ``"stratified"`` (see
                :class:`~torchgeo_ssg2.episodes.GeoSupportPolicy`).
            bands: ``"RGB"``, ``"IRRG"``, ``"RGBIR"``, ``"RGBIR+DSM"`` or a sequence
                of band names.
            protocol: ``"geoseg"`` (5 classes, clutter ignored, eroded evaluation
                labels, 7_10 dropped) or ``"full"`` (6 classes, full labels).
            val_tiles: official training tiles held out for validation.
            drop_7_10: drop tile 7_10 from training (default: the protocol's).
            num_workers: number of workers for parallel data loading.
            seed: seed of the windows and support draws.
            augment: random flips and 90° rotations in training.
            prepare: run the prepare step in :meth:`prepare_data` when prepared
                tiles are missing.
            **kwargs: passed to :class:`~torchgeo_ssg2.datasets.PreparedPotsdam`
                (``labels``, ``crs``, ``res``, ``cache``, ...).
        """
        self.protocol = get_protocol(protocol)
        self.root = root
        self.prepared_root = prepared_root or os.path.join(root, 'prepared')
        self.val_tiles = tuple(val_tiles)
        self.drop_7_10 = drop_7_10
        self.prepare = prepare
        self.dataset_kwargs = kwargs
        chosen = _resolve_bands(bands)
        super().__init__(
            self.prepared_root,
            self.prepared_root,
            num_classes=self.protocol.num_classes,
            bands=chosen,
            ignore_index=IGNORE_INDEX,
            patch_size=patch_size,
            batch_size=batch_size,
            sequence_length=sequence_length,
            eval_sequence_length=eval_sequence_length,
            support_strategy=support_strategy,
            length=length,
            mean=[_MEAN[b] for b in chosen],
            std=[_STD[b] for b in chosen],
            class_names=self.protocol.classes,
            num_workers=num_workers,
            seed=seed,
            augment=augment,
        )
        self.save_hyperparameters({'protocol': self.protocol.name})

    def sources(self) -> tuple[Any, ...]:
        """The images and masks of the train, validation and test tiles.

        Returns:
            ``(images, masks, val_images, val_masks, test_images, test_masks)``
            of :class:`~torchgeo_ssg2.datasets.PreparedPotsdam` splits.
        """
        pairs: list[Any] = []
        for split in ('train', 'val', 'test'):
            dataset = PreparedPotsdam(
                root=self.prepared_root,
                split=split,  # type: ignore[arg-type]
                bands=self.bands,
                protocol=self.protocol.name,
                val_tiles=self.val_tiles,
                drop_7_10=self.drop_7_10,
                **self.dataset_kwargs,
            )
            pairs += [dataset.images, dataset.masks]
        return tuple(pairs)

    def tiles(self) -> tuple[str, ...]:
        """Every tile the train, validation and test splits use.

        Returns:
            Tile ids.
        """
        drop = self.protocol.drop_7_10 if self.drop_7_10 is None else self.drop_7_10
        return tuple(
            t
            for split in ('train', 'val', 'test')
            for t in split_tiles(split, self.val_tiles, drop)
        )

    def prepare_data(self) -> None:
        """Prepare the GeoTIFFs once, if some are missing (rank 0 only)."""
        tiles = self.tiles()
        done = all(
            os.path.isfile(path)
            for tile in tiles
            for path in prepared_paths(self.prepared_root, tile).values()
        )
        if self.prepare and not done:
            prepare_potsdam(self.root, self.prepared_root, tiles=tiles)

    @property
    def colormap(self) -> Any:
        """RGB (0-255) per class of the protocol."""
        return self.protocol.colormap

    @property
    def classes(self) -> Any:
        """Class names of the protocol."""
        return self.protocol.classes

    def display_bands(self) -> list[int]:
        """Indices of the RGB (else IRRG) bands among :attr:`bands`."""
        return _display_bands(self.bands)

    def plot(self, sample: Sample, **kwargs: Any) -> Figure:
        """Plot an episode (target row and one row per support), or a plain sample.

        Args:
            sample: ``image`` (C, H, W), ``mask`` (H, W), optional ``prediction``;
                optional ``support_image`` (T, C, H, W) and ``support_mask`` (T, H, W)
                and the other keys of
                :func:`~torchgeo_ssg2.plotting.plot_episode`.
            **kwargs: passed to the plotting function.

        Returns:
            The figure.
        """
        if 'support_image' in sample:
            return super().plot(sample, **kwargs)
        # the datasets' plot: it reads only ``bands`` and ``protocol``
        return _PotsdamPlot.plot(self, sample, **kwargs)  # type: ignore[arg-type]
