import pytest
import torch

from torchgeo_ssg2.models.attention import (
    RelPatchAttention2D,
    RelPatchAttention3D,
    channel_splits_for,
    spatial_grid,
)


@pytest.mark.parametrize('spatial_size', [64, 128, 256, 384, 512, 1024])
def test_spatial_grid_always_divides(spatial_size: int) -> None:
    for stride in (1, 2, 4, 8, 16, 32):
        grid = spatial_grid(stride, spatial_size)
        for size in range(32, 1025, 32):
            assert (size // stride) % grid == 0


def test_spatial_grid_official_schedule() -> None:
    # 256 px, 96 filters: 16 at full resolution, then 4, 2, 1, 1 for the stages
    assert spatial_grid(1) == 16
    assert [spatial_grid(4 * 2**i) for i in range(4)] == [4, 2, 1, 1]
    assert spatial_grid(1, base=8) == 8
    assert spatial_grid(1, spatial_size=512) == 32
    assert [channel_splits_for(16 * 2**i, 96 * 2**i) for i in range(4)] == [
        16,
        32,
        64,
        128,
    ]
    assert channel_splits_for(16 * 32 / 96, 32) == 4
    assert channel_splits_for(8, 12) == 4


def test_attention_2d_shapes_and_broadcast() -> None:
    torch.manual_seed(0)
    att = RelPatchAttention2D(8, heads=2, channel_splits=2, grid=4)
    assert att.compact.in_features == 2 * 4 * 4
    x1 = torch.randn(2, 3, 8, 16, 24)
    x2 = torch.randn(2, 1, 8, 16, 24)
    out = att(x1, x2)
    assert out.shape == (2, 3, 8, 16, 24)
    assert out.abs().max() <= 0.0963
    expanded = att(
        x1.reshape(6, 8, 16, 24), x2.expand(2, 3, 8, 16, 24).reshape(6, 8, 16, 24)
    )
    torch.testing.assert_close(out.reshape(6, 8, 16, 24), expanded)
    assert att(x1[:, 0]).shape == (2, 8, 16, 24)


def test_attention_2d_bad_grid() -> None:
    att = RelPatchAttention2D(8, heads=2, channel_splits=2, grid=4)
    with pytest.raises(ValueError, match='grid'):
        att(torch.randn(1, 8, 6, 8))
    with pytest.raises(ValueError, match='divisible'):
        RelPatchAttention2D(8, heads=3, channel_splits=2, grid=4)


def test_attention_3d_any_length() -> None:
    torch.manual_seed(0)
    att = RelPatchAttention3D(8, heads=2, grid=2)
    for t in (1, 3):
        x = torch.randn(2, 8, t, 8, 12, requires_grad=True)
        out = att(x)
        assert out.shape == x.shape
        out.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_attention_3d_mean_compaction() -> None:
    # with identical sequence elements every key weight is its mean similarity,
    # so the output does not depend on T for T = 1 vs the same frame repeated
    torch.manual_seed(0)
    att = RelPatchAttention3D(8, heads=2, grid=2).eval()
    frame = torch.randn(1, 8, 1, 8, 8)
    # Conv3d pads in T, so compare the interior frame of a repeated sequence of a
    # 1x1x1-equivalent input: zero the temporal taps except the centre
    with torch.no_grad():
        for conv in (att.query[0], att.key_value[0]):
            conv.weight[:, :, 0].zero_()
            conv.weight[:, :, 2].zero_()
    single = att(frame)
    repeated = att(frame.expand(1, 8, 3, 8, 8).contiguous())
    for t in range(3):
        torch.testing.assert_close(
            repeated[:, :, t], single[:, :, 0], atol=1e-6, rtol=1e-5
        )


@pytest.mark.parametrize('three_d', [False, True])
@pytest.mark.parametrize('chunk', [None, 3])
def test_attention_lean_path_matches_reference(
    three_d: bool, chunk: int | None
) -> None:
    torch.manual_seed(0)
    if three_d:
        att = RelPatchAttention3D(8, heads=2, grid=2).double()
        inputs = (torch.randn(2, 8, 3, 8, 8, dtype=torch.float64),)
    else:
        att = RelPatchAttention2D(8, heads=2, channel_splits=2, grid=2).double()
        inputs = (
            torch.randn(2, 3, 8, 8, 8, dtype=torch.float64),
            torch.randn(2, 1, 8, 8, 8, dtype=torch.float64),
        )
    results = []
    for memory_efficient, chunk_size in ((True, chunk), (False, None)):
        att.memory_efficient, att.chunk_size = memory_efficient, chunk_size
        leaves = [x.clone().requires_grad_(True) for x in inputs]
        out = att(*leaves)
        params = list(att.parameters())
        grads = torch.autograd.grad((out * out.detach().sign()).sum(), leaves + params)
        results.append((out, grads))
    torch.testing.assert_close(results[0][0], results[1][0])
    for gf, gr in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(gf, gr)
