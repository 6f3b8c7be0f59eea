from functools import partial

import pytest
import torch

from torchgeo_ssg2.models.attention import RelPatchAttention2D, RelPatchAttention3D
from torchgeo_ssg2.models.blocks import PTAViTBlock, PTAViTStage
from torchgeo_ssg2.models.layers import MBConv, MBConv3D, batch_groups


def _stage_2d(
    dim_in: int, dim: int, depth: int, downsample: bool, dropout: float = 0.1
) -> PTAViTStage:
    attention = partial(RelPatchAttention2D, heads=4, channel_splits=2, grid=2)
    return PTAViTStage(
        dim_in, dim, depth, MBConv, attention, downsample=downsample, dropout=dropout
    )


def _stage_3d(dim: int, depth: int, grid: int, dropout: float = 0.1) -> PTAViTStage:
    attention = partial(RelPatchAttention3D, heads=2, grid=grid)
    return PTAViTStage(dim, dim, depth, MBConv3D, attention, dropout=dropout)


def test_block_gate_is_multiplicative() -> None:
    # x * (1 + att): a zero map stays zero through the attention gate
    attention = partial(RelPatchAttention2D, heads=2, channel_splits=1, grid=2)
    block = PTAViTBlock(8, 8, MBConv, attention, dropout=0.0).eval()
    x = torch.randn(1, 8, 8, 8)
    y = block.mbconv(x)
    gated = block.attend(y)
    torch.testing.assert_close(gated, y * (1 + block.att(block.att_norm(y))))
    torch.testing.assert_close(block(x), block.ffn(gated))
    assert block.attend(torch.zeros_like(y)).abs().max() == 0


def test_stage_shapes_and_batch_groups() -> None:
    torch.manual_seed(0)
    stage = _stage_2d(8, 16, depth=2, downsample=True, dropout=0.0)
    x = torch.randn(2 * 3, 8, 16, 16)
    with batch_groups(3):
        out = stage(x)
    assert out.shape == (6, 16, 8, 8)
    out.sum().backward()
    assert all(p.grad is not None for p in stage.parameters())
    # per-group statistics: each support alone gives the same output
    stage.zero_grad()
    folded = x.reshape(2, 3, 8, 16, 16)
    with torch.no_grad(), batch_groups(3):
        grouped = stage(x).reshape(2, 3, 16, 8, 8)
    with torch.no_grad():
        for t in range(3):
            torch.testing.assert_close(
                grouped[:, t], stage(folded[:, t]), atol=1e-5, rtol=1e-4
            )


def test_stage_3d_any_length() -> None:
    torch.manual_seed(0)
    stage = _stage_3d(8, depth=2, grid=4)
    for t in (1, 2, 5):
        x = torch.randn(1, 8, t, 16, 8)
        assert stage(x).shape == x.shape


def test_stage_3d_mixes_time_steps() -> None:
    torch.manual_seed(0)
    stage = _stage_3d(8, depth=1, grid=2).eval()
    x = torch.randn(1, 8, 3, 8, 8)
    y0 = stage(x)
    x2 = x.clone()
    x2[:, :, 2] += 1
    y1 = stage(x2)
    # step 0 sees step 2 through the sequence attention
    assert not torch.allclose(y0[:, :, 0], y1[:, :, 0])


@pytest.mark.parametrize('three_d', [False, True])
def test_stage_grad_checkpointing_same_gradients(three_d: bool) -> None:
    torch.manual_seed(0)
    if three_d:
        stage = _stage_3d(8, depth=2, grid=2, dropout=0.0).double()
        x = torch.randn(2, 8, 3, 8, 8, dtype=torch.float64)
    else:
        stage = _stage_2d(8, 8, depth=2, downsample=False, dropout=0.0).double()
        x = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    params = list(stage.parameters())
    grads = []
    for enable in (False, True):
        stage.grad_checkpointing = enable
        out = stage(x)
        grads.append((out, torch.autograd.grad(out.square().sum(), params)))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)
