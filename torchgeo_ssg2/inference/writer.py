"""From batches of window predictions to GeoTIFFs: the assembler and its callback."""

import os
import signal
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor
from tqdm.auto import tqdm

from .blending import StripBlender
from .inputs import outputs_for
from .mosaic import write_mosaics
from .output import (
    BlockBands,
    GeoTIFFSink,
    ProtectedFiles,
    RasterMeta,
    check_output_free,
    class_labels,
    gdal_cache_limit,
    sweep_staging,
)
from .output import output_paths as _output_paths
from .sharding import RasterPart, StripFile, merge_strips, strip_path
from .windows import WindowGrid, blend_weight

__all__ = ('PredictionAssembler', 'RasterPredictionWriter')


def resolve_labels(
    num_classes: int,
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    recorded_names: Sequence[str] | None = None,
    recorded_palette: Sequence[Sequence[int]] | None = None,
) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """The class names and colours of an output, checked.

    Names and colours given explicitly win; else those recorded with the
    checkpoint, where there are enough of them; else the defaults of
    :func:`~torchgeo_ssg2.inference.output.class_labels`.

    Args:
        num_classes: Probability channels K (1: a binary map).
        class_names: Names given explicitly.
        palette: RGB colours given explicitly.
        recorded_names: Names recorded with the checkpoint, used when exactly
            ``max(K, 2)``.
        recorded_palette: Colours recorded with the checkpoint, used when at
            least ``max(K, 2)``.

    Returns:
        ``(names, colours)`` of the ``max(K, 2)`` class indices.

    Raises:
        ValueError: If the explicit names or colours do not fit the classes.
    """
    n = max(num_classes, 2)
    if class_names is None and recorded_names is not None and len(recorded_names) == n:
        class_names = recorded_names
    if palette is None and recorded_palette is not None and len(recorded_palette) >= n:
        palette = recorded_palette
    return class_labels(num_classes, class_names, palette)


