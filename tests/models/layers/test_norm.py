import pytest
import torch
from torch import nn

from torchgeo_ssg2.models.layers import (
    BatchNormUpdateRecorder,
    ChannelLayerNorm,
    GroupedBatchNorm,
    batch_groups,
)


def test_channel_layer_norm() -> None:
    norm = ChannelLayerNorm(6)
    x = torch.randn(2, 6, 3, 5)
    expected = nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,)).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)


@pytest.mark.parametrize('groups', [1, 3])
def test_grouped_batch_norm_matches_per_group_calls(groups: int) -> None:
    torch.manual_seed(0)
    b, c = 2, 4
    x = torch.randn(b, groups, c, 5, 5) * 3 + 1
    grouped = GroupedBatchNorm(c)
    with torch.no_grad():
        grouped.weight.uniform_(0.5, 2)
        grouped.bias.uniform_(-1, 1)
    plain = nn.BatchNorm2d(c)
    plain.load_state_dict(grouped.state_dict())
    with batch_groups(groups):
        out = grouped(x.reshape(b * groups, c, 5, 5)).reshape(b, groups, c, 5, 5)
    for t in range(groups):
        torch.testing.assert_close(out[:, t], plain(x[:, t]))
    # running statistics: mean over the groups of the per-group updates
    assert grouped.num_batches_tracked.item() == 1
    mean = x.mean(dim=(0, 3, 4))  # groups x c
    torch.testing.assert_close(grouped.running_mean, 0.1 * mean.mean(0))


def test_grouped_batch_norm_eval_ignores_groups() -> None:
    bn = GroupedBatchNorm(3).eval()
    with torch.no_grad():
        bn.running_mean.fill_(0.5)
        bn.running_var.fill_(2.0)
    x = torch.randn(6, 3, 4, 4)
    with batch_groups(3):
        grouped = bn(x)
    torch.testing.assert_close(grouped, bn(x))
    torch.testing.assert_close(
        grouped, (x - 0.5) / torch.sqrt(torch.tensor(2.0 + 1e-5))
    )


def test_grouped_batch_norm_bad_groups() -> None:
    with pytest.raises(ValueError, match='does not split'), batch_groups(2):
        GroupedBatchNorm(3)(torch.randn(5, 3, 2, 2))
    with pytest.raises(ValueError, match='>= 1'), batch_groups(0):
        pass


def test_batch_groups_end_with_the_context() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, 5) * 3 + 1
    norm = GroupedBatchNorm(4)
    with batch_groups(3):
        grouped = norm(x.reshape(6, 4, 5, 5))
    plain = nn.BatchNorm2d(4)
    torch.testing.assert_close(
        norm(x.reshape(6, 4, 5, 5)), plain(x.reshape(6, 4, 5, 5))
    )
    assert not torch.allclose(grouped, plain(x.reshape(6, 4, 5, 5)))


def test_recorder_defers_and_orders_updates() -> None:
    # two calls recorded as supports 0-1 and 2 replay as per-support updates in
    # support order, one immediate update each: the same buffers as 3 plain calls
    torch.manual_seed(0)
    xs = [torch.randn(2, 4, 3, 3) * (i + 1) + i for i in range(3)]
    norm = GroupedBatchNorm(4, momentum=0.3)
    plain = nn.BatchNorm2d(4, momentum=0.3)
    for x in xs:
        plain(x)
    with BatchNormUpdateRecorder(3) as recorder:
        with batch_groups(2):
            norm(torch.stack(xs[:2], dim=1).reshape(4, 4, 3, 3))
        recorder.start = 2
        norm(xs[2])
        assert int(norm.num_batches_tracked) == 0  # nothing applied yet
    torch.testing.assert_close(norm.running_mean, plain.running_mean)
    torch.testing.assert_close(norm.running_var, plain.running_var)
    assert int(norm.num_batches_tracked) == 3
    norm(xs[0])  # outside the context: an immediate update again
    assert int(norm.num_batches_tracked) == 4


def test_recorder_drops_updates_on_error() -> None:
    norm = GroupedBatchNorm(2)
    with pytest.raises(RuntimeError, match='boom'), BatchNormUpdateRecorder(1):
        norm(torch.randn(3, 2, 2, 2))
        raise RuntimeError('boom')
    assert int(norm.num_batches_tracked) == 0
    torch.testing.assert_close(norm.running_mean, torch.zeros(2))
