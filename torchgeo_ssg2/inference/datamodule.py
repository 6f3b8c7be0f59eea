"""A predict-only datamodule over the sliding windows of one or many rasters."""

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchgeo.datamodules import NonGeoDataModule

from ..normalization import Normalization
from ..samplers import SupportBank
from .dataset import RasterWindowDataset, SupportMode
from .inputs import expand_inputs
from .model import (
    is_task,
    model_in_channels,
    needs_supports,
    resolve_normalization,
    restored_checkpoint,
)
from .output import RasterMeta, gdal_threads, open_raster, read_input
from .sharding import RasterPart, ShardMode, check_shard_mode, plan_parts
from .windows import WindowGrid

__all__ = (
    'RasterBatches',
    'RasterPredictDataModule',
    'build_window_dataset',
    'check_input',
    'check_values',
)

#: Windows read up front to compare the input's values with the statistics.
SAMPLE_WINDOWS = 8
#: Distance from the training mean, in std, beyond which a pixel is unusual.
OUTLIER_STD = 4.0
#: Share of unusual pixels in a band above which the input is reported.
OUTLIER_FRACTION = 0.01


def check_input(
    model: nn.Module, input: str | os.PathLike[str] | RasterMeta
) -> RasterMeta:
    """Check that the input raster is readable and has the model's band count.

    Args:
        model: The task (or plain module) that will predict.
        input: Input raster, or its metadata already read
            (:meth:`RasterMeta.from_file`, which checks the file).

    Returns:
        The raster's metadata.

    Raises:
        ValueError: If the band count differs from the model's ``in_channels``.
    """
    meta = input if isinstance(input, RasterMeta) else RasterMeta.from_file(input)
    in_channels = model_in_channels(model)
    if in_channels is not None and in_channels != meta.count:
        msg = (
            f'input raster {meta.path} has {meta.count} bands but the model expects '
            f'in_channels={in_channels}'
        )
        raise ValueError(msg)
    return meta


def build_window_dataset(
    model: nn.Module,
    input: str | os.PathLike[str] | RasterMeta,
    *,
    checkpoint: Mapping[str, Any] | None = None,
    window: int = 256,
    overlap: int = 64,
    mean: float | Sequence[float] | Tensor | None = None,
    std: float | Sequence[float] | Tensor | None = None,
    supports: SupportMode = 'raster',
    support_bank: Any = None,
    sequence_length: int | None = None,
    support_seed: int = 0,
) -> RasterWindowDataset:
    """Check the input against the model and build its window dataset.

    Every check that can fail runs here, before any prediction: the input is
    readable and not truncated, its band count equals the model's
    ``in_channels``, normalisation statistics are given or recorded and match
    the bands, and the support source is usable. Inputs unlike the training
    data are reported by :func:`check_values`.

    Args:
        model: The task (or plain module) that will predict.
        input: Input raster, or its metadata already read (as :func:`check_input`).
        checkpoint: The raw checkpoint the task was loaded from, if any (for the
            datamodule's normalisation statistics).
        window: Window side in pixels.
        overlap: Pixels shared by neighbouring windows.
        mean: Explicit per-band mean (else the recorded statistics, see
            :func:`~torchgeo_ssg2.inference.model.resolve_normalization`).
        std: Explicit per-band std.
        supports: ``"raster"`` (windows of the input itself) or ``"bank"``;
            ignored for models without supports.
        support_bank: The bank for ``supports="bank"``.
        sequence_length: Supports per window; defaults to the task's
            ``sequence_length`` hyper-parameter.
        support_seed: Seed of the raster support selector.

    Returns:
        The dataset.

    Raises:
        ValueError: If the input does not fit the model.
    """
    meta = check_input(model, input)
    if is_task(model) and window % 32:
        msg = (
            f'window must be a multiple of 32 for {type(model).__name__}, got {window}'
        )
        raise ValueError(msg)
    if meta.crs is None:
        warnings.warn(
            f'input raster {meta.path} has no CRS: predicting in pixel space, '
            'the output has no CRS either',
            UserWarning,
            stacklevel=2,
        )
    normalization, source = resolve_normalization(model, checkpoint, mean, std)
    mode: SupportMode = supports if needs_supports(model) else 'none'
    if mode == 'raster' and sequence_length is None:
        hparams = getattr(model, 'hparams', None) or {}
        sequence_length = hparams.get('sequence_length') or getattr(
            model, 'sequence_length', None
        )
        if sequence_length is None:
            msg = 'pass sequence_length: the model does not record one'
            raise ValueError(msg)
    dataset = RasterWindowDataset(
        meta,
        window=window,
        overlap=overlap,
        mean=list(normalization.mean),
        std=list(normalization.std),
        supports=mode,
        sequence_length=sequence_length,
        support_bank=support_bank,
        support_seed=support_seed,
    )
    check_values(dataset, normalization, source)
    if mode == 'bank':
        # Fail now, not after hours, if the bank's chips do not fit the windows.
        dataset[0]
    return dataset


