import torch

from torchgeo_ssg2.models.fusion import CombineLayers, FuseHiLo, FusionCAT, FusionV2


def test_fusion_v2_broadcasts_target() -> None:
    torch.manual_seed(0)
    fusion = FusionV2(8, heads=2, channel_splits=2, grid=4)
    target = torch.randn(2, 1, 8, 16, 16)
    support = torch.randn(2, 3, 8, 16, 16)
    out = fusion(target, support)
    assert out.shape == (2, 3, 8, 16, 16)
    assert (out >= 0).all()
    for t in range(3):
        torch.testing.assert_close(out[:, t], fusion(target[:, 0], support[:, t]))


def test_fusion_cat() -> None:
    fusion = FusionCAT(16, heads=4)
    assert fusion.fuse[0].groups == 4
    assert fusion(torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)).shape == (
        2,
        16,
        4,
        4,
    )


def test_combine_layers() -> None:
    layer = CombineLayers(8)
    out = layer(torch.randn(2, 16, 4, 6), torch.randn(2, 8, 8, 12))
    assert out.shape == (2, 8, 8, 12)


def test_fuse_hilo() -> None:
    layer = FuseHiLo(8, heads=2, channel_splits=4, grid=8)
    out = layer(torch.randn(1, 8, 8, 16), torch.randn(1, 8, 32, 64))
    assert out.shape == (1, 8, 32, 64)


def test_fuse_hilo_concatenates_hi_then_lo() -> None:
    # the official layout: the merge convolution's first C inputs see the
    # full-resolution skip, so an official checkpoint loads without reordering
    torch.manual_seed(0)
    layer = FuseHiLo(8, heads=2, channel_splits=4, grid=8).eval()
    with torch.no_grad():
        layer.merge[0].weight[:, 8:] = 0  # drop the up-sampled low-resolution half
        x_hi = torch.randn(1, 8, 32, 32)
        a = layer(torch.randn(1, 8, 8, 8), x_hi)
        b = layer(torch.randn(1, 8, 8, 8), x_hi)
    torch.testing.assert_close(a, b)
