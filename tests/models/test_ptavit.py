import torch

from torchgeo_ssg2.models.ptavit import MBConv, PTAViTBlock, PTAViTStage, PTAViTStage3D


def test_mbconv_shapes_and_residual() -> None:
    assert MBConv(8, 8).residual
    assert not MBConv(8, 8, downsample=True).residual
    assert not MBConv(8, 16).residual
    assert MBConv(8, 16, downsample=True)(torch.randn(2, 8, 16, 12)).shape == (
        2,
        16,
        8,
        6,
    )


def test_block_gate_is_multiplicative() -> None:
    # x * (1 + att): a zero map stays zero through the attention gate
    block = PTAViTBlock(8, 8, heads=2, cgroups=1, grid=2, dropout=0.0).eval()
    x = torch.randn(1, 8, 8, 8)
    y = block.mbconv(x)
    gated = torch.addcmul(y, y, block.att(block.att_norm(y)))
    torch.testing.assert_close(gated, y * (1 + block.att(block.att_norm(y))))
    torch.testing.assert_close(block(x), block.ffn(gated))


def test_stage_shapes_and_groups() -> None:
    torch.manual_seed(0)
    stage = PTAViTStage(8, 16, depth=2, heads=4, cgroups=2, grid=2, downsample=True)
    x = torch.randn(2 * 3, 8, 16, 16)
    out = stage(x, groups=3)
    assert out.shape == (6, 16, 8, 8)
    out.sum().backward()
    assert all(p.grad is not None for p in stage.parameters())


def test_stage_3d_any_length() -> None:
    torch.manual_seed(0)
    stage = PTAViTStage3D(8, depth=2, heads=2, grid=4)
    for t in (1, 2, 5):
        x = torch.randn(1, 8, t, 16, 8)
        assert stage(x).shape == x.shape


def test_stage_3d_mixes_time_steps() -> None:
    torch.manual_seed(0)
    stage = PTAViTStage3D(8, depth=1, heads=2, grid=2).eval()
    x = torch.randn(1, 8, 3, 8, 8)
    y0 = stage(x)
    x2 = x.clone()
    x2[:, :, 2] += 1
    y1 = stage(x2)
    # step 0 sees step 2 through the sequence attention
    assert not torch.allclose(y0[:, :, 0], y1[:, :, 0])
