"""A predict-only datamodule over one raster's sliding windows."""

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchgeo.datamodules import NonGeoDataModule

from ..samplers import SupportBank
from .dataset import RasterWindowDataset, SupportMode, collate_windows
from .model import (
    model_in_channels,
    needs_supports,
    read_checkpoint,
    resolve_normalization,
    task_classes,
)
from .output import RasterMeta

__all__ = ('RasterPredictDataModule', 'build_window_dataset', 'check_input')


def check_input(model: nn.Module, input: str | os.PathLike[str]) -> RasterMeta:
    """Check that the input raster is readable and has the model's band count.

    Args:
        model: The task (or plain module) that will predict.
        input: Input raster.

    Returns:
        The raster's metadata.

    Raises:
        ValueError: If the band count differs from the model's ``in_channels``.
    """
    meta = RasterMeta.from_file(input)
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
    input: str | os.PathLike[str],
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
    readable, its band count equals the model's ``in_channels``, the normalisation
    matches the bands, and the support source is usable.

    Args:
        model: The task (or plain module) that will predict.
        input: Input raster.
        checkpoint: The raw checkpoint the task was loaded from, if any (for the
            datamodule's normalisation statistics).
        window: Window side in pixels.
        overlap: Pixels shared by neighbouring windows.
        mean: Explicit per-band mean (else recovered, see
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
    if isinstance(model, task_classes()) and window % 32:
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
    mean_, std_, source = resolve_normalization(model, checkpoint, mean, std)
    if source.startswith("torchgeo's default"):
        warnings.warn(
            'the normalisation used in training is not recorded in the task or its '
            f'checkpoint: using {source}; pass mean and std if the training '
            'datamodule used others',
            UserWarning,
            stacklevel=2,
        )
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
        meta.path,
        window=window,
        overlap=overlap,
        mean=mean_,
        std=std_,
        supports=mode,
        sequence_length=sequence_length,
        support_bank=support_bank,
        support_seed=support_seed,
    )
    if mode == 'bank':
        # Fail now, not after hours, if the bank's chips do not fit the windows.
        dataset[0]
    return dataset


class RasterPredictDataModule(NonGeoDataModule):
    """Predict the sliding windows of one raster with ``torchgeo predict``.

    Normalisation happens in the dataset (from ``mean``/``std``, else recovered
    from the task and its checkpoint as
    :func:`~torchgeo_ssg2.inference.model.resolve_normalization` does), so this
    datamodule applies no batch augmentation. Pair it with
    :class:`~torchgeo_ssg2.inference.RasterPredictionWriter`; the same windows,
    normalisation, supports and blending as :func:`predict_raster` give the same
    file.

    Args:
        input: Input raster.
        window: Window side in pixels.
        overlap: Pixels shared by neighbouring windows.
        batch_size: Windows per batch.
        num_workers: DataLoader workers.
        mean: Per-band mean (None: recover).
        std: Per-band std (None: recover).
        supports: ``"raster"`` or ``"bank"``.
        support_bank: The bank for ``supports="bank"``.
        sequence_length: Supports per window (None: the task's).
        support_seed: Seed of the raster support selector.
    """

    def __init__(
        self,
        input: str,
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
    ) -> None:
        super().__init__(RasterWindowDataset, batch_size, num_workers)
        self.collate_fn = collate_windows
        self.input = input
        self.window = window
        self.overlap = overlap
        self.mean_arg = mean
        self.std_arg = std
        self.supports = supports
        self.support_bank = support_bank
        self.sequence_length = sequence_length
        self.support_seed = support_seed

    def setup(self, stage: str) -> None:
        """Check the input raster against the task before anything runs.

        Args:
            stage: Only ``"predict"`` is supported.

        Raises:
            ValueError: For any other stage.
        """
        if stage != 'predict':
            msg = f'{type(self).__name__} only predicts (got stage {stage!r})'
            raise ValueError(msg)
        check_input(self._model(), self.input)

    def _model(self) -> nn.Module:
        """The task being run, or an identity module outside a trainer."""
        if self.trainer is not None and self.trainer.lightning_module is not None:
            return self.trainer.lightning_module
        return nn.Identity()

    def predict_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """The raster's windows in row-major order.

        Built here rather than in :meth:`setup` because the trainer knows the
        checkpoint path (whose datamodule statistics may give the normalisation)
        only once it has restored it.

        Returns:
            The data loader.
        """
        checkpoint = None
        ckpt_path = self.trainer.ckpt_path if self.trainer is not None else None
        if ckpt_path and Path(ckpt_path).is_file():
            checkpoint = read_checkpoint(Path(ckpt_path))
        self.predict_dataset = build_window_dataset(
            self._model(),
            self.input,
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
        return super().predict_dataloader()

    def teardown(self, stage: str) -> None:
        """Close the raster handle after prediction.

        Args:
            stage: The finished stage.
        """
        if isinstance(self.predict_dataset, RasterWindowDataset):
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