def check_values(
    dataset: RasterWindowDataset,
    normalization: Normalization,
    source: str,
    windows: int = SAMPLE_WINDOWS,
) -> None:
    """Warn when the input does not look like what the model was trained on.

    Two checks, both warnings (the prediction still runs):

    * the input's dtype differs from :attr:`Normalization.dtype` (e.g. uint16
      input to a model trained on uint8 images);
    * in a sample of ``windows`` windows spread over the raster (each moved
      onto the raster's block grid, so that it decodes the fewest blocks), more than
      :data:`OUTLIER_FRACTION` of the valid (finite, not nodata) pixels of some
      band lie more than
      :data:`OUTLIER_STD` standard deviations from the training mean.

    Args:
        dataset: The window dataset (its raster, grid and statistics).
        normalization: The statistics the input is normalised with.
        source: Where the statistics come from, for messages.
        windows: Windows sampled for the value range.
    """
    meta = dataset.meta
    dtypes = sorted(set(meta.dtypes))
    if normalization.dtype is not None and dtypes != [normalization.dtype]:
        warnings.warn(
            f'input raster {meta.path} is {"/".join(dtypes)} but the model was '
            f'trained on {normalization.dtype} input (statistics from the {source}): '
            'pass --mean and --std in the units of this raster if it is scaled '
            'differently',
            UserWarning,
            stacklevel=3,
        )
    grid = dataset.grid
    picks = np.unique(np.linspace(0, len(grid) - 1, windows).round().astype(int))
    mean = dataset.mean.reshape(-1, 1).astype(np.float64)
    std = dataset.std.reshape(-1, 1).astype(np.float64)
    # |value - mean| > OUTLIER_STD * std, as two comparisons (NaN is neither)
    below, above = mean - OUTLIER_STD * std, mean + OUTLIER_STD * std
    outside = np.zeros(meta.count)
    total = np.zeros(meta.count)
    low = np.full(meta.count, np.inf)
    high = np.full(meta.count, -np.inf)
    side = grid.window
    # masked pixels become NaN (in float64); other bands are compared as stored
    read_as = {'out_dtype': 'float64', 'masked': True} if meta.has_mask else {}
    with open_raster(meta.path, num_threads=gdal_threads()) as src:
        # Each sampled window is moved up and left onto the raster's block grid:
        # it then decodes the fewest blocks (one, where blocks are window-sized).
        block_h, block_w = src.block_shapes[0]
        corners = sorted(
            {
                (row - row % block_h, col - col % block_w)
                for row, col in (grid[int(index)] for index in picks)
            }
        )
        for row_off, col_off in corners:
            h = min(side, meta.height - row_off)
            w = min(side, meta.width - col_off)
            data = read_input(src, Window(col_off, row_off, w, h), **read_as)
            if np.ma.isMaskedArray(data):
                data = np.ma.filled(data, np.nan)
            data = data.reshape(meta.count, -1)
            outside += ((data < below) | (data > above)).sum(axis=1)
            if data.dtype.kind == 'f':
                total += np.isfinite(data).sum(axis=1)
                low = np.fmin(low, np.fmin.reduce(data, axis=1))
                high = np.fmax(high, np.fmax.reduce(data, axis=1))
            else:
                total += data.shape[1]
                low = np.fmin(low, data.min(axis=1))
                high = np.fmax(high, data.max(axis=1))
    fraction = outside / np.maximum(total, 1)
    bad = np.flatnonzero(fraction > OUTLIER_FRACTION)
    if len(bad):
        b = int(bad[0])
        warnings.warn(
            f'input raster {meta.path} does not match the training statistics '
            f'(from the {source}): in band {b + 1}, {fraction[b]:.0%} of the '
            f'sampled pixels lie beyond mean +- {OUTLIER_STD:g} std (values '
            f'{low[b]:g} to {high[b]:g}; mean {float(mean[b, 0]):g}, std '
            f'{float(std[b, 0]):g}); predictions may be meaningless: pass --mean '
            'and --std in the units of this raster',
            UserWarning,
            stacklevel=3,
        )


