"""Trainer for the UNet-like PTAViT baseline."""

from typing import Any

from torch import Tensor

from ..losses import MultitaskLoss
from ..models import PTAViT
from ..targets import multitask_labels, one_hot_with_ignore
from .base import MultitaskSegmentationTask, normalise_probabilities, normalised_entropy

__all__ = ('PTAViTTask',)


class PTAViTTask(MultitaskSegmentationTask):
    """The single-image PTAViT baseline (same backbone as SSG2, no supports).

    Works on plain batches (``image``, ``mask``) and on episode batches, whose
    supports it ignores, so it trains on the same datamodules as
    :class:`~torchgeo_ssg2.trainers.SSG2Task`. The loss is the multitask
    Tanimoto-with-complement loss over segmentation, boundary and distance maps
    (the labels are built from the mask on the batch's device); metrics are the
    same as SSG2Task's. Its arguments are those of
    :class:`~torchgeo_ssg2.trainers.MultitaskSegmentationTask`.
    """

    model_name = 'ptavit'

    def configure_models(self) -> None:
        """Initialize the PTAViT model."""
        self._check_hparams()
        hp = self.hparams
        self.model = PTAViT(
            hp['in_channels'],
            hp['num_classes'],
            preset=hp['preset'],
            **(hp['model_kwargs'] or {}),
        )

    def configure_losses(self) -> None:
        """Initialize the multitask loss."""
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
        self.update_metrics(stage, output, mask)
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
        return {
            'probabilities': probs,
            'bounds': batch.get('bounds'),
            'transform': batch.get('transform'),
            'uncertainty': normalised_entropy(probs),
        }
