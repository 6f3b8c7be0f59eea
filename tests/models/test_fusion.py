import torch

from torchgeo_ssg2.models.fusion import CombineLayers, FuseHiLo, FusionCAT, FusionV2


def test_fusion_v2_broadcasts_target() -> None:
    torch.manual_seed(0)
    fusion = FusionV2(8, heads=2, cgroups=2, grid=4)
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
    layer = FuseHiLo(8, heads=2, cgroups=4, grid=8)
    out = layer(torch.randn(1, 8, 8, 16), torch.randn(1, 8, 32, 64))
    assert out.shape == (1, 8, 32, 64)
