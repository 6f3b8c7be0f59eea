"""Segmentation metrics: the thresholded Jaccard index of the ISIC 2018 challenge.

The ISIC 2018 lesion segmentation task (task 1) scores each image by its Jaccard index
(IoU) between the predicted and the true lesion mask, set to 0 when it falls below
0.65, and averages these per-image scores over the images.
"""

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ['ThresholdedJaccard', 'binary_jaccard_per_image', 'thresholded_jaccard']


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