def _is_check_failure(err: Exception) -> bool:
    """Whether an error is a raster's failed check (skipped with ``keep_going``)."""
    return isinstance(err, ValueError | OSError)


def _raise_unexpected(
    results: Mapping[int, Any], raised: Mapping[int, Exception]
) -> None:
    """Raise the first error of any rank that is not a failed check.

    Every rank raises it (this rank's own error as it was, another rank's as a
    ``RuntimeError`` naming it), so no rank waits for the others.

    Args:
        results: Every rank's results, by raster index.
        raised: The errors this rank raised itself, by raster index.

    Raises:
        Exception: The first unexpected error, by raster index.
    """
    for index in sorted(results):
        value = results[index]
        if isinstance(value, Exception) and not _is_check_failure(value):
            raise raised.get(index, value)


class RasterBatches(IterableDataset[dict[str, Tensor]]):
    """Batches of windows of raster parts, part after part, each row-major.

    A part is a whole raster or a strip of its window rows
    (:class:`~torchgeo_ssg2.inference.sharding.RasterPart`); its batches are
    those of a single-process run of its raster. A batch never mixes parts, so
    the writer finishes one part's files before the next part's first batch. It
    is iterable (the DataLoader's ``batch_size`` is None): the order is fixed
    here, Lightning adds no sampler, and with ``num_workers`` workers, worker
    ``w`` reads batches ``w``, ``w + num_workers``, ..., which the DataLoader
    hands out in their order.

    Args:
        datasets: Window dataset of each raster, by raster index.
        batch_size: Windows per batch.
        parts: The parts to predict (default: every raster whole).
    """

    def __init__(
        self,
        datasets: Mapping[int, RasterWindowDataset],
        batch_size: int,
        parts: Sequence[RasterPart] | None = None,
    ) -> None:
        if batch_size < 1:
            msg = f'batch_size must be >= 1, got {batch_size}'
            raise ValueError(msg)
        self.datasets = dict(datasets)
        self.batch_size = batch_size
        if parts is None:
            parts = [
                RasterPart(i, 0, 1, (0, d.meta.height), (0, len(d)), 0)
                for i, d in sorted(self.datasets.items())
            ]
        self.parts = list(parts)
        self.batches = [
            (p, start, min(start + batch_size, part.windows[1]))
            for p, part in enumerate(self.parts)
            for start in range(*part.windows, batch_size)
        ]

    def __len__(self) -> int:
        """Number of batches."""
        return len(self.batches)

    @property
    def windows(self) -> int:
        """Number of windows over all parts."""
        return sum(len(part) for part in self.parts)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        """Read the batches (of this worker).

        Yields:
            :meth:`RasterWindowDataset.batch` of the windows plus ``raster_index`` and
            ``part_index`` (B, the index into :attr:`parts`).
        """
        info = get_worker_info()
        step, first = (1, 0) if info is None else (info.num_workers, info.id)
        for p, start, stop in self.batches[first::step]:
            index = self.parts[p].raster
            dataset = self.datasets[index]
            batch = dataset.batch(range(start, stop))
            batch['raster_index'] = torch.full((stop - start,), index)
            batch['part_index'] = torch.full((stop - start,), p)
            yield batch

    def close(self) -> None:
        """Close the raster handles of this process."""
        for dataset in self.datasets.values():
            dataset.close()


