import pytest
import torch

from torchgeo_ssg2.models.heads import (
    ConditionedMultitaskHead,
    hamacher_conorm,
    hamacher_tnorm,
)


@pytest.mark.parametrize('k', [1, 4])
def test_multitask_head_outputs(k: int) -> None:
    torch.manual_seed(0)
    head = ConditionedMultitaskHead(8, k)
    out = head(torch.randn(2, 8, 8, 12))
    assert out.shape == (2, 3 * k, 8, 12)
    assert (out >= 0).all() and (out <= 1).all()
    segm, bound, dist = out[:, :k], out[:, k : 2 * k], out[:, 2 * k :]
    if k > 1:
        # distance: softmax over classes; segmentation: independent sigmoids
        torch.testing.assert_close(dist.sum(1), torch.ones(2, 8, 12))
        assert not torch.allclose(segm.sum(1), torch.ones(2, 8, 12))
    assert bound.shape == dist.shape


def test_multitask_head_softmax_segmentation() -> None:
    head = ConditionedMultitaskHead(8, 3, segm_act='softmax')
    out = head(torch.randn(1, 8, 4, 4))
    torch.testing.assert_close(out[:, :3].sum(1), torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match='segm_act'):
        ConditionedMultitaskHead(8, 3, segm_act='relu')


def test_hamacher() -> None:
    x = torch.rand(100, dtype=torch.float64)
    y = torch.rand(100, dtype=torch.float64)
    ones, zeros = torch.ones_like(x), torch.zeros_like(x)
    torch.testing.assert_close(hamacher_tnorm(x, ones), x, atol=1e-4, rtol=0)
    torch.testing.assert_close(hamacher_tnorm(x, zeros), zeros)
    torch.testing.assert_close(hamacher_conorm(x, zeros), x, atol=1e-4, rtol=0)
    torch.testing.assert_close(hamacher_conorm(x, ones), ones)
    torch.testing.assert_close(hamacher_tnorm(x, y), hamacher_tnorm(y, x))
    # Hamacher product at p -> 0: xy / (x + y - xy)
    torch.testing.assert_close(
        hamacher_tnorm(x, y), x * y / (x + y - x * y), atol=1e-4, rtol=0
    )
    assert (hamacher_tnorm(x, y) <= torch.minimum(x, y) + 1e-12).all()
    assert (hamacher_conorm(x, y) >= torch.maximum(x, y) - 1e-12).all()
