"""SSG2 episodes of a user's own rasters: folders of GeoTIFF images and masks."""

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import shapely
import torch
from torchgeo.datasets import GeoDataset, IntersectionDataset, RasterDataset
from torchgeo.datasets.splits import random_bbox_assignment, roi_split

from ..datasets.rasters import (
    MaskMapping,
    RasterInputError,
    RasterSource,
    check_bands,
    check_mask_values,
    check_overlap,
    open_rasters,
)
from ..datasets.rasters import raster_statistics as _statistics
from ..episodes import GeoEpisodeSampler, GeoStrategy, infer_nodata
from .geo import GeoEpisodeDataModule

__all__ = ('RasterEpisodeDataModule',)


def _fraction_counts(n: int, fractions: Sequence[float], what: str) -> list[int]:
    """Split *n* items into train and the given fractions (each at least 1).

    Args:
        n: Number of items.
        fractions: Fractions of the held-out splits (0 for none).
        what: What the items are, for messages.

    Returns:
        Counts of train and of each held-out split.

    Raises:
        RasterInputError: If there are too few items.
    """
    held = [max(1, round(f * n)) if f > 0 else 0 for f in fractions]
    if n - sum(held) < 1:
        raise RasterInputError(
            f'{n} {what}(s) cannot be split into train and '
            f'{[f for f in fractions if f > 0]} fractions; give more data, smaller '
            'fractions, or val_images/val_masks'
        )
    return [n - sum(held), *held]


