"""Elementary layers of the PTAViT / SSG2 family.

D2Sigmoid and SigmoidCrisp activations, convolutions followed by GroupNorm, a
channel LayerNorm for channels-first tensors and a BatchNorm whose training
statistics can be computed per sequence element of a folded batch.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

__all__ = (
    'BatchNormUpdateRecorder',
    'ChannelLayerNorm',
    'Conv2dNormed',
    'Conv3dNormed',
    'D2Sigmoid',
    'DepthwiseConv3d',
    'GroupedBatchNorm',
    'SigmoidCrisp',
    'd2sigmoid',
)


class _D2SigmoidFunction(torch.autograd.Function):
    """``s(1-s)(2s-1)`` with ``s = sigmoid(x)``, saving only ``s`` for backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        ctx.save_for_backward(s)
        # p = s - s², out = (2s - 1) p: three temporaries fewer than the plain chain
        p = torch.addcmul(s, s, s, value=-1)
        return torch.mul(s, 2).sub_(1).mul_(p)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> Tensor:
        (s,) = ctx.saved_tensors  # type: ignore[attr-defined]
        p = torch.addcmul(s, s, s, value=-1)
        # d/dx [p (2s - 1)] = p (6p - 1)
        return torch.mul(p, 6).sub_(1).mul_(p).mul_(grad)


def d2sigmoid(x: Tensor) -> Tensor:
    """Minus the second derivative of the logistic sigmoid.

    ``D2Sigmoid(x) = s(1-s)(2s-1)`` with ``s = sigmoid(x)``; its range is about
    ``[-0.096, 0.096]``. A custom autograd function stores only ``s``.

    Args:
        x: input of any shape.

    Returns:
        a tensor of the shape of ``x``.
    """
    return _D2SigmoidFunction.apply(x)


class D2Sigmoid(nn.Module):
    """Module form of :func:`d2sigmoid`."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply the activation element-wise.

        Args:
            x: input of any shape.

        Returns:
            a tensor of the shape of ``x``.
        """
        return d2sigmoid(x)


class SigmoidCrisp(nn.Module):
    """Sharpened sigmoid ``sigmoid(x / (smooth + sigmoid(gamma)))``.

    ``gamma`` is one learnable scalar (initialised to 1), so the temperature
    lies in ``(smooth, 1 + smooth)``.
    """

    def __init__(self, smooth: float = 1e-2) -> None:
        """Initialise the activation.

        Args:
            smooth: lower bound of the temperature.
        """
        super().__init__()
        self.smooth = smooth
        self.gamma = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the activation element-wise.

        Args:
            x: input of any shape.

        Returns:
            probabilities in ``(0, 1)`` of the shape of ``x``.
        """
        temperature = self.smooth + torch.sigmoid(self.gamma)
        return torch.sigmoid(x / temperature)


class Conv2dNormed(nn.Sequential):
    """2D convolution without bias followed by GroupNorm."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        norm_groups: int = 4,
    ) -> None:
        """Initialise the layer.

        Args:
            in_channels: input channels C_in.
            out_channels: output channels C_out.
            kernel_size: odd kernel size; padding keeps the size at stride 1.
            stride: convolution stride.
            groups: convolution groups.
            norm_groups: GroupNorm groups (must divide ``out_channels``).
        """
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.GroupNorm(norm_groups, out_channels),
        )


