"""From batches of window predictions to GeoTIFF: the shared assembler and its callback."""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from .blending import StripBlender
from .output import GeoTIFFSink, RasterMeta, check_output_free, gdal_cache_limit
from .output import output_paths as _output_paths
from .windows import WindowGrid, blend_weight

__all__ = ('PredictionAssembler', 'RasterPredictionWriter')


class PredictionAssembler:
    """Blend window predictions of one raster and write them, block by block.

    The single implementation behind both front doors: :func:`predict_raster`
    feeds it directly, :class:`RasterPredictionWriter` from Lightning's predict
    loop. The output files are opened (as temporary files) when the first batch
    reveals the number of classes.

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
    ) -> None:
        self.meta = meta
        self.grid = grid
        self.output = Path(output)
        self.probabilities = probabilities
        self.uncertainty = uncertainty
        self.overwrite = overwrite
        self.weight = blend_weight(grid.window, blend_floor)
        self.block_size = block_size
        self.sink: GeoTIFFSink | None = None
        self.blender: StripBlender | None = None
        self.windows_done = 0
        self.protected = {'input raster': meta.path, **(protected or {})}
        check_output_free(self.output_paths, overwrite, self.protected)

    @property
    def output_paths(self) -> dict[str, Path]:
        """Files this assembler writes."""
        return _output_paths(self.output, self.probabilities, self.uncertainty)

    def _start(self, num_classes: int) -> None:
        """Open the outputs once the number of classes is known.

        Args:
            num_classes: Probability channels K.
        """
        self.sink = GeoTIFFSink(
            self.meta,
            self.output,
            num_classes,
            probabilities=self.probabilities,
            uncertainty=self.uncertainty,
            overwrite=self.overwrite,
            block_size=self.block_size,
            protected=self.protected,
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
        )

    def add_batch(self, prediction: dict[str, Tensor], batch: dict[str, Any]) -> None:
        """Blend one batch of window predictions.

        Args:
            prediction: ``probabilities`` BxKxHxW and, when the uncertainty is
                written, ``uncertainty`` BxHxW.
            batch: The batch the prediction was made from, with ``row_off`` and
                ``col_off`` (B) of each window.

        Raises:
            KeyError: If a required key is missing.
        """
        probs = prediction['probabilities']
        unc = prediction.get('uncertainty') if self.uncertainty else None
        if self.uncertainty and unc is None:
            msg = (
                'uncertainty output requested but the model returned no "uncertainty" '
                '(only SSG2 tasks provide it)'
            )
            raise KeyError(msg)
        if 'row_off' not in batch or 'col_off' not in batch:
            msg = (
                'batches must carry "row_off" and "col_off"; predict with '
                'torchgeo_ssg2.inference.RasterPredictDataModule'
            )
            raise KeyError(msg)
        if self.blender is None:
            self._start(int(probs.shape[1]))
        assert self.blender is not None
        probs = probs.detach().float().cpu()
        if unc is not None:
            unc = unc.detach().float().cpu()
        rows = batch['row_off'].tolist()
        cols = batch['col_off'].tolist()
        for i, (row, col) in enumerate(zip(rows, cols, strict=True)):
            self.blender.add(row, col, probs[i], None if unc is None else unc[i])
        self.windows_done += len(rows)

    def finish(self) -> dict[str, Path]:
        """Flush the last rows and move the complete files into place.

        Returns:
            The written files.

        Raises:
            RuntimeError: If not every window was predicted.
        """
        if self.blender is None or self.sink is None:
            msg = 'no window was predicted; nothing to write'
            raise RuntimeError(msg)
        if self.windows_done != len(self.grid):
            msg = f'only {self.windows_done} of {len(self.grid)} windows were predicted'
            raise RuntimeError(msg)
        self.blender.finish()
        paths = self.sink.commit()
        self.blender = None
        self.sink = None
        return paths

    def abort(self) -> None:
        """Drop the partial outputs (no file is left at the output paths)."""
        if self.sink is not None:
            self.sink.abort()
        self.sink = None
        self.blender = None


def _protected_inputs(trainer: pl.Trainer) -> dict[str, Path]:
    """The inputs of a ``Trainer.predict`` run that no output may replace.

    Args:
        trainer: The trainer.

    Returns:
        The input raster, the checkpoint and the support-bank images, by role.
    """
    protected: dict[str, Path] = {}
    ckpt_path = getattr(trainer, 'ckpt_path', None)
    if ckpt_path:
        protected['checkpoint'] = Path(ckpt_path)
    datamodule = getattr(trainer, 'datamodule', None)
    if isinstance(getattr(datamodule, 'input', None), str | os.PathLike):
        protected['input raster'] = Path(datamodule.input)
    bank = getattr(datamodule, 'support_bank', None)
    if hasattr(bank, 'source_files'):
        for i, path in enumerate(bank.source_files()):
            protected[f'support-bank image #{i}'] = path
    return protected


class RasterPredictionWriter(BasePredictionWriter):
    """Lightning callback writing ``Trainer.predict`` output as a GeoTIFF.

    Use it with :class:`~torchgeo_ssg2.inference.RasterPredictDataModule`, whose
    predict dataset yields a raster's sliding windows in row-major order; each
    batch's ``probabilities`` (and ``uncertainty``) are blended as they come and
    finished rows are written, so memory stays flat. Predictions are not kept by
    the trainer (``return_predictions`` is switched off).

    Args:
        output: Class-index GeoTIFF path (sidecars ``*_probabilities.tif`` and
            ``*_uncertainty.tif`` on request).
        overwrite: Whether existing outputs may be replaced.
        probabilities: Whether to write per-class probabilities.
        uncertainty: Whether to write the SSG2 uncertainty map.
        blend_floor: Smallest blending weight.
        block_size: Output tile side.
    """

    def __init__(
        self,
        output: str,
        overwrite: bool = False,
        probabilities: bool = False,
        uncertainty: bool = False,
        blend_floor: float = 0.01,
        block_size: int = 256,
    ) -> None:
        super().__init__(write_interval='batch')
        self.output = output
        self.overwrite = overwrite
        self.probabilities = probabilities
        self.uncertainty = uncertainty
        self.blend_floor = blend_floor
        self.block_size = block_size
        self.assembler: PredictionAssembler | None = None
        self.written: dict[str, Path] = {}
        self._env: Any = None

    def setup(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> None:
        """Refuse an existing output before any work starts.

        Args:
            trainer: The trainer.
            pl_module: The task.
            stage: Only ``"predict"`` is acted upon.
        """
        if stage == 'predict':
            paths = _output_paths(self.output, self.probabilities, self.uncertainty)
            check_output_free(paths, self.overwrite, _protected_inputs(trainer))

    def on_predict_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """Set up the assembler from the predict dataset.

        Args:
            trainer: The trainer.
            pl_module: The task.

        Raises:
            TypeError: If the predict dataset is not a raster's window dataset.
        """
        from .dataset import RasterWindowDataset

        if trainer.world_size > 1:
            msg = (
                'RasterPredictionWriter writes one file from one process: predict '
                'with a single device (trainer.devices=1)'
            )
            raise RuntimeError(msg)
        dataloaders = trainer.predict_dataloaders
        loaders = dataloaders if isinstance(dataloaders, Sequence) else [dataloaders]
        if len(loaders) != 1 or not isinstance(
            getattr(loaders[0], 'dataset', None), RasterWindowDataset
        ):
            msg = (
                'RasterPredictionWriter needs one predict dataloader over a '
                'RasterWindowDataset (use torchgeo_ssg2.inference.RasterPredictDataModule)'
            )
            raise TypeError(msg)
        dataset = loaders[0].dataset
        trainer.predict_loop.return_predictions = False
        self._env = gdal_cache_limit()
        self._env.__enter__()
        self.assembler = PredictionAssembler(
            dataset.meta,
            dataset.grid,
            self.output,
            probabilities=self.probabilities,
            uncertainty=self.uncertainty,
            overwrite=self.overwrite,
            blend_floor=self.blend_floor,
            block_size=self.block_size,
            protected=_protected_inputs(trainer),
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
        """Blend one batch into the output.

        Args:
            trainer: The trainer.
            pl_module: The task.
            prediction: ``predict_step``'s dict.
            batch_indices: Indices of the batch's samples.
            batch: The batch.
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.
        """
        assert self.assembler is not None
        self.assembler.add_batch(prediction, batch)

    def on_predict_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """Write the last rows and move the files into place.

        Args:
            trainer: The trainer.
            pl_module: The task.
        """
        try:
            if self.assembler is not None:
                self.written = self.assembler.finish()
        finally:
            self._cleanup()

    def on_exception(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        exception: BaseException,
    ) -> None:
        """Remove partial outputs when prediction fails.

        Args:
            trainer: The trainer.
            pl_module: The task.
            exception: The error.
        """
        self._cleanup()

    def _cleanup(self) -> None:
        """Abort whatever is unfinished and restore GDAL's cache size."""
        if self.assembler is not None:
            self.assembler.abort()
            self.assembler = None
        if self._env is not None:
            self._env.__exit__(None, None, None)
            self._env = None
