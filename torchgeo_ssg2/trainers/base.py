"""Shared parts of the SSG2 and PTAViT tasks: optimisers, metrics, statistics, plots."""

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor
from torch.optim import AdamW, Optimizer, RAdam
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau
from torchgeo.datamodules import BaseDataModule
from torchgeo.datasets import RGBBandsMissingError
from torchgeo.tasks import SemanticSegmentation

from ..normalization import Normalization

__all__ = ('MultitaskSegmentationTask', 'normalise_probabilities')


def normalise_probabilities(segmentation: Tensor, eps: float = 1e-6) -> Tensor:
    """Turn independent per-class probabilities into a per-pixel distribution.

    SSG2 and PTAViT predict every class with its own (SigmoidCrisp) probability, so
    the segmentation channels need not sum to one. Dividing by their sum keeps the
    argmax and gives torchgeo-style probabilities that blend well across windows.

    Args:
        segmentation: B x C x H x W probabilities in [0, 1].
        eps: Floor of the per-pixel sum (all-zero pixels become uniform).

    Returns:
        B x C x H x W probabilities that sum to one over C.
    """
    segmentation = segmentation.float().clamp(0, 1) + eps
    return segmentation / segmentation.sum(dim=1, keepdim=True)


class MultitaskSegmentationTask(SemanticSegmentation):
    """Base of :class:`SSG2Task` and :class:`PTAViTTask` (not used directly).

    Subclasses define ``__init__`` (explicit hyper-parameters, then
    ``super(SemanticSegmentation, self).__init__()`` so that exactly their own
    arguments become ``self.hparams``), ``configure_models`` and
    ``configure_losses``. This class provides:

    * metrics: torchgeo's (:meth:`ClassificationMixin.configure_metrics`) over the
      ``num_classes`` real classes only, i.e. ``OverallAccuracy``,
      ``AverageJaccardIndex`` (mean IoU), ``AverageF1Score`` (mean F1), the
      ``Classwise*`` per-class values and the precision/recall variants, with
      ``ignore_index`` honoured;
    * optimisers: RAdam (the paper's) or AdamW, optional weight decay, and a
      constant, plateau or cosine learning-rate schedule with linear warm-up;
    * validation figures through the datamodule's ``plot()``.
    """

    #: Largest number of validation batches plotted per epoch.
    max_plots = 10

    #: Stride of the models' deepest feature map: an input of H x W pixels gives
    #: (H / 32) x (W / 32) values per channel to the last BatchNorm layers.
    deepest_stride = 32

    #: The statistics the inputs are normalised with (None until known).
    normalization: Normalization | None

    def configure_metrics(self) -> None:
        """Initialize the metrics and the normalisation buffers.

        ``BaseTask.__init__`` calls :meth:`configure_models`,
        :meth:`configure_losses` and this method last, so the buffers of the
        statistics are registered here: ``normalization_mean`` and
        ``normalization_std`` (C, float32; empty while unknown), persistent, so
        they travel with the weights in every ``state_dict``.
        """
        super().configure_metrics()
        self.normalization = None
        self.register_buffer('normalization_mean', torch.empty(0))
        self.register_buffer('normalization_std', torch.empty(0))
        self.register_load_state_dict_post_hook(_sync_normalization)

    def set_normalization(self, normalization: Normalization) -> None:
        """Set the statistics the task's inputs are normalised with.

        :meth:`on_fit_start` calls this with the datamodule's
        ``normalization``; call it by hand for a task trained on other data, so
        that its checkpoints and ``predict`` know the statistics.

        Args:
            normalization: Per-band statistics: one value per input channel (or
                a single value for all of them).

        Raises:
            ValueError: If the band count differs from ``in_channels``.
        """
        if not isinstance(normalization, Normalization):
            raise TypeError(
                f'set_normalization takes a Normalization, got '
                f'{type(normalization).__name__}'
            )
        channels = self.hparams.get('in_channels')
        if channels is not None and normalization.num_bands not in (1, channels):
            raise ValueError(
                f'normalization has {normalization.num_bands} bands but the task '
                f'has in_channels={channels}'
            )
        device = self.normalization_mean.device
        self.normalization = normalization
        self.normalization_mean = torch.tensor(
            normalization.mean, dtype=torch.float32, device=device
        )
        self.normalization_std = torch.tensor(
            normalization.std, dtype=torch.float32, device=device
        )

    def on_fit_start(self) -> None:
        """Take the statistics of the datamodule, if it exposes them.

        A datamodule with a ``normalization`` (every datamodule of this package)
        sets the task's statistics; otherwise those set with
        :meth:`set_normalization` stay, and a warning says when there are none.
        """
        datamodule = getattr(self.trainer, 'datamodule', None)
        normalization = getattr(datamodule, 'normalization', None)
        if isinstance(normalization, Normalization):
            if self.normalization not in (None, normalization):
                rank_zero_warn(
                    f'{type(self).__name__}: the datamodule normalises with '
                    f'{normalization}, not with the statistics set on the task '
                    f"({self.normalization}); the datamodule's are kept"
                )
            self.set_normalization(normalization)
        elif self.normalization is None:
            rank_zero_warn(
                f'{type(self).__name__}: the datamodule has no normalization, so '
                'checkpoints will carry no statistics for predict; call '
                'task.set_normalization(Normalization(mean, std)) before fitting'
            )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Refuse a training batch too small for the BatchNorm layers.

        In training, BatchNorm needs more than one value per channel; the deepest
        layers see ``B * (H / 32) * (W / 32)`` of them, so one 32 x 32 image
        cannot be trained on. Checked before the forward pass, with a message
        that says what to change.

        Args:
            batch: The training batch (``image`` BxCxHxW).
            batch_idx: Index of the batch.

        Raises:
            ValueError: If the deepest BatchNorm layers would see one value per
                channel.
        """
        image = batch.get('image') if isinstance(batch, dict) else None
        if not isinstance(image, Tensor) or image.ndim != 4:
            return
        b, _, h, w = image.shape
        s = self.deepest_stride
        values = b * max(h // s, 1) * max(w // s, 1)
        uses_batchnorm = any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training
            for m in self.modules()
        )
        if values < 2 and uses_batchnorm:
            raise ValueError(
                f'a training batch of {b} image(s) of {h} x {w} px gives the '
                f"model's deepest BatchNorm layers (1/{s} of the input) a single "
                'value per channel, and BatchNorm cannot compute batch statistics '
                'from one value; use a batch size of at least 2 or patches of at '
                f'least {2 * s} px'
            )

    def _check_hparams(self) -> None:
        """Reject settings the Tanimoto-based multitask losses cannot honour.

        Raises:
            ValueError: For an unsupported combination.
        """
        hp = self.hparams
        if hp['task'] != 'multiclass':
            raise ValueError(
                f"{type(self).__name__} supports task='multiclass' only, got "
                f'{hp["task"]!r} (a binary problem is multiclass with 2 classes)'
            )
        if not hp['num_classes'] or hp['num_classes'] < 1:
            raise ValueError(
                f'{type(self).__name__} needs num_classes >= 1 (the real classes, '
                f'without NULL), got {hp["num_classes"]}'
            )
        if hp['num_labels'] is not None:
            raise ValueError('num_labels applies to multilabel tasks only; use None')
        if hp['class_weights'] is not None or hp['pos_weight'] is not None:
            raise ValueError(
                'class_weights and pos_weight are not supported by the Tanimoto '
                'multitask losses; use None'
            )
        labels = hp['labels']
        if labels is not None and len(labels) != hp['num_classes']:
            raise ValueError(
                f'labels has {len(labels)} names but num_classes={hp["num_classes"]}'
            )
        ignore_index = hp['ignore_index']
        if ignore_index is not None and 0 <= ignore_index < hp['num_classes']:
            raise ValueError(
                f'ignore_index={ignore_index} is a real class index; use a value '
                f'outside [0, {hp["num_classes"]}) such as 255'
            )
        if hp['optimizer'] not in ('radam', 'adamw'):
            raise ValueError(
                f"optimizer must be 'radam' or 'adamw', got {hp['optimizer']!r}"
            )
        if hp['lr_schedule'] not in ('constant', 'plateau', 'cosine'):
            raise ValueError(
                "lr_schedule must be 'constant', 'plateau' or 'cosine', got "
                f'{hp["lr_schedule"]!r}'
            )

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """Initialize the optimizer and learning-rate schedule from hparams.

        ``optimizer``: ``'radam'`` (RAdam; the paper uses lr 1e-3, eps 1e-6, no
        weight decay) or ``'adamw'``. ``lr_schedule``: ``'constant'`` (the paper),
        ``'plateau'`` (ReduceLROnPlateau on :attr:`monitor` with ``patience``) or
        ``'cosine'`` (per step down to ``min_lr`` over the trainer's estimated
        steps). ``warmup_steps`` > 0 adds a linear warm-up (constant and cosine).

        Returns:
            Optimizer and, unless constant without warm-up, its scheduler.
        """
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer: Optimizer
        if hp['optimizer'] == 'radam':
            optimizer = RAdam(
                params, lr=hp['lr'], eps=hp['eps'], weight_decay=hp['weight_decay']
            )
        else:
            optimizer = AdamW(
                params, lr=hp['lr'], eps=hp['eps'], weight_decay=hp['weight_decay']
            )
        schedule = hp['lr_schedule']
        warmup = int(hp['warmup_steps'])
        if schedule == 'plateau':
            plateau = ReduceLROnPlateau(optimizer, patience=hp['patience'])
            return {
                'optimizer': optimizer,
                'lr_scheduler': {'scheduler': plateau, 'monitor': self.monitor},
            }
        if schedule == 'constant' and warmup == 0:
            return optimizer
        total = 1
        if schedule == 'cosine':
            total = max(int(self.trainer.estimated_stepping_batches) - warmup, 1)
        min_ratio = hp['min_lr'] / hp['lr'] if hp['lr'] > 0 else 0.0

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if schedule == 'constant':
                return 1.0
            progress = min((step - warmup) / total, 1.0)
            return min_ratio + (1 - min_ratio) * 0.5 * (
                1 + math.cos(math.pi * progress)
            )

        scheduler = LambdaLR(optimizer, factor)
        return {
            'optimizer': optimizer,
            'lr_scheduler': {'scheduler': scheduler, 'interval': 'step'},
        }

    def _log_metrics(self, metrics: Any) -> None:
        """Log and reset a metric collection at the end of an epoch.

        torchmetrics already reduces the states over DDP ranks in ``compute()``, so
        every rank holds the same values; ``sync_dist=True`` only tells Lightning
        so (no "recommended to use sync_dist" warnings under DDP).

        Args:
            metrics: The MetricCollection of the stage.
        """
        self.log_dict(metrics.compute(), sync_dist=True)
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        """Log train metrics."""
        self._log_metrics(self.train_metrics)

    def on_validation_epoch_end(self) -> None:
        """Log validation metrics."""
        self._log_metrics(self.val_metrics)

    def on_test_epoch_end(self) -> None:
        """Log test metrics."""
        self._log_metrics(self.test_metrics)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the statistics and the task's class path in the checkpoint.

        ``checkpoint['normalization']`` is :attr:`normalization` as a plain dict
        (see :meth:`Normalization.from_checkpoint`), when known.

        LightningCLI (``torchgeo fit|validate|test|predict --ckpt_path``) rebuilds
        the model from ``hyper_parameters['_class_path']``, which it only adds
        itself for tasks it instantiated; adding it here makes checkpoints of tasks
        built in Python (e.g. by ``make demo``) usable from the CLI too.
        ``load_from_checkpoint`` ignores the key.

        Args:
            checkpoint: The checkpoint dictionary being saved.
        """
        if self.normalization is not None:
            checkpoint['normalization'] = self.normalization.to_dict()
        hparams = checkpoint.get('hyper_parameters')
        if isinstance(hparams, dict) and '_class_path' not in hparams:
            cls = type(self)
            hparams['_class_path'] = f'{cls.__module__}.{cls.__qualname__}'

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the statistics of a checkpoint (before its weights load).

        The task's own record, else its datamodule's
        (:meth:`Normalization.from_checkpoint`). A ``state_dict`` without the
        normalisation buffers then loads with these statistics in place.

        Args:
            checkpoint: The checkpoint dictionary being loaded.
        """
        normalization = Normalization.from_checkpoint(checkpoint)
        if normalization is not None:
            self.set_normalization(normalization)

    def segmentation(self, maps: Tensor) -> Tensor:
        """The segmentation channels of the real classes (NULL excluded).

        Args:
            maps: B x 3K' x H x W multitask probabilities (K' = K or K + 1).

        Returns:
            B x num_classes x H x W.
        """
        return maps[:, : self.hparams['num_classes']]

    def _should_plot(self, batch_idx: int) -> bool:
        """Whether this validation batch gets a figure (torchgeo's conditions).

        Args:
            batch_idx: Index of the validation batch.

        Returns:
            True if a figure should be logged.
        """
        return bool(
            batch_idx < self.max_plots
            and getattr(self, '_trainer', None) is not None
            and isinstance(getattr(self.trainer, 'datamodule', None), BaseDataModule)
            and self.logger
            and hasattr(self.logger, 'experiment')
            and hasattr(self.logger.experiment, 'add_figure')
        )

    def _denormalise(self, image: Tensor) -> Tensor:
        """Undo the datamodule's normalisation of ``... x C x H x W`` images.

        Args:
            image: Normalised images.

        Returns:
            Images in the dataset's original units.
        """
        datamodule = self.trainer.datamodule
        mean = torch.as_tensor(datamodule.mean, dtype=torch.float32)
        std = torch.as_tensor(datamodule.std, dtype=torch.float32)
        c = image.shape[-3]
        mean = mean.expand(c) if mean.numel() == 1 else mean
        std = std.expand(c) if std.numel() == 1 else std
        image = image.detach().float().cpu()
        return image * std.view(c, 1, 1) + mean.view(c, 1, 1)

    def _log_figure(self, sample: dict[str, Tensor], batch_idx: int) -> None:
        """Plot one sample with the datamodule and log it as ``image/{batch_idx}``.

        Args:
            sample: One unbatched sample, on the CPU, images denormalised.
            batch_idx: Index of the validation batch.
        """
        fig = None
        try:
            fig = self.trainer.datamodule.plot(sample)
        except RGBBandsMissingError:
            pass
        if fig:
            self.logger.experiment.add_figure(  # type: ignore[union-attr]
                f'image/{batch_idx}', fig, global_step=self.global_step
            )
            plt.close(fig)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Load the normalisation buffers whatever their length, or keep them.

        The buffers are empty while the statistics are unknown, so a loaded
        buffer of another length replaces them instead of being a size mismatch,
        and a ``state_dict`` without them (weights converted from elsewhere, or
        saved before the statistics existed) keeps the current ones.
        """
        for name in ('normalization_mean', 'normalization_std'):
            buffer = getattr(self, name)
            value = state_dict.get(prefix + name)
            if value is None:
                state_dict[prefix + name] = buffer
            elif isinstance(value, Tensor) and value.ndim == 1:
                if buffer.shape != value.shape:
                    setattr(self, name, buffer.new_empty(value.shape))
        super()._load_from_state_dict(
            state_dict,
            prefix,
            local_metadata,
            strict,
            missing_keys,
            unexpected_keys,
            error_msgs,
        )

    @staticmethod
    def _first(batch: dict[str, Any], keys: Sequence[str]) -> dict[str, Tensor]:
        """The first sample of a batch, restricted to *keys*, on the CPU.

        Args:
            batch: A batch of tensors.
            keys: The keys to keep (absent ones are skipped).

        Returns:
            The unbatched sample.
        """
        return {
            k: batch[k][0].detach().cpu()
            for k in keys
            if isinstance(batch.get(k), Tensor)
        }


def _sync_normalization(task: MultitaskSegmentationTask, incompatible: Any) -> None:
    """Keep ``task.normalization`` equal to its buffers after ``load_state_dict``.

    Args:
        task: The task whose state was loaded.
        incompatible: The missing and unexpected keys (unused).
    """
    mean, std = task.normalization_mean, task.normalization_std
    if mean.numel() == 0 or mean.shape != std.shape:
        return
    current = task.normalization
    if current is not None and (
        torch.equal(torch.tensor(current.mean, dtype=torch.float32), mean.cpu())
        and torch.equal(torch.tensor(current.std, dtype=torch.float32), std.cpu())
    ):
        return
    task.normalization = Normalization(mean.tolist(), std.tolist())
