"""Normalisation layers: a channel LayerNorm and the batch-grouped BatchNorm.

SSG2 folds T supports into the batch (a ``B·T`` batch laid out ``b``-major, from
a BxTx... tensor) where the official code loops over the supports. Two context
managers make every :class:`GroupedBatchNorm` called inside them behave like
the loop's BatchNorms, without any argument passed through the modules in
between: :func:`batch_groups` gives each of the T groups its own training
statistics, and :class:`BatchNormUpdateRecorder` defers the running-statistic
updates and applies them in the loop's order when it exits.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = (
    'BatchNormUpdateRecorder',
    'ChannelLayerNorm',
    'GroupedBatchNorm',
    'batch_groups',
)

#: the G of the innermost :func:`batch_groups`
_BATCH_GROUPS: ContextVar[int] = ContextVar('batch_groups', default=1)

#: the innermost active :class:`BatchNormUpdateRecorder`
_RECORDER: ContextVar['BatchNormUpdateRecorder | None'] = ContextVar(
    'batch_norm_recorder', default=None
)


@contextmanager
def batch_groups(n_groups: int) -> Iterator[None]:
    """Per-group training statistics for every :class:`GroupedBatchNorm` inside.

    The batch of every call is read as G groups folded ``b``-major (a BxGx...
    tensor flattened to (B·G)x...); each group is normalised with the
    statistics of its own B samples. Outside (or with G = 1) the layers are
    plain BatchNorms.

    Args:
        n_groups: G >= 1.

    Yields:
        nothing.

    Raises:
        ValueError: for G < 1.
    """
    if n_groups < 1:
        raise ValueError(f'batch groups must be >= 1, got {n_groups}')
    token = _BATCH_GROUPS.set(n_groups)
    try:
        yield
    finally:
        _BATCH_GROUPS.reset(token)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis (dim 1) of a channels-first tensor."""

    def forward(self, x: Tensor) -> Tensor:
        """Normalise every pixel over its channels.

        Args:
            x: BxCx... tensor.

        Returns:
            a tensor of the shape of ``x`` (channels-last in memory).
        """
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class BatchNormUpdateRecorder:
    """Defers :class:`GroupedBatchNorm` running-statistic updates and replays them.

    SSG2's batched pass calls each BatchNorm once for many (target, support)
    pairs; the official per-support loop updates the running statistics once per
    call of every pair, in pair order, the target stream before the support
    stream. Inside ``with BatchNormUpdateRecorder(T):`` every
    :class:`GroupedBatchNorm` in training mode records its per-group batch
    statistics instead of updating, tagged with the
    index of the first support of the call (:attr:`start`) or as ``broadcast``
    (the target's support-independent stage, computed once but updated once per
    support by the loop); on a normal exit :meth:`replay` applies the updates
    in the loop's order: by support index, then by call order.
    """

    def __init__(self, length: int) -> None:
        """Initialise the recorder.

        Args:
            length: the number T of supports of the pass.
        """
        self.length = length
        #: index of the first support of the calls being recorded
        self.start = 0
        #: record the next calls as support-independent (repeated T times)
        self.broadcast = False
        self._calls: list[tuple[GroupedBatchNorm, int, bool, Tensor, Tensor]] = []

    def record(self, module: 'GroupedBatchNorm', mean: Tensor, var: Tensor) -> None:
        """Keep one call's per-group statistics (GxC mean and unbiased variance)."""
        self._calls.append((module, self.start, self.broadcast, mean, var))

    def __enter__(self) -> 'BatchNormUpdateRecorder':
        """Start recording."""
        self._token = _RECORDER.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop recording; apply the recorded updates unless an error is raised."""
        _RECORDER.reset(self._token)
        if exc_type is None:
            self.replay()
        self._calls.clear()

    @torch.no_grad()
    def replay(self) -> None:
        """Apply the recorded updates in the loop's order (and forget them)."""
        events: dict[GroupedBatchNorm, list[tuple[int, int, Tensor, Tensor]]] = {}
        for order, (norm, start, broadcast, mean, var) in enumerate(self._calls):
            steps = range(self.length) if broadcast else range(start, start + len(mean))
            for i, t in enumerate(steps):
                g = 0 if broadcast else i
                events.setdefault(norm, []).append((t, order, mean[g], var[g]))
        self._calls.clear()
        for norm, updates in events.items():
            assert norm.running_mean is not None and norm.running_var is not None
            assert norm.num_batches_tracked is not None
            updates.sort(key=lambda e: e[:2])
            # n sequential updates r <- (1 - f_k) r + f_k u_k in closed form:
            # r_n = prod(1 - f) r_0 + sum_k f_k prod_{j > k}(1 - f_j) u_k,
            # two weighted sums per buffer instead of n in-place updates; the
            # count is read only for a cumulative average (no sync otherwise)
            cumulative = norm.momentum is None
            done = int(norm.num_batches_tracked) if cumulative else 0
            factors = [
                norm.momentum if norm.momentum is not None else 1.0 / (done + k + 1)
                for k in range(len(updates))
            ]
            weights, keep = [], 1.0
            for f in reversed(factors):
                weights.append(f * keep)
                keep *= 1.0 - f
            weights.reverse()
            for buffer, column in ((norm.running_mean, 2), (norm.running_var, 3)):
                stacked = torch.stack([e[column] for e in updates]).to(buffer.dtype)
                w = torch.tensor(weights, dtype=buffer.dtype, device=buffer.device)
                buffer.mul_(keep).add_(w @ stacked)
            norm.num_batches_tracked.add_(len(updates))


class GroupedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are computed per group of a folded batch.

    Inside :func:`batch_groups` (G) a (B·G)x... training batch is normalised
    group by group, each with the statistics of its own B samples, exactly as a
    per-support loop over batches of B would; otherwise, and in evaluation
    mode, it is a plain BatchNorm. Running statistics are updated once per call
    with the mean over the groups of the per-group statistics or, inside a
    :class:`BatchNormUpdateRecorder`, recorded per group and applied when the
    recorder exits.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f'expected at least a 2D input, got {x.dim()}D')

    def forward(self, x: Tensor) -> Tensor:
        """Normalise the batch.

        Args:
            x: (B·G)xCx... tensor, laid out as BxGxCx... flattened, for the G of
                the enclosing :func:`batch_groups` (1 outside).

        Returns:
            a tensor of the shape of ``x``.
        """
        n_groups = _BATCH_GROUPS.get()
        use_batch_stats = self.training or not self.track_running_stats
        recorder = _RECORDER.get()
        if recorder is not None and self.training and self.track_running_stats:
            return self._recorded(x, n_groups, recorder)
        if n_groups == 1 or not use_batch_stats:
            return super().forward(x)
        n, c = x.shape[:2]
        if n % n_groups:
            raise ValueError(f'batch of {n} does not split into {n_groups} groups')
        factor = 0.0
        running_mean = running_var = None
        if self.training and self.track_running_stats:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
            else:
                factor = self.momentum
            assert self.running_mean is not None and self.running_var is not None
            running_mean = self.running_mean.repeat(n_groups)
            running_var = self.running_var.repeat(n_groups)
        y = self._batch_norm(x, n_groups, running_mean, running_var, factor)
        if running_mean is not None and running_var is not None:
            # through .data, like the native kernel, so that autograd nodes of
            # earlier calls that saved the buffers are not invalidated
            assert self.running_mean is not None and self.running_var is not None
            self.running_mean.data.copy_(running_mean.view(n_groups, c).mean(0))
            self.running_var.data.copy_(running_var.view(n_groups, c).mean(0))
        return y.view(x.shape)

    def _recorded(
        self, x: Tensor, n_groups: int, recorder: BatchNormUpdateRecorder
    ) -> Tensor:
        """Normalise with per-group batch statistics and hand them to ``recorder``."""
        n, c = x.shape[:2]
        if n % n_groups:
            raise ValueError(f'batch of {n} does not split into {n_groups} groups')
        assert self.running_mean is not None
        # momentum 1 into zeroed buffers: they receive the batch mean and the
        # unbiased variance, exactly what an update would blend in
        mean = torch.zeros(n_groups * c, dtype=self.running_mean.dtype, device=x.device)
        var = torch.zeros_like(mean)
        y = self._batch_norm(x, n_groups, mean, var, 1.0)
        recorder.record(self, mean.view(n_groups, c), var.view(n_groups, c))
        return y.view(x.shape)

    def _batch_norm(
        self,
        x: Tensor,
        n_groups: int,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        momentum: float,
    ) -> Tensor:
        """Training-mode ``batch_norm`` of a Bx(G·C)x... view: statistics per group.

        Args:
            x: (B*G)xCx... input.
            n_groups: G.
            running_mean: G·C buffer updated with ``momentum`` (or ``None``).
            running_var: G·C buffer updated with ``momentum`` (or ``None``).
            momentum: update factor of the running buffers.

        Returns:
            the normalised Bx(G·C)x... view.
        """
        n, c = x.shape[:2]
        weight = self.weight.repeat(n_groups) if self.weight is not None else None
        bias = self.bias.repeat(n_groups) if self.bias is not None else None
        return F.batch_norm(
            x.reshape(n // n_groups, n_groups * c, *x.shape[2:]),
            running_mean,
            running_var,
            weight,
            bias,
            True,
            momentum,
            self.eps,
        )
