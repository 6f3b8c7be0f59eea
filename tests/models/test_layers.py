import pytest
import torch
from torch import nn

from torchgeo_ssg2.models.layers import (
    ChannelLayerNorm,
    DepthwiseConv3d,
    GroupedBatchNorm,
    SigmoidCrisp,
    d2sigmoid,
)


def test_d2sigmoid_formula_and_range() -> None:
    x = torch.linspace(-20, 20, 2001, dtype=torch.float64)
    s = torch.sigmoid(x)
    expected = s * (1 - s) * (2 * s - 1)
    torch.testing.assert_close(d2sigmoid(x), expected)
    assert d2sigmoid(x).abs().max() < 0.0963
    # minus the second derivative of the sigmoid
    xg = x.clone().requires_grad_(True)
    (ds,) = torch.autograd.grad(torch.sigmoid(xg).sum(), xg, create_graph=True)
    (d2s,) = torch.autograd.grad(ds.sum(), xg)
    torch.testing.assert_close(d2sigmoid(x), -d2s)


def test_d2sigmoid_gradcheck() -> None:
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True) * 4
    assert torch.autograd.gradcheck(d2sigmoid, (x.detach().requires_grad_(True),))


def test_d2sigmoid_extreme_inputs_finite() -> None:
    x = torch.tensor([-1e4, -100.0, 0.0, 100.0, 1e4], requires_grad=True)
    y = d2sigmoid(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


def test_sigmoid_crisp() -> None:
    act = SigmoidCrisp()
    x = torch.randn(2, 3, 4, 4)
    y = act(x)
    temperature = 0.01 + torch.sigmoid(torch.tensor(1.0))
    torch.testing.assert_close(y, torch.sigmoid(x / temperature))
    y.sum().backward()
    assert act.gamma.grad is not None and act.gamma.grad.abs() > 0


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
    out = grouped(x.reshape(b * groups, c, 5, 5), groups).reshape(b, groups, c, 5, 5)
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
    torch.testing.assert_close(bn(x, 3), bn(x, 1))
    torch.testing.assert_close(
        bn(x, 3), (x - 0.5) / torch.sqrt(torch.tensor(2.0 + 1e-5))
    )


def test_grouped_batch_norm_bad_groups() -> None:
    with pytest.raises(ValueError, match='does not split'):
        GroupedBatchNorm(3)(torch.randn(5, 3, 2, 2), 2)


@pytest.mark.parametrize('bias', [True, False])
def test_depthwise_conv3d_fast_matches_plain(bias: bool) -> None:
    torch.manual_seed(0)
    conv = DepthwiseConv3d(6, 3, bias=bias).double()
    x = torch.randn(2, 6, 3, 8, 10, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 6, 3, 8, 10, dtype=torch.float64)
    results = []
    for fast in (False, True):
        conv.fast = fast
        y = conv(x)
        grads = torch.autograd.grad(y, [x, *conv.parameters()], g)
        results.append((y, grads))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-12, rtol=1e-10)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    reference = nn.functional.conv3d(x, conv.weight, conv.bias, padding=1, groups=6)
    torch.testing.assert_close(results[1][0], reference)


def test_depthwise_conv3d_gradcheck_and_autocast() -> None:
    torch.manual_seed(0)
    conv = DepthwiseConv3d(2, 3).double()
    x = torch.randn(1, 2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (x,))
    conv.float()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = conv(x.float().detach().requires_grad_())
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.dtype == torch.float32
    with pytest.raises(ValueError, match='odd'):
        DepthwiseConv3d(2, 2)
