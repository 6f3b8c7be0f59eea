import pytest
import torch

from torchgeo_ssg2.models.layers import tanimoto
from torchgeo_ssg2.models.layers.tanimoto import (
    patchify,
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
    tokens = patchify(x, splits=2, grid=2)
    assert tokens.shape == (1, 2 * 2 * 2, 2 * 2 * 3)
    # token (channel split 1, grid row 0, grid column 1)
    expected = x[0, 2:4, 0:2, 3:6].reshape(-1)
    torch.testing.assert_close(tokens[0, 1 * 4 + 0 * 2 + 1], expected)


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


def test_automatic_blocks_match_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    # large similarity matrices are processed in blocks of query rows by default
    monkeypatch.setattr(tanimoto, 'BLOCK_ELEMENTS', 24)
    monkeypatch.setattr(tanimoto, 'MIN_BLOCK_ROWS', 2)
    q, k, a, g = _compaction_inputs(7, seed=1)
    assert tanimoto._auto_chunk(q, k) == 2  # 24 // (2 * 3 * 6) -> at least 2 rows
    calls = []
    monkeypatch.setattr(
        tanimoto._ChunkedTanimotoCompaction,
        'apply',
        lambda *args, original=tanimoto._ChunkedTanimotoCompaction.apply: (
            calls.append(args[-1]) or original(*args)
        ),
    )
    _assert_compaction_matches_reference(q, k, a, g, None)
    assert calls == [2]
