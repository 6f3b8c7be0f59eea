"""The Tanimoto similarity kernel of the PTAViT attention.

Query and key tokens (see :func:`patchify`) are compared pairwise with the
Tanimoto similarity and the similarities compacted over the query axis into one
weight per key token (:func:`tanimoto_compaction`). The lean path computes this
with a custom autograd function that keeps only the dot products for backward,
or, in blocks of query rows, no Nq x Nk tensor at all; the plain autograd path
is the reference.
"""

import math
from collections.abc import Iterator
from contextlib import nullcontext

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

__all__ = (
    'BLOCK_ELEMENTS',
    'EPS',
    'MIN_BLOCK_ROWS',
    'patchify',
    'scale_patches',
    'tanimoto_compaction',
    'tanimoto_similarity',
)

#: numerical guard of the Tanimoto similarity
EPS = 1e-5


def patchify(x: Tensor, splits: int, grid: int) -> Tensor:
    """Cut the trailing CxHxW axes of ``x`` into patch tokens.

    Args:
        x: ...xCxHxW tensor (any number of leading axes).
        splits: channel splits ``s`` (must divide C).
        grid: spatial grid ``g`` (must divide H and W).

    Returns:
        ...xNxD tokens with ``N = s·g·g`` and ``D = (C/s)·(H/g)·(W/g)``,
        ordered (channel split, grid row, grid column).
    """
    *lead, c, h, w = x.shape
    x = x.reshape(*lead, splits, c // splits, grid, h // grid, grid, w // grid)
    n = len(lead)
    x = x.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3, n + 5)
    return x.reshape(*lead, splits * grid * grid, -1)


def scale_patches(v: Tensor, weight: Tensor, splits: int, grid: int) -> Tensor:
    """Multiply every patch of ``v`` by its token weight (without patchifying v).

    Args:
        v: ...xCxHxW values.
        weight: ...xN token weights, N = splits·grid² (leading axes broadcast).
        splits: channel splits.
        grid: spatial grid.

    Returns:
        the broadcast ...xCxHxW product.
    """
    *lead, c, h, w = v.shape
    v = v.reshape(*lead, splits, c // splits, grid, h // grid, grid, w // grid)
    weight = weight.reshape(*weight.shape[:-1], splits, 1, grid, 1, grid, 1)
    out = v * weight
    return out.reshape(*out.shape[:-6], c, h, w)


def tanimoto_similarity(q: Tensor, k: Tensor, eps: float = EPS) -> Tensor:
    """Tanimoto similarity of every query token with every key token.

    ``S_ij = (<q_i,k_j> + eps) / (|q_i|² + |k_j|² - <q_i,k_j> + eps)``, computed
    through one batched matrix product.

    Args:
        q: ...xNqxD query tokens.
        k: ...xNkxD key tokens (leading axes broadcast against q's).
        eps: numerical guard.

    Returns:
        ...xNqxNk similarities in ``[-1/3, 1]`` (1 for identical tokens).
    """
    qk = torch.matmul(q, k.transpose(-1, -2))
    qq = q.square().sum(-1).unsqueeze(-1)
    kk = k.square().sum(-1).unsqueeze(-2)
    return (qk + eps) / (qq + kk - qk + eps)


#: Similarities per block of the blocked compaction (8 MB in float32): the
#: element-wise work on a block stays in cache instead of streaming whole Nq x Nk
#: matrices through memory (3x faster for 4 x 4096 x 4096 on one CPU core).
BLOCK_ELEMENTS = 2**21

#: Smallest automatic block (query rows): smaller blocks make thin matrix products.
MIN_BLOCK_ROWS = 64


def _auto_chunk(q: Tensor, k: Tensor) -> int:
    """Query rows per block so that a block holds about :data:`BLOCK_ELEMENTS`."""
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]).numel()
    rows = BLOCK_ELEMENTS // max(1, lead * k.shape[-2])
    return max(MIN_BLOCK_ROWS, rows)