class RasterEpisodeDataModule(GeoEpisodeDataModule):
    """SSG2 episodes of windows of one's own image and mask rasters.

    ``images`` and ``masks`` each take a folder, a glob, a file, a list of these,
    or a torchgeo :class:`~torchgeo.datasets.RasterDataset` (in a config, by
    ``class_path``). Masks are read with ``is_image=False`` (integer values,
    nearest resampling) and joined with the images as an
    :class:`~torchgeo.datasets.IntersectionDataset`, so files in different CRSs
    or resolutions are warped by torchgeo to those of the first image.

    Splits: explicit ``val_images``/``val_masks`` (and ``test_images``/
    ``test_masks``), or ``val_fraction``/``test_fraction`` of the area carved out
    by ``split_by``: ``'block'`` (square blocks of ``block_size`` pixels assigned
    at random, seeded, through torchgeo's ``roi_split``: windows never straddle
    two splits) or ``'file'`` (whole image/mask pairs, torchgeo's
    ``random_bbox_assignment``). Supports always come from the target's split.

    Mask values outside the classes (or *mask_mapping*), such as a mask file's
    nodata, are read as ``ignore_index``, and so are image nodata pixels (all
    bands equal to the image nodata value, or a band NaN or inf), whose bands
    are read as the band means (0 once normalised).

    Before any window is read, every input is checked, with a one-line error
    naming the file: an image without an overlapping mask, band counts or dtypes
    that differ between files, a given ``mean`` or ``std`` with neither one
    value nor one per band, a mask value outside ``num_classes`` (or
    ``mask_mapping``), and a split area smaller than one patch.

    ``mean``/``std`` default to statistics computed once from
    ``statistics_windows`` seeded random windows of the training images (bounded
    memory, nodata ignored, with a progress bar); they are recorded in the
    hyper-parameters and so in every checkpoint (:attr:`normalization`).

    The rasters are opened and checked on construction (:attr:`open_on_init`),
    or else at the first :meth:`setup`; a subclass may give its sources as
    datasets built then (:meth:`sources`).
    """

    #: Open and check the rasters in ``__init__`` (else at the first setup).
    open_on_init: bool = True

    #: Check every mask value against the classes or the mapping.
    check_values: bool = True

    def __init__(
        self,
        images: RasterSource,
        masks: RasterSource,
        num_classes: int,
        bands: Sequence[str] | None = None,
        ignore_index: int = 255,
        mask_mapping: Mapping[int | str, int] | None = None,
        patch_size: int = 256,
        batch_size: int = 8,
        sequence_length: int = 4,
        eval_sequence_length: int | None = None,
        support_strategy: GeoStrategy = 'near',
        length: int | None = None,
        val_images: RasterSource | None = None,
        val_masks: RasterSource | None = None,
        test_images: RasterSource | None = None,
        test_masks: RasterSource | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        split_by: Literal['block', 'file'] = 'block',
        block_size: int | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        statistics_windows: int = 256,
        class_names: Sequence[str] | None = None,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        """Initialize a new RasterEpisodeDataModule instance.

        Args:
            images: Image rasters (folder, glob, file, list, or RasterDataset).
            masks: Mask rasters, class indices or colours (same forms).
            num_classes: Number of classes.
            bands: Band names of the images, in file order.
            ignore_index: Mask value excluded from losses and metrics; also given
                to image nodata pixels and to raw values outside *mask_mapping*.
            mask_mapping: Raw mask value -> class (``{0: 0, 255: 1}``), or colour
                -> class (``{'255,255,255': 0, '0,0,255': 1}``) for RGB masks.
            patch_size: Window size in pixels (a multiple of 32 for SSG2).
            batch_size: Size of each mini-batch.
            sequence_length: Number of supports T per target in training.
            eval_sequence_length: T for validation, test and prediction.
            support_strategy: ``'near'``, ``'random'`` or ``'stratified'``.
            length: Training episodes per epoch (default: about the number of
                non-overlapping windows of the training area).
            val_images: Validation image rasters (then *val_fraction* is unused).
            val_masks: Validation mask rasters.
            test_images: Test image rasters (then *test_fraction* is unused).
            test_masks: Test mask rasters.
            val_fraction: Fraction of the area (or files) held out for validation.
            test_fraction: Fraction held out for test (default none: test and
                predict use the validation split).
            split_by: ``'block'`` or ``'file'`` (whole image files; refused when
                files of two splits overlap on the ground).
            block_size: Side of the split blocks in pixels (default 4 patches).
            mean: Per-band mean of the raw images, or one value for all bands
                (default: computed).
            std: Per-band std of the raw images, or one value for all bands
                (default: computed).
            statistics_windows: Windows read to compute *mean* and *std*.
            class_names: Names of the classes, for plots.
            num_workers: Number of workers for parallel data loading.
            seed: Seed of the splits, windows, statistics and support draws.
            augment: Random flips and 90° rotations in training.

        Raises:
            ValueError: If an argument is invalid.
            RasterInputError: If an input raster cannot be trained on.
        """
        super().__init__(
            RasterDataset,
            batch_size=batch_size,
            patch_size=patch_size,
            sequence_length=sequence_length,
            eval_sequence_length=eval_sequence_length,
            length=length,
            support_strategy=support_strategy,
            ignore_index=ignore_index,
            num_workers=num_workers,
            seed=seed,
            augment=augment,
        )
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        for name, value in (
            ('val_fraction', val_fraction),
            ('test_fraction', test_fraction),
        ):
            if not 0 <= value < 1:
                raise ValueError(f'{name} must be in [0, 1), got {value}')
        if split_by not in ('block', 'file'):
            raise ValueError(f"split_by must be 'block' or 'file', got {split_by!r}")
        if (val_images is None) != (val_masks is None):
            raise ValueError('give both val_images and val_masks, or neither')
        if (test_images is None) != (test_masks is None):
            raise ValueError('give both test_images and test_masks, or neither')
        if (mean is None) != (std is None):
            raise ValueError('give both mean and std, or neither')
        if statistics_windows < 1:
            raise ValueError('statistics_windows must be >= 1')
        self.num_classes = int(num_classes)
        self.mapping = (
            None
            if mask_mapping is None
            else MaskMapping(mask_mapping, num_classes, ignore_index)
        )
        # Masks are always read through a mapping: without one given, the classes
        # map to themselves and anything else (a file's nodata) to ignore_index.
        self._read_mapping = self.mapping or MaskMapping(
            {**{c: c for c in range(num_classes)}, ignore_index: ignore_index},
            num_classes,
            ignore_index,
        )
        self.class_names = None if class_names is None else tuple(class_names)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.split_by = split_by
        self.block_size = 4 * patch_size if block_size is None else int(block_size)
        self.statistics_windows = int(statistics_windows)
        self.bands = None if bands is None else tuple(bands)

        self._sources = (images, masks, val_images, val_masks, test_images, test_masks)
        self._given = mean is not None
        if mean is not None and std is not None:
            self.mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
            self.std = torch.as_tensor(std, dtype=torch.float32).flatten()
            self._augmentations()
        self._datasets: dict[str, GeoDataset] = {}
        if self.open_on_init:
            self.open()

    def sources(self) -> tuple[Any, ...]:
        """The image and mask sources: train, validation and test pairs.

        Returns:
            ``(images, masks, val_images, val_masks, test_images, test_masks)``,
            each a :data:`~torchgeo_ssg2.datasets.rasters.RasterSource` or None.
        """
        return self._sources

    def open(self) -> None:
        """Open and check the rasters, split them and set the statistics (once).

        Raises:
            RasterInputError: If an input raster cannot be trained on.
        """
        if self._datasets:
            return
        images, masks, val_images, val_masks, test_images, test_masks = self.sources()
        self.images, self.masks = self._pair(images, masks)
        self.nodata = infer_nodata(self.images)
        if self.nodata is None and np.issubdtype(
            np.dtype(self.input_dtype), np.floating
        ):
            self.nodata = math.nan  # float rasters without a nodata value: NaN
        pairs = self.images & self.masks
        self._check_area({'image': pairs})
        datasets = self._splits(
            pairs,
            None if val_images is None else self._pair(val_images, val_masks),
            None if test_images is None else self._pair(test_images, test_masks),
        )
        self._check_area(datasets)
        self._datasets = datasets
        if not self._given:
            self.mean, self.std = self._compute_statistics()
        self._augmentations()

    def _pair(
        self, images: RasterSource, masks: RasterSource | None
    ) -> tuple[RasterDataset, RasterDataset]:
        """Open and check one image/mask pair of sources."""
        assert masks is not None
        reference = getattr(self, 'images', None)
        crs = None if reference is None else reference.crs
        res = None if reference is None else reference.res
        image_ds = open_rasters(images, 'image', is_image=True, crs=crs, res=res)
        if reference is None:
            count, self.input_dtype = check_bands(image_ds, self.bands)
            self._check_statistics(image_ds, count)
        mask_ds = open_rasters(
            masks,
            'mask',
            is_image=False,
            crs=image_ds.crs,
            res=image_ds.res,
            transforms=self._read_mapping,
        )
        if reference is not None:
            count = check_bands(image_ds, self.bands)
            expected = check_bands(reference, self.bands)
            if count != expected:
                raise RasterInputError(
                    f'image {image_ds.index.filepath.iloc[0]} has {count[0]} {count[1]} '
                    f'band(s) but the training images have {expected[0]} {expected[1]}'
                )
        check_overlap(image_ds, mask_ds)
        if self.check_values:
            check_mask_values(
                mask_ds, self.num_classes, self.ignore_index, self.mapping
            )
        return image_ds, mask_ds

    def _check_statistics(self, images: RasterDataset, count: int) -> None:
        """Given *mean* and *std* must hold one value, or one per image band.

        Their lengths are equal (checked on construction).

        Args:
            images: The training image rasters.
            count: Their number of bands read.

        Raises:
            RasterInputError: Naming the first image file, its band count and
                the arguments.
        """
        values = self.mean.numel() if self._given else 1
        if values not in (1, count):
            raise RasterInputError(
                f'image {images.index.filepath.iloc[0]} has {count} band(s) but mean '
                f'and std have {values} values: give one per band, or one for all '
                'bands'
            )

    def _splits(
        self,
        dataset: IntersectionDataset,
        val: tuple[RasterDataset, RasterDataset] | None,
        test: tuple[RasterDataset, RasterDataset] | None,
    ) -> dict[str, GeoDataset]:
        """The GeoDataset of every split."""
        fractions = [
            0.0 if val is not None else self.val_fraction,
            0.0 if test is not None else self.test_fraction,
        ]
        names = ['val', 'test']
        held = [n for n, f in zip(names, fractions, strict=True) if f > 0]
        out: dict[str, GeoDataset] = {}
        if not held:
            out['train'] = dataset
        elif self.split_by == 'file':
            counts = _fraction_counts(len(dataset.index), fractions, 'image/mask pair')
            parts = random_bbox_assignment(
                dataset,
                [c for c in counts if c > 0],
                generator=torch.Generator().manual_seed(self.seed),
            )
            self._check_disjoint(dict(zip(['train', *held], parts, strict=True)))
            out.update(zip(['train', *held], parts, strict=True))
        else:
            out.update(self._block_split(dataset, fractions, held))
        if val is not None:
            out['val'] = val[0] & val[1]
        if test is not None:
            out['test'] = test[0] & test[1]
        if 'val' not in out:
            raise ValueError(
                'no validation split: give val_fraction > 0 or val_images/val_masks'
            )
        out.setdefault('test', out['val'])
        return out

    def _check_disjoint(self, splits: Mapping[str, GeoDataset]) -> None:
        """Splits by file must not share ground (overlapping image tiles would).

        Args:
            splits: The GeoDataset of each split.

        Raises:
            RasterInputError: If two splits share more than one pixel of area,
                naming the image files that cover it.
        """
        areas = {name: ds.index.geometry.union_all() for name, ds in splits.items()}
        names = list(splits)
        xres, yres = self.images.res
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                shared = shapely.intersection(areas[a], areas[b])
                if shared.area <= xres * yres:
                    continue
                files = [
                    str(path)
                    for path, geometry in zip(
                        self.images.index.filepath,
                        self.images.index.geometry,
                        strict=True,
                    )
                    if geometry.intersection(shared).area > 0
                ]
                raise RasterInputError(
                    f"split_by='file' puts the same ground in the {a} and {b} "
                    f'splits: image files {", ".join(files[:3])} overlap; use '
                    "split_by='block' or give val_images / test_images"
                )

    def _block_split(
        self, dataset: GeoDataset, fractions: Sequence[float], held: Sequence[str]
    ) -> dict[str, GeoDataset]:
        """Assign square blocks of the footprint to the splits at random."""
        xres, yres = dataset.res
        bw, bh = self.block_size * xres, self.block_size * yres
        footprint = dataset.index.geometry.union_all()
        x0, y0, x1, y1 = footprint.bounds
        cols, rows = math.ceil((x1 - x0) / bw), math.ceil((y1 - y0) / bh)
        cells = [
            shapely.box(x0 + i * bw, y0 + j * bh, x0 + (i + 1) * bw, y0 + (j + 1) * bh)
            for j in range(rows)
            for i in range(cols)
        ]
        cells = [c for c in cells if shapely.intersection(c, footprint).area > 0]
        counts = _fraction_counts(len(cells), fractions, f'{self.block_size} px block')
        order = np.random.default_rng([self.seed, len(cells)]).permutation(len(cells))
        rois, start = [], 0
        for count in counts:
            if count > 0:
                chosen = [cells[k] for k in order[start : start + count]]
                rois.append(shapely.union_all(chosen))
                start += count
        return dict(zip(['train', *held], roi_split(dataset, rois), strict=True))

    def _check_area(self, datasets: Mapping[str, GeoDataset]) -> None:
        """Every area must hold at least one patch."""
        for split, dataset in datasets.items():
            sampler = GeoEpisodeSampler(dataset, size=self.patch_size, length=1)
            try:
                next(iter(sampler))
            except ValueError:
                files = (
                    [str(f) for f in self.images.index.filepath]
                    if split == 'image'
                    else self._files_of(dataset)
                )
                raise RasterInputError(
                    f'the {split} area is smaller than one patch of {self.patch_size} '
                    f'px: {", ".join(files)}'
                ) from None

    def _compute_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-band mean and std of seeded random windows of the training images."""
        sampler = GeoEpisodeSampler(
            self._datasets['train'],
            size=self.patch_size,
            length=self.statistics_windows,
            seed=self.seed,
        )
        windows = sampler.target_windows(0)
        mean, std = _statistics(self.images, windows, self.nodata)
        return torch.tensor(mean), torch.tensor(std)

    def split_dataset(self, split: str) -> GeoDataset:
        """The GeoDataset of one split.

        Args:
            split: ``'train'``, ``'val'`` or ``'test'``.

        Returns:
            The images and masks of the split, as an IntersectionDataset.
        """
        self.open()
        return self._datasets[split]

    def setup(self, stage: str) -> None:
        """Open the rasters (once), then set up the episodes.

        Args:
            stage: ``'fit'``, ``'validate'``, ``'test'`` or ``'predict'``.
        """
        self.open()
        super().setup(stage)

    def split_files(self, split: str) -> list[str]:
        """The image files that a split's area overlaps.

        Args:
            split: ``'train'``, ``'val'`` or ``'test'``.

        Returns:
            The files, in index order.
        """
        return self._files_of(self.split_dataset(split))

    def _files_of(self, dataset: GeoDataset) -> list[str]:
        """The image files that a dataset's area overlaps."""
        area = dataset.index.geometry.union_all()
        images = [self.images]
        if isinstance(dataset, IntersectionDataset):
            images.append(dataset.datasets[0])  # type: ignore[arg-type]
        files: list[str] = []
        for ds in images:
            for path, geometry in zip(
                ds.index.filepath, ds.index.geometry, strict=True
            ):
                if str(path) not in files and geometry.intersection(area).area > 0:
                    files.append(str(path))
        return files

    @property
    def classes(self) -> Any:
        """Class names for plots, or None."""
        return self.class_names