class PredictionAssembler:
    """Blend window predictions of one raster and write them, block by block.

    :class:`RasterPredictionWriter` feeds it from Lightning's predict loop. The
    output files are opened (as staging files) when the first batch reveals the
    number of classes. For a strip of the raster (``part``), the blended rows
    go to the strip's staging file
    (:class:`~torchgeo_ssg2.inference.sharding.StripFile`) instead, for the
    owner rank to merge.

    Args:
        meta: The input raster.
        grid: The window layout (windows must arrive in its row-major order).
        output: Class-index GeoTIFF path; sidecars as in
            :mod:`torchgeo_ssg2.inference.output`.
        probabilities: Whether to write per-class probabilities.
        uncertainty: Whether to write the SSG2 uncertainty map.
        overwrite: Whether existing outputs may be replaced.
        blend_floor: Smallest blending weight (see :func:`blend_weight`).
        block_size: Output tile side, also the rows flushed at a time.
        protected: Inputs besides the raster (checkpoint, support images) that no
            output may replace, by role.
        class_names: Class names for the band descriptions and metadata.
        palette: RGB colours of the classes.
        cog: Write Cloud-Optimized GeoTIFFs with overviews.
        recorded_names: Names recorded with the checkpoint, used when
            ``class_names`` is None and they fit the number of classes.
        recorded_palette: Colours recorded with the checkpoint, used likewise.
        part: The windows and rows predicted (default: the whole raster).
        strip_file: Staging file of a strip ``part``.
    """

    def __init__(
        self,
        meta: RasterMeta,
        grid: WindowGrid,
        output: str | os.PathLike[str],
        probabilities: bool = False,
        uncertainty: bool = False,
        overwrite: bool = False,
        blend_floor: float = 0.01,
        block_size: int = 256,
        protected: Mapping[str, Path] | None = None,
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        cog: bool = False,
        recorded_names: Sequence[str] | None = None,
        recorded_palette: Sequence[Sequence[int]] | None = None,
        part: RasterPart | None = None,
        strip_file: Path | None = None,
    ) -> None:
        if part is None:
            part = RasterPart(0, 0, 1, (0, meta.height), (0, len(grid)), 0)
        if not part.whole and strip_file is None:
            msg = 'a strip of a raster needs its strip_file'
            raise ValueError(msg)
        self.part = part
        self.strip_file = strip_file
        self.meta = meta
        self.recorded = (recorded_names, recorded_palette)
        self.class_names = class_names
        self.palette = palette
        self.cog = cog
        self.grid = grid
        self.output = Path(output)
        self.probabilities = probabilities
        self.uncertainty = uncertainty
        self.overwrite = overwrite
        self.weight = blend_weight(grid.window, blend_floor)
        self.block_size = block_size
        self.sink: GeoTIFFSink | StripFile | None = None
        self.num_classes: int | None = None
        self.blender: StripBlender | None = None
        self.windows_done = 0
        self.protected = ProtectedFiles.of(protected).including(
            {'input raster': meta.path}
        )
        check_output_free(self.output_paths, overwrite, self.protected)

    @property
    def output_paths(self) -> dict[str, Path]:
        """Files this assembler writes."""
        return _output_paths(self.output, self.probabilities, self.uncertainty)

    def open_sink(self, num_classes: int, sweep: bool = True) -> GeoTIFFSink:
        """Open the output files (as staging files).

        Args:
            num_classes: Probability channels K.
            sweep: Remove staging files of the output left by processes that no
                longer run (see :class:`~torchgeo_ssg2.inference.GeoTIFFSink`).

        Returns:
            The sink.
        """
        names, palette = resolve_labels(
            num_classes, self.class_names, self.palette, *self.recorded
        )
        return GeoTIFFSink(
            self.meta,
            self.output,
            num_classes,
            probabilities=self.probabilities,
            uncertainty=self.uncertainty,
            overwrite=self.overwrite,
            block_size=self.block_size,
            protected=self.protected,
            class_names=names,
            palette=palette,
            cog=self.cog,
            sweep=sweep,
        )

    def _start(self, num_classes: int) -> None:
        """Open the sink and the blender once the number of classes is known.

        Args:
            num_classes: Probability channels K.
        """
        self.num_classes = num_classes
        if self.part.whole:
            self.sink = self.open_sink(num_classes)
        else:
            assert self.strip_file is not None
            # the owner labels the merged file: the same check, before this
            # strip is predicted rather than after every strip is
            resolve_labels(num_classes, self.class_names, self.palette, *self.recorded)
            self.sink = StripFile(
                self.strip_file,
                self.part.rows,
                BlockBands(self.meta, num_classes, tuple(self.output_paths)),
                self.protected,
            )
        self.blender = StripBlender(
            self.meta.height,
            self.meta.width,
            self.grid.window,
            num_classes,
            self.weight,
            self.sink,
            block_rows=self.block_size,
            uncertainty=self.uncertainty,
            rows=self.part.rows,
            valid=self.meta.has_nodata,
        )

    def add_batch(self, prediction: dict[str, Tensor], batch: dict[str, Any]) -> None:
        """Blend one batch of window predictions.

        Args:
            prediction: ``probabilities`` BxKxHxW and, when the uncertainty is
                written, ``uncertainty`` BxHxW.
            batch: The batch the prediction was made from, with ``row_off`` and
                ``col_off`` (B) of each window, and ``valid`` (BxHxW) for an
                input that may hold nodata.

        Raises:
            KeyError: If a required key is missing.
        """
        probs = prediction['probabilities']
        unc = prediction.get('uncertainty') if self.uncertainty else None
        if self.uncertainty and unc is None:
            msg = (
                'uncertainty output requested but the model returned no "uncertainty" '
                "(the package's tasks give one; a module of your own must return it)"
            )
            raise KeyError(msg)
        if 'row_off' not in batch or 'col_off' not in batch:
            msg = (
                'batches must carry "row_off" and "col_off"; predict with '
                'torchgeo_ssg2.inference.RasterPredictDataModule'
            )
            raise KeyError(msg)
        valid = batch.get('valid')
        if self.meta.has_nodata and valid is None:
            msg = (
                f'input raster {self.meta.path} may hold nodata: its batches must '
                'carry "valid"; predict with '
                'torchgeo_ssg2.inference.RasterPredictDataModule'
            )
            raise KeyError(msg)
        if self.blender is None:
            self._start(int(probs.shape[1]))
        assert self.blender is not None
        rows = batch['row_off'].tolist()
        self.blender.add_batch(rows, batch['col_off'].tolist(), probs, unc, valid)
        self.windows_done += len(rows)

    def finish(self) -> dict[str, Path]:
        """Flush the last rows and move the complete files into place.

        Returns:
            The written files (``{"strip": file}`` for a strip).

        Raises:
            RuntimeError: If not every window was predicted.
        """
        if self.blender is None or self.sink is None:
            msg = 'no window was predicted; nothing to write'
            raise RuntimeError(msg)
        if self.windows_done != len(self.part):
            msg = f'only {self.windows_done} of {len(self.part)} windows were predicted'
            raise RuntimeError(msg)
        self.blender.finish()
        committed = self.sink.commit()
        paths = committed if isinstance(committed, dict) else {'strip': committed}
        self.blender = None
        self.sink = None
        return paths

    def abort(self) -> None:
        """Drop the partial outputs (no file is left at the output paths)."""
        if self.sink is not None:
            self.sink.abort()
        self.sink = None
        self.blender = None


