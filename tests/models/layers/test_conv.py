import pytest
import torch
from torch import nn

from torchgeo_ssg2.models.layers import DepthwiseConv3d


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
