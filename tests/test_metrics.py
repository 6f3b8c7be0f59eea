import pytest
import torch

from torchgeo_ssg2.metrics import (
    ThresholdedJaccard,
    binary_jaccard_per_image,
    thresholded_jaccard,
)


def square(top: int, left: int, size: int, shape=(6, 6)) -> torch.Tensor:
    x = torch.zeros(shape, dtype=torch.long)
    x[top : top + size, left : left + size] = 1
    return x


class TestFunctional:
    def test_hand_made_iou(self) -> None:
        truth = square(0, 0, 4)  # 16 pixels
        preds = torch.stack(
            [
                square(0, 0, 4),  # perfect: 1
                square(0, 0, 2),  # 4 / 16 = 0.25
                square(0, 1, 4),  # 12 / 20 = 0.6
                torch.zeros(6, 6, dtype=torch.long),  # 0
            ]
        )
        truths = truth.expand(4, 6, 6)
        iou = binary_jaccard_per_image(preds, truths)
        torch.testing.assert_close(iou, torch.tensor([1.0, 0.25, 0.6, 0.0]))
        scores = thresholded_jaccard(preds, truths)
        torch.testing.assert_close(scores, torch.tensor([1.0, 0.0, 0.0, 0.0]))
        scores = thresholded_jaccard(preds, truths, threshold=0.5)
        torch.testing.assert_close(scores, torch.tensor([1.0, 0.0, 0.6, 0.0]))

    def test_empty_truth(self) -> None:
        empty = torch.zeros(2, 5, 5, dtype=torch.long)
        preds = torch.stack(
            [torch.zeros(5, 5, dtype=torch.long), square(1, 1, 2, (5, 5))]
        )
        torch.testing.assert_close(
            binary_jaccard_per_image(preds, empty), torch.tensor([1.0, 0.0])
        )

    def test_probabilities_and_channel_dim(self) -> None:
        truth = square(0, 0, 4)[None]
        probs = truth[:, None].float() * 0.8 + 0.1  # 0.9 inside, 0.1 outside
        assert binary_jaccard_per_image(probs, truth).item() == 1.0
        assert binary_jaccard_per_image(probs, truth, prediction_threshold=0.95) == 0.0

    def test_ignore_index(self) -> None:
        truth = square(0, 0, 4)[None].clone()
        pred = square(0, 0, 4)[None].clone()
        truth[0, 5, 5] = 255  # counts as lesion (missed) unless ignored
        assert binary_jaccard_per_image(pred, truth).item() < 1
        assert binary_jaccard_per_image(pred, truth, ignore_index=255).item() == 1

    def test_bad_shapes(self) -> None:
        with pytest.raises(ValueError, match='same size'):
            binary_jaccard_per_image(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))


class TestThresholdedJaccard:
    def test_accumulates_over_images(self) -> None:
        metric = ThresholdedJaccard()
        truth = square(0, 0, 4)
        metric.update(torch.stack([truth, square(0, 1, 4)]), truth.expand(2, 6, 6))
        shifted = square(1, 0, 4)  # overlap 12, union 20 -> 0.6 -> 0
        grown = truth.clone()
        grown[4, :4] = 1  # overlap 16, union 20 -> 0.8
        metric.update(torch.stack([shifted, grown]), truth.expand(2, 6, 6))
        assert metric.compute().item() == pytest.approx((1 + 0 + 0 + 0.8) / 4)
        metric.reset()
        with pytest.warns(UserWarning, match='before the ``update``'):
            assert metric.compute().item() == 0
        metric.update(torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long))
        assert metric.compute().item() == 1

    def test_threshold_argument(self) -> None:
        with pytest.raises(ValueError, match='threshold'):
            ThresholdedJaccard(threshold=1.5)
        metric = ThresholdedJaccard(threshold=0.0)
        truth = square(0, 0, 4)
        metric.update(square(0, 0, 2)[None], truth[None])
        assert metric.compute().item() == pytest.approx(0.25)