class _Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that stays in float32 under CPU autocast.

    oneDNN's bfloat16 grouped 3D convolution on the CPU returns non-finite weight
    gradients for some inputs (seen with torch 2.14); other devices keep autocast's
    lower precision.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Convolve.

        Args:
            x: BxCxTxHxW input.

        Returns:
            the BxC'xTxHxW output.
        """
        if x.device.type == 'cpu' and torch.is_autocast_enabled('cpu'):
            with torch.autocast('cpu', enabled=False):
                return super().forward(x.float())
        return super().forward(x)


class Conv3dNormed(nn.Sequential):
    """3D convolution (over T, H, W) without bias followed by GroupNorm."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        groups: int = 1,
        norm_groups: int = 4,
    ) -> None:
        """Initialise the layer.

        Args:
            in_channels: input channels C_in.
            out_channels: output channels C_out.
            kernel_size: odd cubic kernel size, zero padded (also in T).
            groups: convolution groups.
            norm_groups: GroupNorm groups (must divide ``out_channels``).
        """
        super().__init__(
            _Conv3d(
                in_channels,
                out_channels,
                kernel_size,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.GroupNorm(norm_groups, out_channels),
        )


class _DepthwiseConv3dFunction(torch.autograd.Function):
    """Depthwise stride-1 'same' 3D convolution with a leaner backward.

    The input gradient is the same convolution of the output gradient with the
    spatially flipped kernel (exact for stride 1, odd kernel, ``k // 2`` zero
    padding), i.e. one more forward-kernel call; only the weight gradient uses
    the generic ``convolution_backward``, whose input-gradient part is slower on
    the CPU. (A channels-last forward is faster as such, but the layout
    conversions of 5D tensors cost more than it saves.)
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, x: Tensor, weight: Tensor, bias: Tensor | None
    ) -> Tensor:
        pad = [k // 2 for k in weight.shape[2:]]
        groups = weight.shape[0]
        y = F.conv3d(x, weight, bias, padding=pad, groups=groups)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None  # type: ignore[attr-defined]
        return y

    @staticmethod
    def backward(
        ctx: FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        pad = [k // 2 for k in weight.shape[2:]]
        groups = weight.shape[0]
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if needs[0]:
            grad_x = F.conv3d(grad, weight.flip(2, 3, 4), padding=pad, groups=groups)
        if needs[1]:
            grad_w = torch.ops.aten.convolution_backward(
                grad,
                x.contiguous(),
                weight,
                None,
                [1, 1, 1],
                pad,
                [1, 1, 1],
                False,
                [0, 0, 0],
                groups,
                [False, True, False],
            )[1]
        if ctx.has_bias and needs[2]:  # type: ignore[attr-defined]
            grad_b = grad.sum((0, 2, 3, 4))
        return grad_x, grad_w, grad_b


class DepthwiseConv3d(nn.Conv3d):
    """Depthwise 3D convolution (stride 1, zero 'same' padding, odd kernel).

    Computes exactly ``nn.Conv3d(c, c, k, padding=k // 2, groups=c)``; with
    ``fast = True`` (the default) it goes through a custom autograd function
    that computes the input gradient as a convolution with the flipped kernel
    (about 20 % less backward time than the generic path on the CPU).
    ``fast = False`` is the plain reference path. Parameters and state
    dict are those of the plain ``nn.Conv3d``.
    """

    def __init__(self, channels: int, kernel_size: int = 3, bias: bool = True) -> None:
        """Initialise the layer.

        Args:
            channels: channels C (input = output = groups).
            kernel_size: odd cubic kernel size.
            bias: learn a per-channel bias.

        Raises:
            ValueError: for an even kernel size.
        """
        if kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}')
        super().__init__(
            channels,
            channels,
            kernel_size,
            padding=kernel_size // 2,
            groups=channels,
            bias=bias,
        )
        #: use the custom autograd function (same function, faster on the CPU)
        self.fast = True

    def forward(self, x: Tensor) -> Tensor:
        """Convolve every channel with its own kernel.

        Args:
            x: BxCxTxHxW input.

        Returns:
            BxCxTxHxW output.
        """
        if not self.fast:
            return super().forward(x)
        weight, bias = self.weight, self.bias
        device = x.device.type
        if not torch.amp.is_autocast_available(device):  # e.g. the meta device
            return _DepthwiseConv3dFunction.apply(x, weight, bias)
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        with torch.autocast(device, enabled=False):
            return _DepthwiseConv3dFunction.apply(x, weight, bias)


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
    stream. Inside :meth:`attach` every :class:`GroupedBatchNorm` of a module
    records its per-group batch statistics instead of updating, tagged with the
    index of the first support of the call (:attr:`start`) or as ``broadcast``
    (the target's support-independent stage, computed once but updated once per
    support by the loop); :meth:`replay` then applies the updates in the loop's
    order: by support index, then by call order.
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

    def attach(self, module: nn.Module) -> list['GroupedBatchNorm']:
        """Make every :class:`GroupedBatchNorm` in ``module`` record (training only)."""
        norms = [
            m
            for m in module.modules()
            if isinstance(m, GroupedBatchNorm) and m.training and m.track_running_stats
        ]
        for norm in norms:
            norm.recorder = self
        return norms

    @torch.no_grad()
    def replay(self, norms: list['GroupedBatchNorm']) -> None:
        """Detach from ``norms`` and apply the recorded updates in the loop's order."""
        for norm in norms:
            norm.recorder = None
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

    SSG2 folds the T supports into the batch (a ``B*T`` batch laid out ``b``-major,
    i.e. from a BxTx... tensor). ``forward(x, groups=T)`` then normalises each
    sequence element ``t`` with the statistics of its own B samples, exactly as a
    per-support loop over batches of B would. With ``groups=1`` or in evaluation
    mode it is a plain BatchNorm. Running statistics are updated once per call
    with the mean over the groups of the per-group statistics, or, while a
    :class:`BatchNormUpdateRecorder` is attached (SSG2 does that in training),
    recorded per group and replayed later in the official loop's order.
    """

    #: set by :meth:`BatchNormUpdateRecorder.attach`
    recorder: BatchNormUpdateRecorder | None = None

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f'expected at least a 2D input, got {x.dim()}D')

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:
        """Normalise the batch.

        Args:
            x: (B*G)xCx... tensor, laid out as BxGxCx... flattened.
            groups: the number G of groups that get separate statistics.

        Returns:
            a tensor of the shape of ``x``.
        """
        use_batch_stats = self.training or not self.track_running_stats
        if self.recorder is not None and self.training and self.track_running_stats:
            return self._recorded(x, groups, self.recorder)
        if groups == 1 or not use_batch_stats:
            return super().forward(x)
        n, c = x.shape[:2]
        if n % groups:
            raise ValueError(f'batch of {n} does not split into {groups} groups')
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
            running_mean = self.running_mean.repeat(groups)
            running_var = self.running_var.repeat(groups)
        y = self._batch_norm(x, groups, running_mean, running_var, factor)
        if running_mean is not None and running_var is not None:
            # through .data, like the native kernel, so that autograd nodes of
            # earlier calls that saved the buffers are not invalidated
            assert self.running_mean is not None and self.running_var is not None
            self.running_mean.data.copy_(running_mean.view(groups, c).mean(0))
            self.running_var.data.copy_(running_var.view(groups, c).mean(0))
        return y.view(x.shape)

    def _recorded(
        self, x: Tensor, groups: int, recorder: BatchNormUpdateRecorder
    ) -> Tensor:
        """Normalise with per-group batch statistics and hand them to ``recorder``."""
        n, c = x.shape[:2]
        if n % groups:
            raise ValueError(f'batch of {n} does not split into {groups} groups')
        assert self.running_mean is not None
        # momentum 1 into zeroed buffers: they receive the batch mean and the
        # unbiased variance, exactly what an update would blend in
        mean = torch.zeros(groups * c, dtype=self.running_mean.dtype, device=x.device)
        var = torch.zeros_like(mean)
        y = self._batch_norm(x, groups, mean, var, 1.0)
        recorder.record(self, mean.view(groups, c), var.view(groups, c))
        return y.view(x.shape)

    def _batch_norm(
        self,
        x: Tensor,
        groups: int,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        momentum: float,
    ) -> Tensor:
        """Training-mode ``batch_norm`` of a Bx(G·C)x... view: statistics per group.

        Args:
            x: (B*G)xCx... input.
            groups: G.
            running_mean: G·C buffer updated with ``momentum`` (or ``None``).
            running_var: G·C buffer updated with ``momentum`` (or ``None``).
            momentum: update factor of the running buffers.

        Returns:
            the normalised Bx(G·C)x... view.
        """
        n, c = x.shape[:2]
        weight = self.weight.repeat(groups) if self.weight is not None else None
        bias = self.bias.repeat(groups) if self.bias is not None else None
        return F.batch_norm(
            x.reshape(n // groups, groups * c, *x.shape[2:]),
            running_mean,
            running_var,
            weight,
            bias,
            True,
            momentum,
            self.eps,
        )
