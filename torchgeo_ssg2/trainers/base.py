"""Shared parts of the SSG2 and PTAViT tasks: optimisers, metrics, statistics, plots."""

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

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
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    Accuracy,
    F1Score,
    JaccardIndex,
    Precision,
    Recall,
)
from torchmetrics.wrappers import ClasswiseWrapper

from ..metrics import ThresholdedJaccard
from ..normalization import Normalization

__all__ = ('MultitaskSegmentationTask', 'normalise_probabilities', 'normalised_entropy')

#: Lightning's instantiator of CLI-made checkpoints (its allow-listed name).
_INSTANTIATOR = 'lightning.pytorch.cli.instantiate_module'


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


def normalised_entropy(probabilities: Tensor) -> Tensor:
    """Per-pixel uncertainty: the entropy of the class distribution over log(C).

    Args:
        probabilities: B x C x H x W probabilities that sum to one over C.

    Returns:
        B x H x W uncertainty in [0, 1]: 0 where one class takes all the
        probability, 1 where all classes are equally likely (0 for C = 1).
    """
    c = probabilities.shape[1]
    if c < 2:
        return probabilities.new_zeros(
            probabilities.shape[:1] + probabilities.shape[2:]
        )
    p = probabilities.float().clamp_min(1e-12)
    return (-(p * p.log()).sum(dim=1) / math.log(c)).clamp(0, 1)