class RasterPredictDataModule(NonGeoDataModule):
    """Predict the sliding windows of one or many rasters with ``Trainer.predict``.

    ``input`` is a raster, a folder, a glob pattern, a text file listing rasters,
    or a list of these (:func:`~torchgeo_ssg2.inference.inputs.expand_inputs`).
    Every raster is checked against the task (readable, not truncated, band
    count, normalisation statistics, supports) before any window is predicted.
    A raster that fails stops the run with its error, or with ``keep_going`` is
    reported (a warning, and :attr:`failed`) and left out.

    Under DDP the rasters, or strips of the window rows of large ones, are
    shared out between ranks (``shard``, see
    :mod:`~torchgeo_ssg2.inference.sharding`); each output is written by one
    process, and its bytes do not depend on the number of ranks. Normalisation happens in the dataset (from ``mean``/``std``, else the
    statistics recorded in the checkpoint or the task, as
    :func:`~torchgeo_ssg2.inference.model.resolve_normalization` finds them), so
    this datamodule applies no batch augmentation. Pair it with
    :class:`~torchgeo_ssg2.inference.RasterPredictionWriter`.

    Args:
        input: What to predict (see above).
        window: Window side in pixels.
        overlap: Pixels shared by neighbouring windows.
        batch_size: Windows per batch.
        num_workers: DataLoader worker processes reading windows (0: the main
            process reads).
        mean: Per-band mean (None: the recorded statistics).
        std: Per-band std (None: the recorded statistics).
        supports: ``"raster"`` or ``"bank"``.
        support_bank: The bank for ``supports="bank"``.
        sequence_length: Supports per window (None: the task's).
        support_seed: Seed of the raster support selector.
        keep_going: Leave out rasters that fail their checks instead of stopping.
        shard: ``"auto"`` (cut a raster into strips when it has more windows
            than a rank's fair share), ``"rasters"`` (whole rasters only) or
            ``"strips"`` (every raster into one strip per rank).

    Attributes:
        inputs: Every raster ``input`` gives, those that fail their checks
            included, after :meth:`setup`; the writer names the outputs from
            it and lets no output be any of them, whichever rasters fail.
        rasters: The rasters, after :meth:`setup`.
        failed: Rasters left out with ``keep_going``, and why.
        excluded: Indices into :attr:`rasters` not to predict (set by the
            writer for outputs that are already complete).
        checkpoint: The checkpoint the task was loaded from, when it was not
            restored by the trainer (``ckpt_path``); its statistics are used.
        plan: ``(rank, part)`` of every part of every rank, after
            :meth:`predict_dataloader`.
    """

    def __init__(
        self,
        input: str | list[str],
        window: int = 256,
        overlap: int = 64,
        batch_size: int = 4,
        num_workers: int = 0,
        mean: list[float] | float | None = None,
        std: list[float] | float | None = None,
        supports: SupportMode = 'raster',
        support_bank: SupportBank | None = None,
        sequence_length: int | None = None,
        support_seed: int = 0,
        keep_going: bool = False,
        shard: ShardMode = 'auto',
    ) -> None:
        check_shard_mode(shard)
        super().__init__(RasterWindowDataset, batch_size, num_workers)
        self.shard = shard
        self.input = input
        self.window = window
        self.overlap = overlap
        self.mean_arg = mean
        self.std_arg = std
        self.supports = supports
        self.support_bank = support_bank
        self.sequence_length = sequence_length
        self.support_seed = support_seed
        self.keep_going = keep_going
        self.inputs: list[Path] = []
        self.rasters: list[Path] = []
        self.failed: dict[Path, str] = {}
        self.excluded: set[int] = set()
        self.checkpoint: Mapping[str, Any] | None = None
        self.datasets: dict[int, RasterWindowDataset] = {}
        self.plan: list[tuple[int, RasterPart]] = []
        self._metas: list[RasterMeta] = []

    def _fail(self, path: Path, err: Exception) -> None:
        """Report a raster that failed its checks, or stop.

        Args:
            path: The raster.
            err: Its error.

        Raises:
            Exception: ``err`` itself unless ``keep_going``.
        """
        if not self.keep_going:
            raise err
        self.failed[path] = str(err)
        warnings.warn(f'skipped {path}: {err}', UserWarning, stacklevel=3)

    def setup(self, stage: str) -> None:
        """Find the rasters and check each one's file and band count.

        Under DDP each rank checks a share of the rasters and the ranks exchange
        the results, so every rank stops with the same error, or leaves out the
        same rasters, having opened only its share.

        Args:
            stage: Only ``"predict"`` is supported.

        Raises:
            ValueError: For any other stage.
        """
        if stage != 'predict':
            msg = f'{type(self).__name__} only predicts (got stage {stage!r})'
            raise ValueError(msg)
        model = self._model()
        paths = self.inputs = expand_inputs(self.input)
        world_size, rank = self._world()
        found: dict[int, RasterMeta | Exception] = {}
        raised: dict[int, Exception] = {}
        for index in range(rank, len(paths), world_size):
            try:
                found[index] = check_input(model, paths[index])
            except Exception as err:
                found[index] = raised[index] = err
        found = self._gather(found)
        _raise_unexpected(found, raised)
        self.rasters, self.failed, self._metas = [], {}, []
        for index, path in enumerate(paths):
            result = found[index]
            if isinstance(result, Exception):
                self._fail(path, result)
                continue
            self.rasters.append(path)
            self._metas.append(result)

    def _model(self) -> nn.Module:
        """The task being run, or an identity module outside a trainer."""
        if self.trainer is not None and self.trainer.lightning_module is not None:
            return self.trainer.lightning_module
        return nn.Identity()

    def _world(self) -> tuple[int, int]:
        """The number of ranks and this rank (1 and 0 outside a trainer)."""
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def _gather(self, results: Mapping[int, Any]) -> dict[int, Any]:
        """The results of every rank, merged (the same on every rank).

        Args:
            results: This rank's results, by raster index.

        Returns:
            Every rank's results, by raster index.
        """
        world_size, _ = self._world()
        if world_size == 1 or not torch.distributed.is_initialized():
            return dict(results)
        sent = {
            index: RuntimeError(f'{type(value).__name__}: {value}')
            if isinstance(value, Exception) and not _is_check_failure(value)
            else value
            for index, value in results.items()
        }
        gathered: list[Any] = [None] * world_size
        torch.distributed.all_gather_object(gathered, sent)
        return {k: v for part in gathered for k, v in part.items()}

    def _build(
        self, index: int, checkpoint: Mapping[str, Any] | None
    ) -> RasterWindowDataset:
        """The window dataset of raster ``index`` (:func:`build_window_dataset`).

        Args:
            index: Index into :attr:`rasters`.
            checkpoint: The checkpoint the task was loaded from, if any.

        Returns:
            The dataset.
        """
        return build_window_dataset(
            self._model(),
            self._metas[index],
            checkpoint=checkpoint,
            window=self.window,
            overlap=self.overlap,
            mean=self.mean_arg,
            std=self.std_arg,
            supports=self.supports,
            support_bank=self.support_bank,
            sequence_length=self.sequence_length,
            support_seed=self.support_seed,
        )

    def predict_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """This rank's rasters, batch by batch.

        The rasters are shared out between ranks from their sizes
        (:func:`~torchgeo_ssg2.inference.sharding.plan_parts`); each rank builds
        (and checks) the window datasets of its parts, and the ranks exchange
        the failures before any window is predicted, so every rank stops, or
        leaves out the same rasters and shares out the others again (building
        and exchanging again, until a round in which no rank fails). The
        datasets are built here rather than in :meth:`setup` because the trainer
        knows the checkpoint path (whose statistics may give the normalisation)
        only once it has restored it.

        Returns:
            The data loader (``batch_size=None``: :class:`RasterBatches` batches).
        """
        checkpoint = self.checkpoint
        if checkpoint is None and self.trainer is not None:
            checkpoint = restored_checkpoint(self.trainer, self._model())
        world_size, rank = self._world()
        grids = {
            i: WindowGrid(meta.height, meta.width, self.window, self.overlap)
            for i, meta in enumerate(self._metas)
            if i not in self.excluded
        }
        built: dict[int, RasterWindowDataset] = {}
        checked: set[int] = set()
        plan = plan_parts(grids, self.batch_size, world_size, self.shard)
        while True:
            raised: dict[int, Exception] = {}
            for index in sorted({p.raster for r, p in plan if r == rank} - set(built)):
                with warnings.catch_warnings():
                    if index in checked:
                        # built by another rank before: no second warning
                        warnings.simplefilter('ignore')
                    try:
                        built[index] = self._build(index, checkpoint)
                    except Exception as err:
                        raised[index] = err
            errors = self._gather(raised)
            _raise_unexpected(errors, raised)
            if not errors:
                break
            checked |= {part.raster for _, part in plan}
            for index in sorted(errors):
                self._fail(self.rasters[index], errors[index])
                del grids[index]
                if index in built:  # another rank failed on a strip of it
                    built.pop(index).close()
            plan = plan_parts(grids, self.batch_size, world_size, self.shard)
        self.plan = plan
        parts = [part for r, part in self.plan if r == rank]
        self.datasets = {p.raster: built[p.raster] for p in parts}
        for index in set(built) - set(self.datasets):
            built[index].close()
        self.predict_dataset = RasterBatches(self.datasets, self.batch_size, parts)
        return DataLoader(
            self.predict_dataset,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=False,
        )

    def teardown(self, stage: str) -> None:
        """Close the raster handles after prediction.

        Args:
            stage: The finished stage.
        """
        if isinstance(self.predict_dataset, RasterBatches):
            self.predict_dataset.close()

    def on_after_batch_transfer(
        self, batch: dict[str, Tensor], dataloader_idx: int
    ) -> dict[str, Tensor]:
        """Leave batches as they are (the dataset normalised them).

        Args:
            batch: The batch.
            dataloader_idx: Index of the dataloader.

        Returns:
            The same batch.
        """
        return batch
