import pytest
import torch

from torchgeo_ssg2.models.layers import MBConv, MBConv3D


def test_mbconv_shapes_and_residual() -> None:
    assert MBConv(8, 8).residual
    assert not MBConv(8, 8, downsample=True).residual
    assert not MBConv(8, 16).residual
    out = MBConv(8, 16, downsample=True)(torch.randn(2, 8, 16, 12))
    assert out.shape == (2, 16, 8, 6)


def test_mbconv3d_keeps_shape() -> None:
    torch.manual_seed(0)
    layer = MBConv3D(8, 8, expansion=2)
    x = torch.randn(2, 8, 3, 4, 6)
    assert layer(x).shape == x.shape
    with pytest.raises(ValueError, match='keeps channels'):
        MBConv3D(8, 16)
    with pytest.raises(ValueError, match='keeps channels'):
        MBConv3D(8, 8, downsample=True)
