"""Trainer for SSG2 semantic segmentation with support sequences."""

from typing import Any, Literal

from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from ..losses import SSG2Loss
from ..metrics import SetOperationIoU
from ..models import SSG2
from ..targets import set_operation_targets
from .base import (
    MultitaskSegmentationTask,
    normalise_probabilities,
    normalised_entropy,
)

__all__ = ('SSG2Task', 'sequence_uncertainty')


def sequence_uncertainty(
    intersection: Tensor, union: Tensor, num_classes: int
) -> Tensor:
    """Per-pixel uncertainty from the disagreement across the support sequence.

    SSG2's set-theoretic priors bracket the target: for every class k the union of
    the per-step intersections and the intersection of the per-step unions satisfy
    ``max_t I_t,k <= T_k <= min_t U_t,k``. Where the supports pin the target down
    the bracket is closed (width 0); where the sequence leaves it open the model's
    target rests on the learned sequence model alone. The uncertainty is the widest
    bracket over the real classes::

        u = max_k clamp(min_t U_t,k - max_t I_t,k, 0, 1)

    Args:
        intersection: B x T x C x H x W predicted intersections (segmentation
            channels, C >= num_classes).
        union: B x T x C x H x W predicted unions.
        num_classes: Number of real classes (NULL and the boundary/distance
            channels beyond it are ignored).

    Returns:
        B x H x W uncertainty in [0, 1].

    Note:
        On held-out Dubai and ISIC images this bracket ranks the wrongly
        classified pixels worse than the entropy of the target probabilities
        (error-detection AUROC in docs/evidence.md), so
        :meth:`SSG2Task.predict_step` reports the entropy; the bracket stays
        available as a diagnostic of the set-operation heads.
    """
    lower = intersection[:, :, :num_classes].float().amax(dim=1)
    upper = union[:, :, :num_classes].float().amin(dim=1)
    return (upper - lower).clamp(0, 1).amax(dim=1)


