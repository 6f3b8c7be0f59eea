import pytest
import torch

from torchgeo_ssg2.models.attention import (
    RelPatchAttention2D,
    RelPatchAttention3D,
    channel_groups,
    patchify,
    spatial_grid,
    tanimoto_compaction,
    tanimoto_similarity,
)


def naive_tanimoto(q: torch.Tensor, k: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    # materialised broadcast, the plain definition
    qi = q.unsqueeze(-2)  # ... Nq 1 D
    kj = k.unsqueeze(-3)  # ... 1 Nk D
    dot = (qi * kj).sum(-1)
    return (dot + eps) / ((qi * qi).sum(-1) + (kj * kj).sum(-1) - dot + eps)


def test_tanimoto_matches_definition() -> None:
    q = torch.randn(2, 5, 7, dtype=torch.float64)
    k = torch.randn(2, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(tanimoto_similarity(q, k), naive_tanimoto(q, k))
    sim = tanimoto_similarity(q, q, eps=0.0)
    torch.testing.assert_close(
        sim.diagonal(dim1=-2, dim2=-1), torch.ones(2, 5, dtype=torch.float64)
    )
    assert sim.min() >= -1 / 3 - 1e-9 and sim.max() <= 1 + 1e-9


def test_patchify_layout() -> None:
    x = torch.arange(4 * 4 * 6, dtype=torch.float32).reshape(1, 4, 4, 6)
    tokens = patchify(x, cgroups=2, grid=2)
    assert tokens.shape == (1, 2 * 2 * 2, 2 * 2 * 3)
    # token (channel group 1, grid row 0, grid column 1)
    expected = x[0, 2:4, 0:2, 3:6].reshape(-1)
    torch.testing.assert_close(tokens[0, 1 * 4 + 0 * 2 + 1], expected)


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
    assert [channel_groups(16 * 2**i, 96 * 2**i) for i in range(4)] == [16, 32, 64, 128]
    assert channel_groups(16 * 32 / 96, 32) == 4
    assert channel_groups(8, 12) == 4


def test_attention_2d_shapes_and_broadcast() -> None:
    torch.manual_seed(0)
    att = RelPatchAttention2D(8, heads=2, cgroups=2, grid=4)
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
    att = RelPatchAttention2D(8, heads=2, cgroups=2, grid=4)
    with pytest.raises(ValueError, match='grid'):
        att(torch.randn(1, 8, 6, 8))
    with pytest.raises(ValueError, match='divisible'):
        RelPatchAttention2D(8, heads=3, cgroups=2, grid=4)


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


def _compaction_inputs(
    nq: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator]:
    # q for 3 supports against the target's keys broadcast over them
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, nq, 4, dtype=torch.float64, generator=g).requires_grad_(True)
    k = torch.randn(2, 1, 6, 4, dtype=torch.float64, generator=g).requires_grad_(True)
    a = torch.randn(nq, dtype=torch.float64, generator=g).requires_grad_(True)
    return q, k, a, g


def _assert_compaction_matches_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    a: torch.Tensor,
    g: torch.Generator,
    chunk: int | None,
) -> None:
    # the lean path against plain autograd: values, gradients, no-grad values
    fast = tanimoto_compaction(q, k, a, chunk_size=chunk)
    ref = tanimoto_compaction(q, k, a, memory_efficient=False)
    torch.testing.assert_close(fast, ref)
    upstream = torch.randn(*ref.shape, dtype=torch.float64, generator=g)
    grads = torch.autograd.grad((fast * upstream).sum(), (q, k, a))
    grads_ref = torch.autograd.grad((ref * upstream).sum(), (q, k, a))
    for gf, gr in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(gf, gr)
    with torch.no_grad():
        torch.testing.assert_close(tanimoto_compaction(q, k, a, chunk_size=chunk), ref)


@pytest.mark.parametrize('chunk', [None, 1, 2, 4])
def test_compaction_matches_reference(chunk: int | None) -> None:
    # None: one block whose dot products are kept; else blocks recomputed
    q, k, a, g = _compaction_inputs(5, seed=0)
    assert torch.autograd.gradcheck(
        lambda q, k, a: tanimoto_compaction(q, k, a, chunk_size=chunk), (q, k, a)
    )
    _assert_compaction_matches_reference(q, k, a, g, chunk)


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
        att = RelPatchAttention2D(8, heads=2, cgroups=2, grid=2).double()
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


def test_automatic_blocks_match_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    # large similarity matrices are processed in blocks of query rows by default
    from torchgeo_ssg2.models import attention

    monkeypatch.setattr(attention, 'BLOCK_ELEMENTS', 24)
    monkeypatch.setattr(attention, 'MIN_BLOCK_ROWS', 2)
    q, k, a, g = _compaction_inputs(7, seed=1)
    assert attention._auto_chunk(q, k) == 2  # 24 // (2 * 3 * 6) -> at least 2 rows
    calls = []
    monkeypatch.setattr(
        attention._ChunkedTanimotoCompaction,
        'apply',
        lambda *args, original=attention._ChunkedTanimotoCompaction.apply: (
            calls.append(args[-1]) or original(*args)
        ),
    )
    _assert_compaction_matches_reference(q, k, a, g, None)
    assert calls == [2]