def _buffer(
    store: dict[str, Tensor], name: str, shape: tuple[int, ...], like: Tensor
) -> Tensor:
    """A contiguous ``shape`` tensor in ``store[name]``'s storage, grown on demand.

    The blocks of one compaction reuse the same storage: a fresh multi-megabyte
    allocation per block costs page faults that take longer than the arithmetic.
    """
    numel = math.prod(shape)
    buf = store.get(name)
    if buf is None or buf.numel() < numel:
        buf = store[name] = like.new_empty(numel)
    return buf[:numel].view(shape)


def _matmul(x: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
    """``x @ y`` without materialising a broadcast ``y``.

    ``torch.matmul`` expands both operands to the common leading shape, which
    copies ``y`` once per broadcast index (e.g. the target's keys once per
    support). When ``y``'s broadcast axes are trailing leading axes, they are
    folded into ``x``'s rows instead: one matrix product, no copy of ``y``.

    Args:
        x: ...xmxn tensor.
        y: ...xnxp tensor (leading axes broadcast against x's).
        out: optional contiguous ...xmxp result tensor.

    Returns:
        the ...xmxp product.
    """
    lead = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    n = len(lead)
    ylead = (1,) * (n - y.dim() + 2) + tuple(y.shape[:-2])
    fold = [i for i in range(n) if ylead[i] == 1 and lead[i] > 1]
    if not fold or fold != list(range(n - len(fold), n)):
        return torch.matmul(x, y) if out is None else torch.matmul(x, y, out=out)
    keep = n - len(fold)
    rows = x.expand(*lead, *x.shape[-2:]).reshape(*lead[:keep], -1, x.shape[-1])
    y = y.reshape(*ylead[:keep], *y.shape[-2:])
    if out is None:
        out = torch.matmul(rows, y)
    else:
        torch.matmul(rows, y, out=out.view(*lead[:keep], -1, y.shape[-1]))
    return out.reshape(*lead, x.shape[-2], y.shape[-1])


def _weighted_rows(a: Tensor, sim: Tensor) -> Tensor:
    """``sum_i a_i sim[..., i, :]`` as one ``bmm`` (``matmul`` would copy ``sim^T``).

    Args:
        a: c row weights.
        sim: ...xcxNk block.

    Returns:
        the ...xNk weighted sum.
    """
    flat = sim.reshape(-1, *sim.shape[-2:])
    rows = a.reshape(1, 1, -1).expand(flat.shape[0], 1, -1)
    return torch.bmm(rows, flat).reshape(*sim.shape[:-2], sim.shape[-1])


class _Blocks:
    """Blocks of query rows of one compaction, with shared norms and buffers."""

    def __init__(self, q: Tensor, k: Tensor, eps: float, chunk: int) -> None:
        self.q, self.k, self.eps, self.chunk = q, k, eps, chunk
        self.lead = tuple(torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]))
        self.qq = q.square().sum(-1, keepdim=True)  # ...xNqx1
        self.kk = k.square().sum(-1).unsqueeze(-2).add_(eps)  # ...x1xNk, + eps
        self.kt = k.transpose(-1, -2).contiguous()  # ...xDxNk
        self.store: dict[str, Tensor] = {}

    def __iter__(self) -> Iterator[slice]:
        nq = self.q.shape[-2]
        return (slice(i, i + self.chunk) for i in range(0, nq, self.chunk))

    def dots(self, rows: slice, reuse: bool = True) -> Tensor:
        """``<q_i, k_j>`` of a block, ...xcxNk (in a reused buffer if ``reuse``)."""
        qc = self.q[..., rows, :]
        shape = (*self.lead, qc.shape[-2], self.k.shape[-2])
        out = _buffer(self.store, 'qk', shape, self.q) if reuse else None
        return _matmul(qc, self.kt, out)

    def similarity(
        self, qk: Tensor, rows: slice, inverse: bool, keep: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Similarities of a block and its (reciprocal) denominators.

        Args:
            qk: the block's dot products (overwritten unless ``keep``).
            rows: the block's query rows.
            inverse: return ``1 / den`` (for backward) instead of ``den``.
            keep: leave ``qk`` unchanged.

        Returns:
            ...xcxNk similarities and ``|q|² + |k|² - <q,k> + eps`` (or its
            reciprocal), both in buffers reused by the next block.
        """
        den = _buffer(self.store, 'den', tuple(qk.shape), qk)
        torch.sub(self.kk, qk, out=den).add_(self.qq[..., rows, :])
        if keep:
            sim = torch.add(
                qk, self.eps, out=_buffer(self.store, 'sim', tuple(qk.shape), qk)
            )
        else:
            sim = qk.add_(self.eps)
        if inverse:
            den.reciprocal_()
            return sim.mul_(den), den
        return sim.div_(den), den


def _compaction_forward(
    q: Tensor, k: Tensor, a: Tensor, eps: float, chunk: int, keep: bool = False
) -> tuple[Tensor, Tensor | None]:
    """``sum_i a_i S_ij`` over blocks of ``chunk`` query rows.

    Returns:
        the ...xNk result and, with ``keep`` and a single block, the dot
        products (for :class:`_TanimotoCompaction` to save); else ``None``.
    """
    blocks = _Blocks(q, k, eps, chunk)
    keep = keep and chunk >= q.shape[-2]
    out = qk = None
    for rows in blocks:
        qk = blocks.dots(rows, reuse=not keep)
        sim, _ = blocks.similarity(qk, rows, inverse=False, keep=keep)
        part = _weighted_rows(a[rows], sim)
        out = part if out is None else out.add_(part)
    assert out is not None
    return out, qk if keep else None


def _compaction_backward(
    q: Tensor,
    k: Tensor,
    a: Tensor,
    grad: Tensor,
    eps: float,
    chunk: int,
    needs: tuple[bool, ...],
    qk_saved: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of ``w_j = sum_i a_i S_ij`` w.r.t. q, k and a, block by block.

    ``dL/dS_ij = a_i g_j``; ``dS/d<q,k> = (1 + S) / den`` and
    ``dS/d|q|² = dS/d|k|² = -S / den``. With ``qk_saved`` (one block) the dot
    products are not recomputed. The key gradient is accumulated in place over
    the blocks (``baddbmm_``), the norm terms once at the end.
    """
    blocks = _Blocks(q, k, eps, chunk)
    lead, nk, d = blocks.lead, k.shape[-2], k.shape[-1]
    batch = math.prod(lead)
    g = grad.unsqueeze(-2)  # ...x1xNk
    grad_qs, grad_as = [], []
    grad_k = q.new_zeros(batch, nk, d) if needs[1] else None
    norm_k = None
    for rows in blocks:
        qc = q[..., rows, :]
        qk = qk_saved if qk_saved is not None else blocks.dots(rows)
        sim, inv_den = blocks.similarity(qk, rows, True, keep=qk_saved is not None)
        if needs[2]:
            grad_as.append(torch.matmul(sim, grad.unsqueeze(-1)).squeeze(-1))
        outer = inv_den.mul_(g).mul_(a[rows].unsqueeze(-1))  # a_i g_j / den
        g_norm = sim.mul_(outer)  # a_i g_j S / den
        g_qk = outer.add_(g_norm)  # a_i g_j (1 + S) / den
        if needs[0]:
            grad_q = _matmul(g_qk, k)
            grad_qs.append(grad_q.sub_(2 * qc * g_norm.sum(-1, keepdim=True)))
        if grad_k is not None:
            c = qc.shape[-2]
            grad_k.baddbmm_(
                g_qk.reshape(batch, c, nk).transpose(1, 2),
                qc.expand(*lead, c, d).reshape(batch, c, d),
            )
            part_norm = g_norm.sum(-2)
            norm_k = part_norm if norm_k is None else norm_k.add_(part_norm)
    grad_q = grad_a = None
    if needs[0]:
        grad_q = torch.cat(grad_qs, dim=-2).sum_to_size(q.shape)
    if grad_k is not None:
        assert norm_k is not None
        full = grad_k.view(*lead, nk, d).sub_(2 * k * norm_k.unsqueeze(-1))
        grad_k = full.sum_to_size(k.shape)
    if needs[2]:
        grad_a = torch.cat(grad_as, dim=-1).sum_to_size(a.shape)
    return grad_q, grad_k, grad_a


class _TanimotoCompaction(torch.autograd.Function):
    """``w_j = sum_i a_i S_ij`` keeping one Nq x Nk tensor (the dot products).

    Plain autograd keeps three Nq x Nk tensors alive between forward and backward
    (numerator, denominator and similarity); the gradient here is computed
    analytically from the saved dot products, with the same matrix products.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, q: Tensor, k: Tensor, a: Tensor, eps: float
    ) -> Tensor:
        out, qk = _compaction_forward(q, k, a, eps, q.shape[-2], keep=True)
        ctx.save_for_backward(q, k, a, qk)
        ctx.eps = eps  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(
        ctx: FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        q, k, a, qk = ctx.saved_tensors  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        grads = _compaction_backward(
            q, k, a, grad, ctx.eps, q.shape[-2], needs, qk_saved=qk
        )  # type: ignore[attr-defined]
        return (*grads, None)


class _ChunkedTanimotoCompaction(torch.autograd.Function):
    """``w_j = sum_i a_i S_ij`` over blocks of ``chunk`` query rows.

    No Nq x Nk tensor exists at any time, in forward or backward: only
    ``chunk x Nk`` blocks, recomputed in backward (one more matrix product per
    block than :class:`_TanimotoCompaction`).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, q: Tensor, k: Tensor, a: Tensor, eps: float, chunk: int
    ) -> Tensor:
        ctx.save_for_backward(q, k, a)
        ctx.eps, ctx.chunk = eps, chunk  # type: ignore[attr-defined]
        return _compaction_forward(q, k, a, eps, chunk)[0]

    @staticmethod
    def backward(
        ctx: FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        q, k, a = ctx.saved_tensors  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        grads = _compaction_backward(q, k, a, grad, ctx.eps, ctx.chunk, needs)  # type: ignore[attr-defined]
        return (*grads, None, None)


#: Dtypes in which the Tanimoto similarity is not computed.
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def tanimoto_compaction(
    q: Tensor,
    k: Tensor,
    weight: Tensor,
    eps: float = EPS,
    memory_efficient: bool = True,
    chunk_size: int | None = None,
) -> Tensor:
    """Compact the Tanimoto similarities over the query axis: ``sum_i w_i S_ij``.

    Args:
        q: ...xNqxD query tokens.
        k: ...xNkxD key tokens (leading axes broadcast against q's).
        weight: Nq weights (the linear compaction's weights, or 1/Nq for a mean).
        eps: numerical guard.
        memory_efficient: the lean path (custom autograd, blocked work); the
            result and its gradients are those of the plain autograd path
            (``False``), which keeps three Nq x Nk tensors for backward.
        chunk_size: with ``memory_efficient``, process blocks of this many query
            rows: no Nq x Nk tensor is ever formed and the blocks are recomputed
            in backward. ``None`` chooses blocks of about
            :data:`BLOCK_ELEMENTS` similarities (at least :data:`MIN_BLOCK_ROWS`
            rows) and one block, whose dot products are kept for backward,
            when the whole matrix is that small.

    Returns:
        ...xNk key-token weights.
    """
    device = q.device.type
    available = torch.amp.is_autocast_available(device)  # not on e.g. 'meta'
    if q.dtype in _LOW_PRECISION or (available and torch.is_autocast_enabled(device)):
        # |q|² + |k|² - <q,k> cancels catastrophically in bf16/fp16 (D2Sigmoid
        # outputs are small): the denominators can round to 0 and the gradients to
        # inf. The similarities are computed in float32 whatever the autocast state.
        with torch.autocast(device, enabled=False) if available else nullcontext():
            out = tanimoto_compaction(
                q.float(), k.float(), weight.float(), eps, memory_efficient, chunk_size
            )
        return out.to(q.dtype)
    if not memory_efficient:
        return torch.matmul(weight, tanimoto_similarity(q, k, eps))
    chunk = chunk_size if chunk_size is not None else _auto_chunk(q, k)
    if chunk < q.shape[-2]:
        if torch.is_grad_enabled():
            return _ChunkedTanimotoCompaction.apply(q, k, weight, eps, chunk)
        return _compaction_forward(q, k, weight, eps, chunk)[0]
    if torch.is_grad_enabled():
        return _TanimotoCompaction.apply(q, k, weight, eps)
    return _compaction_forward(q, k, weight, eps, q.shape[-2])[0]
