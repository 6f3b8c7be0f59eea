import pytest
import torch

from torchgeo_ssg2.metrics import (
    SET_OPERATIONS,
    SetOperationIoU,
    ThresholdedJaccard,
    binary_jaccard_per_image,
    thresholded_jaccard,
)
from torchgeo_ssg2.targets import set_operation_targets


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


class TestSetOperationIoU:
    def _batch(self, ignore: bool = False) -> tuple[dict, dict]:
        g = torch.Generator().manual_seed(0)
        mask = torch.randint(0, 3, (2, 8, 8), generator=g)
        support = torch.randint(0, 3, (2, 2, 8, 8), generator=g)
        if ignore:
            mask[:, :2] = 255
        targets = set_operation_targets(mask, support, 3, 255 if ignore else None)
        outputs = {k: targets[k].clone() for k in SET_OPERATIONS}
        return outputs, targets

    def test_perfect_heads_score_one(self) -> None:
        outputs, targets = self._batch()
        metric = SetOperationIoU(3)
        metric.update(outputs, targets)
        for name, value in metric.compute().items():
            assert value.item() == pytest.approx(1), name

    def test_empty_heads_score_zero_and_partial_in_between(self) -> None:
        outputs, targets = self._batch()
        empty = {k: torch.zeros_like(v) for k, v in outputs.items()}
        metric = SetOperationIoU(3)
        metric.update(empty, targets)
        assert all(v.item() == 0 for v in metric.compute().values())
        # predicting only the NULL channel right: 1 of the channels that occur
        metric = SetOperationIoU(3)
        null_only = {k: torch.zeros_like(v) for k, v in outputs.items()}
        for k in null_only:
            null_only[k][:, :, 3] = targets[k][:, :, 3]
        metric.update(null_only, targets)
        inter = targets['intersection'][:, :, :4]
        occurring = int((inter.sum((0, 1, 3, 4)) > 0).sum())
        got = metric.compute()['intersection']
        assert got.item() == pytest.approx(1 / occurring)
        # a head that predicts NULL everywhere scores low, although NULL covers
        # most labelled pixels
        metric = SetOperationIoU(3)
        all_null = {k: torch.zeros_like(v) for k, v in outputs.items()}
        for v in all_null.values():
            v[:, :, 3] = 1
        metric.update(all_null, targets)
        assert metric.compute()['intersection'].item() < 0.5

    def test_ignored_pixels_do_not_count(self) -> None:
        outputs, targets = self._batch(ignore=True)
        noisy = {k: v.clone() for k, v in outputs.items()}
        for v in noisy.values():
            v[:, :, :, :2] = 1  # every channel "predicted" on the ignored rows
        metric = SetOperationIoU(3)
        metric.update(noisy, targets)
        for name, value in metric.compute().items():
            assert value.item() == pytest.approx(1), name

    def test_accumulates_over_batches(self) -> None:
        outputs, targets = self._batch()
        half = {k: torch.zeros_like(v) for k, v in outputs.items()}
        metric = SetOperationIoU(3)
        metric.update(outputs, targets)
        metric.update(half, targets)
        # every occurring channel: half of its label pixels found, none extra
        assert metric.compute()['union'].item() == pytest.approx(0.5)

    def test_counts_stay_exact_under_a_half_precision_module(self) -> None:
        """Lightning's bf16-true converts the module; pixel counts stay integers."""
        outputs, targets = self._batch()
        metric = SetOperationIoU(3).to(dtype=torch.bfloat16)
        assert metric.union_inter.dtype == torch.long
        # far beyond bf16's exact integers (256): exactly half still
        half = {k: torch.zeros_like(v) for k, v in outputs.items()}
        for _ in range(300):
            metric.update(outputs, targets)
            metric.update(half, targets)
        value = metric.compute()['union']
        assert value.dtype == torch.float32
        assert value.item() == pytest.approx(0.5, abs=1e-6)
