"""Trainer for the UNet-like PTAViT baseline."""

import math
from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor
from torchgeo.tasks import SemanticSegmentation

from ..losses import MultitaskLoss
from ..models import PTAViT
from ..targets import multitask_labels, one_hot_with_ignore
from .base import MultitaskSegmentationTask, normalise_probabilities

__all__ = ('PTAViTTask',)


class PTAViTTask(MultitaskSegmentationTask):
    """The single-image PTAViT baseline (same backbone as SSG2, no supports).

    Works on plain batches (``image``, ``mask``) and on episode batches, whose
    supports it ignores, so it trains on the same datamodules as
    :class:`~torchgeo_ssg2.trainers.SSG2Task`. The loss is the multitask
    Tanimoto-with-complement loss over segmentation, boundary and distance maps
    (the labels are built from the mask on the batch's device); metrics are the
    same as SSG2Task's.
    """

    def __init__(
        self,
        model: Literal['ptavit'] = 'ptavit',
        preset: str = 'tiny',
        model_kwargs: dict[str, Any] | None = None,
        in_channels: int = 3,
        task: Literal['multiclass'] = 'multiclass',
        num_classes: int | None = None,
        num_labels: int | None = None,
        labels: list[str] | None = None,
        loss: Literal['tanimoto'] = 'tanimoto',
        loss_depth: int = 0,
        loss_mode: Literal['exact', 'avg'] = 'exact',
        class_weights: Sequence[float] | None = None,
        pos_weight: Tensor | None = None,
        ignore_index: int | None = None,
        optimizer: Literal['radam', 'adamw'] = 'radam',
        lr: float = 1e-3,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        lr_schedule: Literal['constant', 'plateau', 'cosine'] = 'constant',
        warmup_steps: int = 0,
        min_lr: float = 0.0,
        patience: int = 10,
    ) -> None:
        """Initialize a new PTAViTTask instance.

        Args:
            model: Model name (only 'ptavit').
            preset: Model preset: 'paper', 'small', 'tiny' or 'test'.
            model_kwargs: Overrides of the preset's
                :class:`~torchgeo_ssg2.models.ModelConfig` fields.
            in_channels: Number of input channels.
            task: Only 'multiclass'.
            num_classes: Number of classes.
            num_labels: Must be None.
            labels: Class names, for the per-class metric names.
            loss: Loss name (only 'tanimoto').
            loss_depth: Fractal depth of the Tanimoto similarity.
            loss_mode: 'exact' or 'avg' fractal Tanimoto.
            class_weights: Must be None.
            pos_weight: Must be None.
            ignore_index: Mask value excluded from losses and metrics.
            optimizer: 'radam' or 'adamw'.
            lr: Learning rate.
            eps: Optimizer epsilon.
            weight_decay: Weight decay.
            lr_schedule: 'constant', 'plateau' or 'cosine'.
            warmup_steps: Linear warm-up steps.
            min_lr: Final learning rate of the cosine schedule.
            patience: Patience of the plateau schedule.

        Raises:
            ValueError: For unsupported or inconsistent arguments.
        """
        self.weights = None
        super(SemanticSegmentation, self).__init__()

    def configure_models(self) -> None:
        """Initialize the PTAViT model."""
        self._check_hparams()
        hp = self.hparams
        if hp['model'] != 'ptavit':
            raise ValueError(
                f"PTAViTTask supports model='ptavit' only, got {hp['model']!r}"
            )
        self.model = PTAViT(
            hp['in_channels'],
            hp['num_classes'],
            preset=hp['preset'],
            **(hp['model_kwargs'] or {}),
        )

    def configure_losses(self) -> None:
        """Initialize the multitask loss."""
        if self.hparams['loss'] != 'tanimoto':
            raise ValueError(
                f"PTAViTTask supports loss='tanimoto' only, got {self.hparams['loss']!r}"
            )
        self.criterion = MultitaskLoss(
            self.hparams['loss_depth'], self.hparams['loss_mode']
        )

    def forward(self, image: Tensor) -> Tensor:
        """Run the model.

        Args:
            image: B x C x H x W images.

        Returns:
            B x 3K x H x W segmentation, boundary and distance probabilities.
        """
        return self.model(image)  # type: ignore[no-any-return]

    def _step(self, batch: dict[str, Any], stage: str) -> tuple[Tensor, Tensor]:
        """Forward pass, loss and metric update.

        Args:
            batch: A batch with ``image`` and ``mask`` (other keys are ignored).
            stage: 'train', 'val' or 'test'.

        Returns:
            The model output and the loss.
        """
        hp = self.hparams
        image, mask = batch['image'], batch['mask']
        output = self(image)
        onehot, valid = one_hot_with_ignore(mask, hp['num_classes'], hp['ignore_index'])
        loss = self.criterion(output, multitask_labels(onehot), valid)
        self.log(
            f'{stage}_loss', loss, batch_size=image.shape[0], sync_dist=stage != 'train'
        )
        getattr(self, f'{stage}_metrics')(self.segmentation(output).float(), mask)
        return output, loss

    def training_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """Compute the training loss.

        Args:
            batch: ``image`` and ``mask`` (supports, if any, are ignored).
            batch_idx: Integer displaying index of this batch.
            dataloader_idx: Index of the current dataloader.

        Returns:
            The multitask loss.
        """
        return self._step(batch, 'train')[1]

    def validation_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Compute the validation loss and metrics, and log a figure.

        Args:
            batch: ``image`` and ``mask``.
            batch_idx: Integer displaying index of this batch.
            dataloader_idx: Index of the current dataloader.
        """
        output, _ = self._step(batch, 'val')
        if self._should_plot(batch_idx):
            sample = self._first(batch, ('mask',))
            sample['image'] = self._denormalise(batch['image'][0])
            sample['prediction'] = self.segmentation(output)[0].argmax(0).cpu()
            self._log_figure(sample, batch_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Compute the test loss and metrics.

        Args:
            batch: ``image`` and ``mask``.
            batch_idx: Integer displaying index of this batch.
            dataloader_idx: Index of the current dataloader.
        """
        self._step(batch, 'test')

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor | None]:
        """Predict class probabilities and their entropy.

        Args:
            batch: ``image`` BxCxHxW; optional ``bounds`` and ``transform``.
            batch_idx: Integer displaying index of this batch.
            dataloader_idx: Index of the current dataloader.

        Returns:
            ``probabilities`` B x num_classes x H x W (segmentation channels
            normalised to sum to one), ``bounds``, ``transform`` and
            ``uncertainty`` B x H x W: the entropy of the probabilities divided by
            log(num_classes), in [0, 1] (0 for a single class).
        """
        probs = normalise_probabilities(self.segmentation(self(batch['image'])))
        entropy = -(probs * probs.log()).sum(dim=1)
        nc = self.hparams['num_classes']
        uncertainty = (entropy / math.log(nc)).clamp(0, 1) if nc > 1 else entropy * 0
        return {
            'probabilities': probs,
            'bounds': batch.get('bounds'),
            'transform': batch.get('transform'),
            'uncertainty': uncertainty,
        }