class SSG2Task(MultitaskSegmentationTask):
    """SSG2: semantic segmentation of a target conditioned on T support images.

    Batches are episodes (see
    :class:`~torchgeo_ssg2.datamodules.EpisodicNonGeoDataModule`): ``image``
    BxCxHxW, ``mask`` BxHxW, ``support_image`` BxTxCxHxW and (for training,
    validation and test) ``support_mask`` BxTxHxW. The set-operation targets
    (intersection, union, difference with the NULL class, boundaries, distances)
    are built from the masks on the batch's device, and the SSG2 loss (Tanimoto
    with complement over all heads, weighted ``1/(5T+2)``) is logged in total
    (``train_loss``) and per term (``train_loss_intersection``, ...,
    ``train_loss_symmetry``).

    The prediction is the argmax over the first ``num_classes`` segmentation
    channels of the model's ``target`` output (NULL excluded); metrics are
    torchgeo's over the real classes. T comes from the batch, so validation, test
    and prediction may use another T than training.
    """

    model_name = 'ssg2'

    def __init__(
        self,
        *,
        sequence_length: int | None = None,
        loss_empty: Literal['official', 'smoothed'] = 'official',
        loss_fuzzy_target_null: Literal['official', 'one', 'drop'] = 'one',
        loss_fuzzy_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """Initialize a new SSG2Task instance.

        Args:
            sequence_length: Number of supports T in training; a training batch
                with another T is an error. None (the usual value in a config,
                where the datamodule's ``sequence_length`` gives T once) takes
                T from the datamodule at fit start, else from the first
                training batch. The T in effect is :attr:`sequence_length`,
                saved as ``checkpoint['sequence_length']``: the default T of
                inference. Evaluation and prediction take T from their batches.
            loss_empty: How a channel with an empty label scores in the Tanimoto
                loss: 'official' (similarity 0, loss floor 0.5, as the official
                code) or 'smoothed' (eps-smoothed; rewards collapsing uncertain
                channels to zero). See :mod:`torchgeo_ssg2.losses`.
            loss_fuzzy_target_null: Label of the NULL channel in the fuzzy-target
                term: 'one' (its true value), 'official' (the target's NULL, 0, as
                the official code; it fights both heads' NULL targets) or 'drop'.
            loss_fuzzy_weight: Weight of the fuzzy-target and fuzzy-null terms:
                0 (the default) leaves them out, so that the set-operation heads
                fit their own targets; 1 is the official loss. See
                :class:`~torchgeo_ssg2.losses.SSG2Loss`.
            **kwargs: The arguments of
                :class:`~torchgeo_ssg2.trainers.MultitaskSegmentationTask`
                (``preset``, ``in_channels``, ``num_classes``, ...).

        Raises:
            ValueError: For unsupported or inconsistent arguments.
        """
        super().__init__(**kwargs)
        #: The number of supports T of training (None until known).
        self.sequence_length: int | None = sequence_length
        # where sequence_length came from a checkpoint, not from the arguments
        self._restored_length = False

    def configure_models(self) -> None:
        """Initialize the SSG2 model."""
        self._check_hparams()
        hp = self.hparams
        length = hp['sequence_length']
        if length is not None and (not isinstance(length, int) or length < 1):
            raise ValueError(f'sequence_length must be >= 1 or None, got {length!r}')
        self.model = SSG2(
            hp['in_channels'],
            hp['num_classes'],
            preset=hp['preset'],
            **(hp['model_kwargs'] or {}),
        )

    def configure_losses(self) -> None:
        """Initialize the SSG2 loss."""
        hp = self.hparams
        self.criterion = SSG2Loss(
            hp['loss_depth'],
            hp['loss_mode'],
            empty=hp['loss_empty'],
            fuzzy_target_null=hp['loss_fuzzy_target_null'],
            fuzzy_weight=hp['loss_fuzzy_weight'],
        )

    def configure_metrics(self) -> None:
        """Initialize torchgeo's metrics and the set-operation head fit.

        ``{stage}_IoU_intersection``, ``_union`` and ``_difference`` (validation and
        test) are the IoU of each per-support head against its own target
        (:class:`~torchgeo_ssg2.metrics.SetOperationIoU`).
        """
        super().configure_metrics()
        nc = self.hparams['num_classes']
        self.val_head_fit = SetOperationIoU(nc)
        self.test_head_fit = SetOperationIoU(nc)

    def setup(self, stage: str) -> None:
        """Take the training T from the datamodule, or check it against it.

        A datamodule with a ``sequence_length`` (every episode datamodule of
        this package) gives :attr:`sequence_length` when the task has none, so
        a config states T once, in its ``data`` section. A T restored from a
        checkpoint (resuming, or fine-tuning a loaded task) gives way to the
        datamodule's, with a warning: the model takes any T.

        Args:
            stage: 'fit', 'validate', 'test' or 'predict'.

        Raises:
            ValueError: If the task and the datamodule give different T, or the
                trainer would replace the per-support BatchNorm layers.
        """
        super().setup(stage)
        if stage != 'fit':
            return
        length = self._fitting_length()
        if length is None:
            return
        if self.sequence_length is not None and self.sequence_length != length:
            if not self._restored_length:
                raise ValueError(
                    f'SSG2Task(sequence_length={self.sequence_length}) but the '
                    f'datamodule draws sequence_length={length} supports; give T '
                    "once, as the datamodule's sequence_length"
                )
            self._warn_length(self.sequence_length, length)
        self.sequence_length = length

    def _fitting_length(self) -> int | None:
        """The datamodule's T while a trainer fits the task, else None."""
        trainer = self._trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return None
        length = getattr(trainer.datamodule, 'sequence_length', None)
        return length if isinstance(length, int) else None

    @staticmethod
    def _warn_length(restored: int, length: int) -> None:
        """Say that the datamodule's T replaces a checkpoint's.

        Args:
            restored: The checkpoint's T.
            length: The datamodule's T.
        """
        rank_zero_warn(
            f'SSG2Task: the checkpoint was trained with sequence_length={restored}; '
            f"training goes on with the datamodule's sequence_length={length}"
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the statistics, the class path and the training T.

        Args:
            checkpoint: The checkpoint dictionary being saved.
        """
        super().on_save_checkpoint(checkpoint)
        if self.sequence_length is not None:
            checkpoint['sequence_length'] = self.sequence_length

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the statistics and the training T of a checkpoint.

        Args:
            checkpoint: The checkpoint dictionary being loaded.

        Raises:
            ValueError: If the recorded T is not a positive integer.
        """
        super().on_load_checkpoint(checkpoint)
        length = checkpoint.get('sequence_length')
        if length is None:
            return
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(
                f"checkpoint['sequence_length'] must be a positive integer, got "
                f'{length!r}'
            )
        fitting = self._fitting_length()
        if fitting is not None:
            # resuming a fit: the datamodule, set up already, gives T
            if length != fitting:
                self._warn_length(length, fitting)
            return
        self.sequence_length = length
        self._restored_length = True

    def forward(self, image: Tensor, support_image: Tensor) -> dict[str, Tensor]:
        """Run the model with all outputs.

        Args:
            image: B x C x H x W targets.
            support_image: B x T x C x H x W supports.

        Returns:
            The model's output dict (see :class:`~torchgeo_ssg2.models.SSG2`).
        """
        return self.model(image, support_image)  # type: ignore[no-any-return]

    @staticmethod
    def _supports(batch: dict[str, Any]) -> Tensor:
        """The supports of a batch, with a clear error when they are missing.

        Args:
            batch: An episode batch.

        Returns:
            B x T x C x H x W supports.

        Raises:
            ValueError: If the batch has no 5-D ``support_image``.
        """
        support = batch.get('support_image')
        if not isinstance(support, Tensor) or support.ndim != 5:
            raise ValueError(
                'SSG2Task needs episode batches with support_image BxTxCxHxW '
                '(use an EpisodicNonGeoDataModule); got keys '
                f'{sorted(batch)}'
                + (
                    f' with support_image {tuple(support.shape)}'
                    if support is not None
                    else ''
                )
            )
        return support

    def _step(
        self, batch: dict[str, Any], stage: str
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        """Forward pass, loss (if support masks are present) and metric update.

        Args:
            batch: An episode batch.
            stage: 'train', 'val' or 'test'.

        Returns:
            The model outputs and the total loss (None without support masks).
        """
        hp = self.hparams
        image, mask = batch['image'], batch['mask']
        support = self._supports(batch)
        batch_size = support.shape[0]
        loss = None
        if 'support_mask' in batch:
            outputs = self(image, support)
            targets = set_operation_targets(
                mask, batch['support_mask'], hp['num_classes'], hp['ignore_index']
            )
            losses = self.criterion(outputs, targets)
            loss = losses['loss']
            if stage != 'train':
                getattr(self, f'{stage}_head_fit').update(outputs, targets)
            sync = stage != 'train'
            self.log(f'{stage}_loss', loss, batch_size=batch_size, sync_dist=sync)
            for key, value in losses.items():
                if key != 'loss':
                    self.log(
                        f'{stage}_loss_{key}',
                        value,
                        batch_size=batch_size,
                        sync_dist=sync,
                    )
        else:
            outputs = self.model.forward_inference(image, support)
        self.update_metrics(stage, outputs['target'], mask)
        return outputs, loss

    def _log_head_fit(self, stage: str) -> None:
        """Log and reset the set-operation head fit of a stage, if it saw a batch.

        Args:
            stage: 'val' or 'test'.
        """
        metric = getattr(self, f'{stage}_head_fit')
        if metric.update_called:
            for name, value in metric.compute().items():
                self.log(f'{stage}_IoU_{name}', value, sync_dist=True)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics and the set-operation head fit."""
        super().on_validation_epoch_end()
        self._log_head_fit('val')

    def on_test_epoch_end(self) -> None:
        """Log the test metrics and the set-operation head fit."""
        super().on_test_epoch_end()
        self._log_head_fit('test')

    def training_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """Compute the training loss on an episode batch.

        Args:
            batch: ``image``, ``mask``, ``support_image``, ``support_mask``.
            batch_idx: Integer displaying index of this batch.
            dataloader_idx: Index of the current dataloader.

        Returns:
            The total SSG2 loss.

        Raises:
            ValueError: If the batch lacks support masks or its T differs from
                ``sequence_length``.
        """
        support = self._supports(batch)
        if 'support_mask' not in batch:
            raise ValueError('SSG2Task training needs support_mask in the batch')
        t = support.shape[1]
        if self.sequence_length is None:
            self.sequence_length = t
        elif t != self.sequence_length:
            raise ValueError(
                f'training batch has T={t} supports but the task trains with '
                f'sequence_length={self.sequence_length}; give T once, as the '
                "datamodule's sequence_length"
            )
        _, loss = self._step(batch, 'train')
        assert loss is not None
        return loss

    def validation_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Compute the validation loss and metrics, and log a figure.

        Args:
            batch: An episode batch (fixed supports).
            batch_idx: Integer displaying index of this batch.
            dataloader_idx: Index of the current dataloader.
        """
        outputs, _ = self._step(batch, 'val')
        if self._should_plot(batch_idx):
            self._log_figure(self.figure_sample(batch, outputs), batch_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Compute the test loss and metrics.

        Args:
            batch: An episode batch (fixed supports).
            batch_idx: Integer displaying index of this batch.
            dataloader_idx: Index of the current dataloader.
        """
        self._step(batch, 'test')

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor | None]:
        """Predict class probabilities and their uncertainty.

        Args:
            batch: ``image`` BxCxHxW and ``support_image`` BxTxCxHxW (any T);
                optional ``bounds`` and ``transform``.
            batch_idx: Integer displaying index of this batch.
            dataloader_idx: Index of the current dataloader.

        Returns:
            ``probabilities`` B x num_classes x H x W (the real classes'
            segmentation channels normalised to sum to one; NULL excluded),
            ``bounds`` and ``transform`` (passed through, or None), and
            ``uncertainty`` B x H x W in [0, 1], the normalised entropy of the
            probabilities (:func:`~torchgeo_ssg2.trainers.normalised_entropy`),
            the signal that ranks wrong pixels best on held-out data.
        """
        outputs = self.model.forward_inference(batch['image'], self._supports(batch))
        probs = normalise_probabilities(self.segmentation(outputs['target']))
        return {
            'probabilities': probs,
            'bounds': batch.get('bounds'),
            'transform': batch.get('transform'),
            'uncertainty': normalised_entropy(probs),
        }

    def figure_sample(
        self, batch: dict[str, Any], outputs: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """The first episode of a batch, ready for the datamodule's plot.

        Args:
            batch: The (normalised) episode batch.
            outputs: The model outputs for the batch.

        Returns:
            ``image``, ``mask``, ``prediction``, ``uncertainty``,
            ``support_image``, ``support_mask`` and the per-step ``intersection``
            (argmax over the real classes and NULL; NULL = num_classes) and
            ``union`` (argmax over the real classes) class maps, all unbatched.
        """
        nc = self.hparams['num_classes']
        sample = self._first(batch, ('mask', 'support_mask'))
        sample['image'] = self._denormalise(batch['image'][0])
        sample['support_image'] = self._denormalise(batch['support_image'][0])
        sample['prediction'] = self.segmentation(outputs['target'])[0].argmax(0).cpu()
        inter = outputs['intersection'][0].detach()
        union = outputs['union'][0].detach()
        sample['intersection'] = inter[:, : nc + 1].argmax(1).cpu()
        sample['union'] = union[:, :nc].argmax(1).cpu()
        sample['uncertainty'] = normalised_entropy(
            normalise_probabilities(self.segmentation(outputs['target'][:1]))
        )[0].cpu()
        return sample
