"""Segmentation metrics: the ISIC 2018 thresholded Jaccard, and SSG2's head fit.

The ISIC 2018 lesion segmentation task (task 1) scores each image by its Jaccard index
(IoU) between the predicted and the true lesion mask, set to 0 when it falls below
0.65, and averages these per-image scores over the images.

:class:`SetOperationIoU` measures how well SSG2's per-support heads (intersection,
union, difference) fit their own set-operation targets.
"""

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    'SET_OPERATIONS',
    'SetOperationIoU',
    'ThresholdedJaccard',
    'binary_jaccard_per_image',
    'thresholded_jaccard',
]

#: The per-support heads of SSG2 that :class:`SetOperationIoU` scores.
SET_OPERATIONS: tuple[str, ...] = ('intersection', 'union', 'difference')


def _binarise(
    preds: Tensor, target: Tensor, prediction_threshold: float
) -> tuple[Tensor, Tensor]:
    if preds.ndim == target.ndim + 1 and preds.shape[1] == 1:
        preds = preds.squeeze(1)
    if target.ndim == preds.ndim + 1 and target.shape[1] == 1:
        target = target.squeeze(1)
    if preds.shape != target.shape or preds.ndim < 2:
        raise ValueError(
            'ThresholdedJaccard: preds and target must be Bx(1x)HxW masks of the same '
            f'size, got {tuple(preds.shape)} and {tuple(target.shape)}'
        )
    if preds.is_floating_point():
        preds = preds > prediction_threshold
    return preds.reshape(preds.shape[0], -1), target.reshape(target.shape[0], -1)