class MultitaskSegmentationTask(SemanticSegmentation):
    """Base of :class:`SSG2Task` and :class:`PTAViTTask` (not used directly).

    The shared signature: torchgeo's semantic-segmentation hyper-parameter names
    (``model``, ``in_channels``, ``task``, ``num_classes``, ``labels``, ``loss``,
    ``ignore_index``, ``lr``, ``patience``) and this package's model, loss and
    optimiser options. ``SemanticSegmentation.__init__`` runs torchgeo's
    template (``save_hyperparameters``, then :meth:`configure_models`,
    :meth:`configure_losses` and :meth:`configure_metrics`); its smp-only
    arguments (``backbone``, ``weights``, ``class_weights``, ...) are not
    arguments of these tasks and stay out of ``hparams`` (:attr:`ignore`).

    Subclasses set :attr:`model_name`, define ``configure_models`` and
    ``configure_losses``, and add only the arguments of their own (keyword-only,
    the rest passed on as ``**kwargs``). This class provides:

    * metrics: torchgeo's over the ``num_classes`` real classes only, i.e.
      ``OverallAccuracy``, ``AverageJaccardIndex`` (mean IoU), ``AverageF1Score``
      (mean F1), the ``Classwise*`` per-class values and the precision/recall
      variants, with ``ignore_index`` honoured;
    * optimisers: RAdam (the paper's) or AdamW, optional weight decay, and a
      constant, plateau or cosine learning-rate schedule with linear warm-up;
    * the normalisation statistics, kept with the weights;
    * validation figures through the datamodule's ``plot()``.
    """

    #: The one model the task trains (the accepted value of ``model``).
    model_name: ClassVar[str]

    #: Largest number of validation batches plotted per epoch.
    max_plots = 10

    #: Stride of the models' deepest feature map: an input of H x W pixels gives
    #: (H / 32) x (W / 32) values per channel to the last BatchNorm layers.
    deepest_stride = 32

    #: The statistics the inputs are normalised with (None until known).
    normalization: Normalization | None

    def __init__(
        self,
        model: str | None = None,
        preset: str = 'tiny',
        model_kwargs: dict[str, Any] | None = None,
        in_channels: int = 3,
        task: Literal['multiclass'] = 'multiclass',
        num_classes: int | None = None,
        labels: list[str] | None = None,
        loss: Literal['tanimoto'] = 'tanimoto',
        loss_depth: int = 0,
        loss_mode: Literal['exact', 'avg'] = 'exact',
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
        """Initialize a new task instance.

        Args:
            model: Model name: None or the task's :attr:`model_name` (``'ssg2'``
                for SSG2Task, ``'ptavit'`` for PTAViTTask).
            preset: Model preset: 'paper', 'small', 'tiny' or 'test' (see
                :func:`torchgeo_ssg2.models.list_presets`).
            model_kwargs: Overrides of the preset's
                :class:`~torchgeo_ssg2.models.ModelConfig` fields (e.g.
                ``{'spatial_size': 64}``).
            in_channels: Number of input channels.
            task: Only 'multiclass' (binary problems are 2-class multiclass).
            num_classes: Number of real classes (SSG2 adds NULL itself).
            labels: Class names, for the per-class metric names.
            loss: Loss name (only 'tanimoto': fractal Tanimoto with complement).
            loss_depth: Fractal depth of the Tanimoto similarity (0 in the paper).
            loss_mode: 'exact' or 'avg' fractal Tanimoto.
            ignore_index: Mask value excluded from losses and metrics (must not be
                a real class index).
            optimizer: 'radam' (the paper's) or 'adamw'.
            lr: Learning rate (1e-3 in the paper).
            eps: Optimizer epsilon (1e-6 in the paper, safe for mixed precision).
            weight_decay: Weight decay (0 in the paper).
            lr_schedule: 'constant' (the paper), 'plateau' or 'cosine'.
            warmup_steps: Linear warm-up steps (constant and cosine schedules).
            min_lr: Final learning rate of the cosine schedule.
            patience: Patience of the plateau schedule.

        Raises:
            ValueError: For unsupported or inconsistent arguments.
        """
        super().__init__(
            model=model,  # type: ignore[arg-type]
            in_channels=in_channels,
            task=task,
            num_classes=num_classes,
            labels=labels,
            loss=loss,  # type: ignore[arg-type]
            ignore_index=ignore_index,
            lr=lr,
            patience=patience,
        )

    #: Arguments of ``SemanticSegmentation.__init__`` that these tasks do not
    #: take; ``save_hyperparameters`` leaves them out of ``hparams``.
    ignore = tuple(
        sorted(
            set(inspect.signature(SemanticSegmentation.__init__).parameters)
            - set(inspect.signature(__init__).parameters)
        )
    )

    def configure_metrics(self) -> None:
        """Initialize the metrics and the normalisation buffers.

        The metrics are torchgeo's (those of
        :meth:`ClassificationMixin.configure_metrics`, under the same names) for
        a multiclass task over the ``num_classes`` real classes; a task of two
        classes (background and foreground, as ISIC's lesions) also logs
        ``ThresholdedJaccard``, the ISIC 2018 challenge's score of class 1
        (:class:`~torchgeo_ssg2.metrics.ThresholdedJaccard`).

        ``BaseTask.__init__`` calls :meth:`configure_models`,
        :meth:`configure_losses` and this method last, so the buffers of the
        statistics are registered here: ``normalization_mean`` and
        ``normalization_std`` (C, float32; empty while unknown), persistent, so
        they travel with the weights in every ``state_dict``.
        """
        hp = self.hparams
        kwargs: dict[str, Any] = {
            'task': 'multiclass',
            'num_classes': hp['num_classes'],
            'ignore_index': hp['ignore_index'],
        }
        metrics: dict[str, Metric | MetricCollection] = {}
        for metric in (Accuracy, Precision, Recall, F1Score, JaccardIndex):
            name = metric.__name__
            metrics[f'Overall{name}'] = metric(average='micro', **kwargs)
            metrics[f'Average{name}'] = metric(average='macro', **kwargs)
            metrics[name] = ClasswiseWrapper(
                metric(average='none', **kwargs),
                labels=hp['labels'],
                prefix=f'Classwise{name}_',
            )
        if hp['num_classes'] == 2:
            metrics['ThresholdedJaccard'] = ThresholdedJaccard(
                ignore_index=hp['ignore_index']
            )
        collection = MetricCollection(metrics)
        self.train_metrics = collection.clone(prefix='train_')
        self.val_metrics = collection.clone(prefix='val_')
        self.test_metrics = collection.clone(prefix='test_')
        self.normalization = None
        self.register_buffer('normalization_mean', torch.empty(0))
        self.register_buffer('normalization_std', torch.empty(0))
        self.register_load_state_dict_post_hook(_sync_normalization)

    def setup(self, stage: str) -> None:
        """Refuse a trainer that would replace the per-support BatchNorm layers.

        ``Trainer(sync_batchnorm=True)`` turns every BatchNorm layer into a
        ``SyncBatchNorm`` when fitting with several processes, and those compute
        one set of statistics over the whole folded batch instead of one per
        support (:class:`~torchgeo_ssg2.models.layers.GroupedBatchNorm`).

        Args:
            stage: 'fit', 'validate', 'test' or 'predict'.

        Raises:
            ValueError: If a trainer configured with ``sync_batchnorm`` fits.
        """
        if stage != 'fit':
            return
        # Trainer(sync_batchnorm=True) is kept only as its connector's layer sync
        connector = getattr(self.trainer, '_accelerator_connector', None)
        if getattr(connector, '_layer_sync', None) is not None:
            raise ValueError(
                f'{type(self).__name__} cannot train with trainer.sync_batchnorm: '
                'true: SyncBatchNorm would replace the BatchNorm layers that keep '
                'statistics per support image; set trainer.sync_batchnorm: false'
            )

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
        """Reject settings the Tanimoto-based multitask tasks cannot honour.

        Called first by :meth:`configure_models`, before anything is built.

        Raises:
            ValueError: For an unsupported combination.
        """
        hp = self.hparams
        name = type(self).__name__
        if hp['model'] not in (None, self.model_name):
            raise ValueError(
                f'{name} supports model={self.model_name!r} only, got {hp["model"]!r}'
            )
        if hp['task'] != 'multiclass':
            raise ValueError(
                f"{name} supports task='multiclass' only, got "
                f'{hp["task"]!r} (a binary problem is multiclass with 2 classes)'
            )
        if hp['loss'] != 'tanimoto':
            raise ValueError(
                f"{name} supports loss='tanimoto' only, got {hp['loss']!r}"
            )
        if not hp['num_classes'] or hp['num_classes'] < 1:
            raise ValueError(
                f'{name} needs num_classes >= 1 (the real classes, '
                f'without NULL), got {hp["num_classes"]}'
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
        itself (with ``_instantiator``) for tasks it instantiated; adding both
        here makes checkpoints of tasks built in Python (e.g. by ``make demo``)
        usable from the CLI too, and ``load_from_checkpoint`` rebuilds every
        checkpoint the same way, through Lightning's CLI instantiator (which
        follows ``SSG2Task``'s ``**kwargs`` to the shared arguments).

        Args:
            checkpoint: The checkpoint dictionary being saved.
        """
        if self.normalization is not None:
            checkpoint['normalization'] = self.normalization.to_dict()
        hparams = checkpoint.get('hyper_parameters')
        if isinstance(hparams, dict) and '_class_path' not in hparams:
            cls = type(self)
            hparams['_class_path'] = f'{cls.__module__}.{cls.__qualname__}'
            hparams.setdefault('_instantiator', _INSTANTIATOR)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the statistics of a checkpoint (before its weights load).

        The task's own record, else its datamodule's
        (:meth:`Normalization.from_checkpoint`). A ``state_dict`` without the
        normalisation buffers then loads with these statistics in place. The
        checkpoint's ``normalization`` and ``datamodule_hyper_parameters`` are
        kept as :attr:`checkpoint_record` (prediction reads its statistics and
        class names there).

        Args:
            checkpoint: The checkpoint dictionary being loaded.
        """
        normalization = Normalization.from_checkpoint(checkpoint)
        if normalization is not None:
            self.set_normalization(normalization)
        # what prediction reads of a checkpoint Lightning restored (ckpt_path),
        # so that it need not load the file again
        self.checkpoint_record = {
            key: checkpoint[key]
            for key in ('normalization', 'datamodule_hyper_parameters')
            if key in checkpoint
        }

    def segmentation(self, maps: Tensor) -> Tensor:
        """The segmentation channels of the real classes (NULL excluded).

        Args:
            maps: B x 3K' x H x W multitask probabilities (K' = K or K + 1).

        Returns:
            B x num_classes x H x W.
        """
        return maps[:, : self.hparams['num_classes']]

    def update_metrics(self, stage: str, maps: Tensor, mask: Tensor) -> None:
        """Update a stage's metrics with the predicted classes of a batch.

        The class map is computed once here and handed to every metric as
        integer labels; only ``update`` runs (the values are computed and
        logged at the end of the epoch), so the 15 metrics of a collection
        cost one arg-max per batch instead of one each plus a per-batch
        ``compute``.

        Args:
            stage: 'train', 'val' or 'test'.
            maps: B x 3K' x H x W multitask probabilities (K' = K or K + 1).
            mask: B x H x W integer labels.
        """
        predicted = self.segmentation(maps).argmax(dim=1)
        getattr(self, f'{stage}_metrics').update(predicted, mask)

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

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Any:
        """Apply a move or cast to every tensor; the statistics stay float32.

        Lightning's ``bf16-true`` and ``16-true`` precisions convert the whole
        module (``module.to(dtype=...)``), which would round the statistics
        that checkpoints and prediction read; they follow the device only.

        Args:
            fn: The function applied to each parameter and buffer.
            recurse: Whether to apply it to the submodules too.

        Returns:
            The task.
        """
        kept = {name: self._buffers[name] for name in _STATISTICS}
        super()._apply(fn, recurse)
        for name, value in kept.items():
            moved = self._buffers[name]
            if value is not None and moved is not None:
                self._buffers[name] = value.to(device=moved.device)
        return self

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
        for name in _STATISTICS:
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


#: The buffers of the normalisation statistics (C each, float32).
_STATISTICS = ('normalization_mean', 'normalization_std')


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