def _protected_inputs(trainer: pl.Trainer) -> ProtectedFiles:
    """The inputs of a ``Trainer.predict`` run that no output may replace.

    Args:
        trainer: The trainer.

    Returns:
        The input rasters (those left out with ``keep_going`` included), the
        checkpoint and the support-bank images, by role, each looked up once.
    """
    protected: dict[str, Path] = {}
    ckpt_path = getattr(trainer, 'ckpt_path', None)
    if ckpt_path:
        protected['checkpoint'] = Path(ckpt_path)
    datamodule = trainer.datamodule
    for i, path in enumerate(datamodule.inputs):
        protected['input raster' if i == 0 else f'input raster #{i}'] = Path(path)
    bank = getattr(datamodule, 'support_bank', None)
    if hasattr(bank, 'source_files'):
        for i, path in enumerate(bank.source_files()):
            protected[f'support-bank image #{i}'] = path
    return ProtectedFiles(protected)


class RasterPredictionWriter(BasePredictionWriter):
    """Lightning callback writing ``Trainer.predict`` output as GeoTIFFs.

    Use it with :class:`~torchgeo_ssg2.inference.RasterPredictDataModule`, whose
    batches hold windows of one raster in row-major order; each batch's
    ``probabilities`` (and ``uncertainty``) are blended as they come and finished
    rows are written, so memory stays flat. Predictions are not kept by the
    trainer (``return_predictions`` is switched off).

    One raster goes to ``output``; any number go to ``output_dir``
    (:func:`~torchgeo_ssg2.inference.inputs.outputs_for`). Every output is
    checked before any work: none may be an input, and an existing one is refused
    (``output``) or, in ``output_dir``, counts as done and its raster is skipped,
    so a rerun resumes; ``overwrite`` predicts everything again. Under DDP each
    rank writes the files of its whole rasters and stages the rows of its strips
    (:mod:`~torchgeo_ssg2.inference.sharding`); after a barrier, the owner rank
    of each strip-sharded raster writes its files from the strips; after
    another, rank 0 writes the ``vrt`` mosaics
    (:func:`~torchgeo_ssg2.inference.mosaic.write_mosaics`).

    Args:
        output: Class-index GeoTIFF path of a single raster (sidecars
            ``*_probabilities.tif`` and ``*_uncertainty.tif`` on request).
        output_dir: Output folder (created if missing), for any number of rasters.
        overwrite: Whether existing outputs are replaced.
        probabilities: Whether to write per-class probabilities.
        uncertainty: Whether to write the SSG2 uncertainty map.
        blend_floor: Smallest blending weight.
        block_size: Output tile side.
        cog: Write Cloud-Optimized GeoTIFFs with overviews.
        class_names: Class names (default: those recorded with the checkpoint's
            datamodule, see
            :func:`~torchgeo_ssg2.inference.model.class_labels_from_checkpoint`,
            else ``class_0``, ``class_1``, ...).
        palette: RGB colour of each class (default: the recorded palette, else
            :data:`~torchgeo_ssg2.inference.output.DEFAULT_PALETTE`).
        vrt: Write GDAL VRT mosaics of the outputs in ``output_dir``.
        progress: Show progress per raster and in total, with the remaining time.

    Attributes:
        written: Files of the single raster by role (``output``), or of the last
            raster written.
        results: Files of every raster, written or found complete, by input.
        skipped: Inputs whose outputs were already complete.
        mosaics: The VRT files written.
    """

    def __init__(
        self,
        output: str | None = None,
        output_dir: str | None = None,
        overwrite: bool = False,
        probabilities: bool = False,
        uncertainty: bool = False,
        blend_floor: float = 0.01,
        block_size: int = 256,
        cog: bool = False,
        class_names: list[str] | None = None,
        palette: list[list[int]] | None = None,
        vrt: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__(write_interval='batch')
        if vrt and output_dir is None:
            msg = 'vrt mosaics need an output folder (output_dir / --output-dir)'
            raise ValueError(msg)
        self.output = output
        self.output_dir = output_dir
        self.overwrite = overwrite
        self.probabilities = probabilities
        self.uncertainty = uncertainty
        self.blend_floor = blend_floor
        self.block_size = block_size
        self.cog = cog
        self.class_names = class_names
        self.palette = palette
        self.vrt = vrt
        self.progress = progress
        self.assembler: PredictionAssembler | None = None
        self.written: dict[str, Path] = {}
        self.results: dict[Path, dict[str, Path]] = {}
        self.skipped: list[Path] = []
        self.mosaics: list[Path] = []
        self.outputs: list[Path] = []
        self._current: int | None = None
        self._env: Any = None
        self._bar: Any = None
        self._datasets: Mapping[int, Any] = {}
        self._parts: list[RasterPart] = []
        self._done: set[int] = set()
        self._num_classes: dict[int, int] = {}
        self._own_strips: list[Path] = []
        self._pids: list[int] = []
        self._protected = ProtectedFiles()
        self._warnings: Any = None
        self._failed = False
        self._labels: tuple[Any, Any] = (None, None)
        self._rasters_done = 0
        self._prefix = ''
        self._raster_start = 0.0

    def teardown(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> None:
        """Complete a successful run on every rank, restore the warning filters.

        Args:
            trainer: The trainer.
            pl_module: The task.
            stage: The finished stage.
        """
        try:
            if stage == 'predict' and not self._failed and self.outputs:
                self._complete(trainer)
        finally:
            self._restore_warnings()

    def _restore_warnings(self) -> None:
        """Restore the warning filters of :meth:`setup`."""
        if self._warnings is not None:
            self._warnings.__exit__(None, None, None)
            self._warnings = None

    def _paths(self, output: Path) -> dict[str, Path]:
        """The files of one raster's prediction."""
        return _output_paths(output, self.probabilities, self.uncertainty)

    def setup(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> None:
        """Plan the outputs and refuse unusable ones before any work starts.

        Args:
            trainer: The trainer.
            pl_module: The task.
            stage: Only ``"predict"`` is acted upon.

        Raises:
            TypeError: Without a :class:`RasterPredictDataModule`.
            ValueError: If an output would replace an input, or two inputs
                would share an output file.
            FileExistsError: If ``output`` exists (or an output set is
                incomplete in ``output_dir``) and ``overwrite`` is False.
        """
        if stage != 'predict':
            return
        self._failed = False
        self.results, self.mosaics, self.written = {}, [], {}
        # The datamodule's batches are iterable and pre-batched on purpose (the
        # order is fixed, no sampler is added): Lightning's hints about both do
        # not apply. The filters end in teardown.
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        for message in (
            '.*IterableDataset.*__len__.*',
            ".*Couldn't infer the batch indices.*",
            '.*does not have many workers.*',
            '.*Total length of .DataLoader. across ranks is zero.*',
        ):
            warnings.filterwarnings('ignore', message=message)
        datamodule = getattr(trainer, 'datamodule', None)
        rasters = getattr(datamodule, 'rasters', None)
        if rasters is None:
            msg = (
                'RasterPredictionWriter needs the rasters of a '
                'torchgeo_ssg2.inference.RasterPredictDataModule'
            )
            raise TypeError(msg)
        # Named from every input, so that a name does not depend on which
        # rasters fail their checks.
        inputs = datamodule.inputs
        named = outputs_for(
            inputs,
            self.output,
            self.output_dir,
            probabilities=self.probabilities,
            uncertainty=self.uncertainty,
        )
        output_of = dict(zip(inputs, named, strict=True))
        self.outputs = [output_of[path] for path in rasters]
        if self.output_dir is not None:
            Path(self.output_dir).mkdir(parents=True, exist_ok=True)
        self._protected = _protected_inputs(trainer)
        excluded = set()
        for index, output in enumerate(self.outputs):
            paths = self._paths(output)
            check_output_free(paths, True, self._protected)
            present = [p for p in paths.values() if p.exists()]
            if self.overwrite or not present:
                continue
            if self.output_dir is None or len(present) < len(paths):
                check_output_free(paths, False, self._protected)
            excluded.add(index)
        if trainer.is_global_zero:
            # Before any rank stages a strip: the sinks that merge strips do not
            # sweep, and a pid of another node means nothing here.
            sweep_staging(
                [out for i, out in enumerate(self.outputs) if i not in excluded],
                self._protected,
            )
        pid = torch.tensor([os.getpid()], device=trainer.strategy.root_device)
        self._pids = trainer.strategy.all_gather(pid).reshape(-1).tolist()
        excluded = trainer.strategy.broadcast(excluded, src=0)
        datamodule.excluded = set(excluded)
        self.skipped = [rasters[i] for i in sorted(excluded)]
        self.results = {rasters[i]: self._paths(self.outputs[i]) for i in excluded}

    def on_predict_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """Prepare writing this rank's rasters.

        Args:
            trainer: The trainer.
            pl_module: The task.

        Raises:
            TypeError: If the predict data are not a datamodule's raster batches.
        """
        from .datamodule import RasterBatches

        dataloaders = trainer.predict_dataloaders
        loaders = dataloaders if isinstance(dataloaders, Sequence) else [dataloaders]
        dataset = getattr(loaders[0], 'dataset', None) if len(loaders) == 1 else None
        if not isinstance(dataset, RasterBatches):
            msg = (
                'RasterPredictionWriter needs one predict dataloader over '
                'RasterBatches (use torchgeo_ssg2.inference.RasterPredictDataModule)'
            )
            raise TypeError(msg)
        self._datasets = dataset.datasets
        self._parts = dataset.parts
        self._done = set()
        self._num_classes = {}
        self._own_strips = []
        self._labels = self._class_labels(trainer)
        self._check_labels(pl_module)
        trainer.predict_loop.return_predictions = False
        self._env = gdal_cache_limit(
            rasters=[dataset.meta for dataset in self._datasets.values()]
        )
        self._env.__enter__()
        if self.progress:
            self._prefix = (
                f'rank {trainer.global_rank}: ' if trainer.world_size > 1 else ''
            )
            self._bar = tqdm(
                total=dataset.windows,
                unit='window',
                desc=f'{self._prefix}predict',
                position=trainer.global_rank,
                file=sys.stderr,
                dynamic_ncols=True,
            )
            self._rasters_done = 0
            self._raster_start = time.perf_counter()

    def _class_labels(
        self, trainer: pl.Trainer
    ) -> tuple[Sequence[str] | None, Sequence[Sequence[int]] | None]:
        """The class names and palette recorded with the checkpoint, if any.

        Args:
            trainer: The trainer (its datamodule's checkpoint, or ``ckpt_path``).

        Returns:
            ``(names, palette)``
            (:func:`~torchgeo_ssg2.inference.model.class_labels_from_checkpoint`).
        """
        if self.class_names is not None and self.palette is not None:
            return None, None
        from .model import class_labels_from_checkpoint, restored_checkpoint

        checkpoint = restored_checkpoint(trainer, trainer.lightning_module)
        return class_labels_from_checkpoint(checkpoint)

    def _check_labels(self, pl_module: pl.LightningModule) -> None:
        """Refuse class names or colours that do not fit, before any batch.

        A task of this package declares its classes (``num_classes``), so the
        names and colours are checked against them here. For another module the
        number of classes is known at its first batch, where the assembler
        checks them; the colours given are checked here all the same.

        Args:
            pl_module: The module predicting.

        Raises:
            ValueError: If the names or colours given do not fit.
        """
        from .model import is_task

        hparams = getattr(pl_module, 'hparams', None) or {}
        num_classes = hparams.get('num_classes') if is_task(pl_module) else None
        if isinstance(num_classes, int):
            resolve_labels(num_classes, self.class_names, self.palette, *self._labels)
        elif self.palette is not None:
            class_labels(len(self.palette), None, self.palette)

    def _assembler(self, index: int, part: RasterPart | None) -> PredictionAssembler:
        """The assembler of one raster, or of one strip of it.

        Args:
            index: Index of the raster in the datamodule's ``rasters``.
            part: The strip (None: the whole raster).

        Returns:
            The assembler.
        """
        dataset = self._datasets[index]
        strip_file = None
        if part is not None and not part.whole:
            strip_file = strip_path(self.outputs[index], part.strip)
        return PredictionAssembler(
            dataset.meta,
            dataset.grid,
            self.outputs[index],
            probabilities=self.probabilities,
            uncertainty=self.uncertainty,
            overwrite=self.overwrite,
            blend_floor=self.blend_floor,
            block_size=self.block_size,
            protected=self._protected,
            class_names=self.class_names,
            palette=self.palette,
            cog=self.cog,
            recorded_names=self._labels[0],
            recorded_palette=self._labels[1],
            part=part,
            strip_file=strip_file,
        )

    def _start(self, p: int) -> None:
        """Open the assembler of one part.

        Args:
            p: Index of the part in this rank's parts.
        """
        part = self._parts[p]
        self.assembler = self._assembler(part.raster, part)
        if self.assembler.strip_file is not None:
            self._own_strips.append(self.assembler.strip_file)
        self._current = p
        if self._bar is not None:
            self._bar.set_postfix_str(
                f'{self._part_name(p)} 0/{len(part)}', refresh=False
            )
            self._raster_start = time.perf_counter()

    def _part_name(self, p: int) -> str:
        """Progress label of one part: its number on this rank, strip and raster."""
        part = self._parts[p]
        strip = '' if part.whole else f'strip {part.strip + 1}/{part.strips} of '
        name = self._datasets[part.raster].meta.path.name
        return f'raster {self._rasters_done + 1}/{len(self._parts)} {strip}{name}'

    def _finish(self) -> None:
        """Commit the current part's files (a strip's staging file)."""
        if self.assembler is None or self._current is None:
            return
        part = self._parts[self._current]
        dataset = self._datasets[part.raster]
        written = self.assembler.finish()
        if part.whole:
            self.written = written
            self.results[dataset.meta.path] = written
        else:
            assert self.assembler.num_classes is not None
            self._num_classes[part.raster] = self.assembler.num_classes
        self._done.add(self._current)
        self.assembler = None
        self._current = None
        if self._bar is not None:
            self._rasters_done += 1
            seconds = time.perf_counter() - self._raster_start
            where = written['classes'] if part.whole else 'staged'
            strip = '' if part.whole else f'strip {part.strip + 1}/{part.strips} of '
            self._bar.write(
                f'{self._prefix}[{self._rasters_done}/{len(self._parts)}] {strip}'
                f'{dataset.meta.path} -> {where} ({seconds:.1f} s)'
            )

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Blend one batch into its part's output.

        Args:
            trainer: The trainer.
            pl_module: The task.
            prediction: ``predict_step``'s dict.
            batch_indices: Indices of the batch's samples.
            batch: The batch.
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.
        """
        if getattr(trainer, 'received_sigterm', False):
            # Lightning's predict loop notes SIGTERM but runs on: stop here (exit
            # status 143); on_exception removes the partial outputs.
            print('prediction stopped by SIGTERM; no output written', file=sys.stderr)
            raise SIGTERMException(128 + signal.SIGTERM)
        p = int(batch['part_index'][0])
        if p != self._current:
            self._finish()
            self._start(p)
        assert self.assembler is not None
        self.assembler.add_batch(prediction, batch)
        if self._bar is not None:
            self._bar.update(len(batch['part_index']))
            done = self.assembler.windows_done
            self._bar.set_postfix_str(
                f'{self._part_name(p)} {done}/{len(self._parts[p])}', refresh=False
            )

    def on_predict_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """Write the last rows of this rank's last part.

        Args:
            trainer: The trainer.
            pl_module: The task.

        Raises:
            RuntimeError: If a part of this rank got no window.
        """
        try:
            self._finish()
            missing = [p for p in range(len(self._parts)) if p not in self._done]
            if missing:
                part = self._parts[missing[0]]
                path = self._datasets[part.raster].meta.path
                msg = f'no window of {path} (strip {part.strip}) was predicted'
                raise RuntimeError(msg)
        finally:
            self._cleanup()

    def _strips_of(
        self, index: int, plan: Sequence[tuple[int, RasterPart]]
    ) -> list[tuple[Path, tuple[int, int]]]:
        """The staging files of a raster's strips, whichever rank wrote them.

        Args:
            index: Index of the raster in the datamodule's ``rasters``.
            plan: The datamodule's plan.

        Returns:
            ``(file, rows)`` of each strip, top to bottom.
        """
        return [
            (strip_path(self.outputs[index], part.strip, self._pids[rank]), part.rows)
            for rank, part in sorted(plan, key=lambda rp: rp[1].strip)
            if part.raster == index
        ]

    def _merge(
        self, trainer: pl.Trainer, plan: Sequence[tuple[int, RasterPart]]
    ) -> None:
        """Write the outputs of the strip-sharded rasters this rank owns.

        Args:
            trainer: The trainer.
            plan: The datamodule's plan.
        """
        owned = sorted(
            {
                part.raster
                for _, part in plan
                if not part.whole and part.owner == trainer.global_rank
            }
        )
        for index in owned:
            strips = self._strips_of(index, plan)
            try:
                assembler = self._assembler(index, None)
                sink = assembler.open_sink(self._num_classes[index], sweep=False)
                self.written = merge_strips(sink, strips, self.block_size)
                self.results[self._datasets[index].meta.path] = self.written
            finally:
                for path, _ in strips:
                    path.unlink(missing_ok=True)

    def _complete(self, trainer: pl.Trainer) -> None:
        """After every rank is done: merge strips, list all results, write mosaics.

        Runs in :meth:`teardown`, which every rank reaches, also a rank that had
        nothing to predict (Lightning then skips its predict loop).

        Args:
            trainer: The trainer.
        """
        trainer.strategy.barrier('raster_prediction_written')
        datamodule = trainer.datamodule
        plan = datamodule.plan
        if any(not part.whole for _, part in plan):
            with gdal_cache_limit():
                self._merge(trainer, plan)
            trainer.strategy.barrier('raster_strips_merged')
        for i, path in enumerate(datamodule.rasters):
            if i in datamodule.excluded or path in datamodule.failed:
                continue
            self.results.setdefault(path, self._paths(self.outputs[i]))
        self.results = {
            p: self.results[p] for p in datamodule.rasters if p in self.results
        }
        if self.vrt and trainer.is_global_zero and self.results:
            assert self.output_dir is not None
            self.mosaics = write_mosaics(
                list(self.results.values()), Path(self.output_dir)
            )

    def on_exception(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        exception: BaseException,
    ) -> None:
        """Remove partial outputs when prediction fails.

        The staging files of this rank's strips go, and so do those of other
        ranks' strips of the rasters this rank owns; what a killed rank leaves
        is swept by the next run (:func:`~torchgeo_ssg2.inference.output.sweep_staging`).

        Args:
            trainer: The trainer.
            pl_module: The task.
            exception: The error.
        """
        self._failed = True
        self._cleanup()
        plan = getattr(trainer.datamodule, 'plan', None) or []
        stale = list(self._own_strips)
        if len(self._pids) == trainer.world_size:
            for index in {p.raster for _, p in plan if p.owner == trainer.global_rank}:
                stale += [path for path, _ in self._strips_of(index, plan)]
        for path in stale:
            path.unlink(missing_ok=True)
        self._own_strips = []

    def _cleanup(self) -> None:
        """Abort whatever is unfinished and restore GDAL's cache size."""
        if self.assembler is not None:
            self.assembler.abort()
            self.assembler = None
        self._current = None
        if self._env is not None:
            self._env.__exit__(None, None, None)
            self._env = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