def binary_jaccard_per_image(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None = None,
    prediction_threshold: float = 0.5,
) -> Tensor:
    """Jaccard index (IoU) of binary masks, one value per image.

    Args:
        preds: predictions, BxHxW or Bx1xHxW: probabilities (binarised with
            ``> prediction_threshold``) or 0/1 labels.
        target: 0/1 ground truth, BxHxW or Bx1xHxW; pixels equal to
            *ignore_index* are excluded and any other non-zero value is foreground.
        ignore_index: label value to exclude, or None.
        prediction_threshold: probability threshold for floating *preds*.

    Returns:
        IoU per image, shape B (float32). An image whose truth and prediction are
        both empty (over its valid pixels) scores 1.
    """
    p, t = _binarise(preds, target, prediction_threshold)
    valid = (
        torch.ones_like(t, dtype=torch.bool)
        if ignore_index is None
        else t != ignore_index
    )
    p = (p != 0) & valid
    t = (t != 0) & valid
    inter = (p & t).sum(dim=1).float()
    union = (p | t).sum(dim=1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def thresholded_jaccard(
    preds: Tensor,
    target: Tensor,
    threshold: float = 0.65,
    ignore_index: int | None = None,
    prediction_threshold: float = 0.5,
) -> Tensor:
    """Per-image thresholded Jaccard index (ISIC 2018): IoU, or 0 below *threshold*.

    Args:
        preds: predictions, BxHxW or Bx1xHxW (see :func:`binary_jaccard_per_image`).
        target: 0/1 ground truth, BxHxW or Bx1xHxW.
        threshold: IoU below which an image scores 0.
        ignore_index: label value to exclude, or None.
        prediction_threshold: probability threshold for floating *preds*.

    Returns:
        scores per image, shape B.
    """
    iou = binary_jaccard_per_image(preds, target, ignore_index, prediction_threshold)
    return torch.where(iou >= threshold, iou, torch.zeros_like(iou))


class ThresholdedJaccard(Metric):
    """Mean over images of the thresholded Jaccard index (ISIC 2018 challenge metric).

    Each image scores its binary IoU when that is at least *threshold* and 0
    otherwise; the metric is the mean score over all images seen. An image with empty
    truth and empty prediction has IoU 1. With no image seen, ``compute`` returns 0.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    score_sum: Tensor
    num_images: Tensor

    def __init__(
        self,
        threshold: float = 0.65,
        ignore_index: int | None = None,
        prediction_threshold: float = 0.5,
        **kwargs: Any,
    ) -> None:
        """Initialise the metric.

        Args:
            threshold: IoU below which an image scores 0 (0.65 in ISIC 2018).
            ignore_index: label value excluded from the IoU, or None.
            prediction_threshold: threshold that binarises probability predictions.
            **kwargs: passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(**kwargs)
        if not 0 <= threshold <= 1:
            raise ValueError(
                f'ThresholdedJaccard: threshold must lie in [0, 1], got {threshold}'
            )
        self.threshold = threshold
        self.ignore_index = ignore_index
        self.prediction_threshold = prediction_threshold
        self.add_state('score_sum', torch.tensor(0.0), dist_reduce_fx='sum')
        self.add_state('num_images', torch.tensor(0), dist_reduce_fx='sum')

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            preds: BxHxW or Bx1xHxW probabilities or 0/1 labels.
            target: BxHxW or Bx1xHxW 0/1 ground truth.
        """
        scores = thresholded_jaccard(
            preds, target, self.threshold, self.ignore_index, self.prediction_threshold
        )
        self.score_sum += scores.sum()
        self.num_images += scores.numel()

    def compute(self) -> Tensor:
        """Return the mean thresholded Jaccard index over the images seen."""
        return self.score_sum / self.num_images.clamp_min(1)


class SetOperationIoU(Metric):
    """IoU of each SSG2 set-operation head against its own target.

    Each head's K = num_classes + 1 segmentation channels (NULL included) are
    thresholded at 0.5 and compared, channel by channel, with the set-operation
    labels built from the target and support masks
    (:func:`torchgeo_ssg2.targets.set_operation_targets`), over the supports and
    valid pixels (target and support both not ignored) of all batches seen. The
    score of a head is the mean of its per-channel IoUs over the channels that
    occur (in the label or the prediction). The mean over channels, rather than one
    IoU over all of them, keeps a degenerate head honest: an intersection head that
    predicts NULL everywhere covers most labelled pixels but scores about 1/K.

    :meth:`compute` returns one value per head: ``{'intersection': ..., 'union': ...,
    'difference': ...}``.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int, threshold: float = 0.5, **kwargs: Any) -> None:
        """Initialise the metric.

        Args:
            num_classes: Number of real classes (the heads carry one more, NULL).
            threshold: Probability above which a channel counts as predicted.
            **kwargs: Passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(**kwargs)
        self.k = num_classes + 1
        self.threshold = threshold
        for name in SET_OPERATIONS:
            # integer pixel counts: exact, on every accelerator (MPS has no
            # float64) and whatever dtype the module is converted to
            zeros = torch.zeros(self.k, dtype=torch.long)
            self.add_state(f'{name}_inter', zeros.clone(), 'sum')
            self.add_state(f'{name}_union', zeros.clone(), 'sum')

    def update(self, outputs: dict[str, Tensor], targets: dict[str, Tensor]) -> None:
        """Accumulate one batch.

        Args:
            outputs: SSG2 outputs with ``intersection``, ``union`` and ``difference``
                B x T x 3K x H x W (probabilities).
            targets: :func:`~torchgeo_ssg2.targets.set_operation_targets` output
                (the same keys, B x T x 3K x H x W, and ``support_valid``
                B x T x 1 x H x W).
        """
        valid = targets['support_valid'] > 0.5
        dims = (0, 1, 3, 4)
        for name in SET_OPERATIONS:
            pred = (outputs[name][:, :, : self.k] > self.threshold) & valid
            label = (targets[name][:, :, : self.k] > 0.5) & valid
            inter = getattr(self, f'{name}_inter')
            union = getattr(self, f'{name}_union')
            inter += (pred & label).sum(dims)
            union += (pred | label).sum(dims)

    def compute(self) -> dict[str, Tensor]:
        """The IoU of each head over the batches seen.

        Returns:
            ``{'intersection': iou, 'union': iou, 'difference': iou}``, each the mean
            per-channel IoU over the channels that occur (0 when none does).
        """
        result = {}
        for name in SET_OPERATIONS:
            inter = getattr(self, f'{name}_inter')
            union = getattr(self, f'{name}_union')
            seen = union > 0
            iou = inter[seen].float() / union[seen].float()
            result[name] = iou.mean() if seen.any() else iou.new_zeros(())
        return result
