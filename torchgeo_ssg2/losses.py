"""Losses of SSG2: fractal Tanimoto with complement, multitask and total SSG2 loss.

Convention for empty channels: the Tanimoto similarity is smoothed,
``T = (sum pl + eps) / (den + eps)`` with ``eps = 1e-5``, so a channel that is empty
in both prediction and label has similarity 1 (loss 0) instead of the 0/0 of the
plain formula, and values and gradients stay finite for empty channels, empty masks
and all-ignore masks. For any non-trivial channel (sums over a chip of order 1 or
more) eps changes the value by a negligible amount. The official code instead maps
the 0/0 to similarity 0 (so an empty channel predicted empty floors at loss 0.5); the
complement term ``T(1-p, 1-l)`` carries the signal for such channels in both.

Ignored pixels: a validity weight multiplies p, l and both complements inside the
sums, so an ignored pixel contributes nothing; a sample or channel whose pixels are
all ignored has loss 0 and zero gradient (it still counts in the mean).

Inputs are promoted to at least float32 before the sums (safe under autocast).
"""

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ['MultitaskLoss', 'SSG2Loss', 'fractal_tanimoto', 'tanimoto_with_complement']

_EPS = 1e-5
_OUTPUT_KEYS = (
    'target',
    'intersection',
    'union',
    'difference',
    'fuzzy_target',
    'fuzzy_null',
    'sequence',
)
_TARGET_KEYS = ('target', 'intersection', 'union', 'difference')


def _as_dims(dims: int | Sequence[int]) -> tuple[int, ...]:
    return (dims,) if isinstance(dims, int) else tuple(dims)


def fractal_tanimoto(
    pred: Tensor,
    label: Tensor,
    depth: int = 0,
    mode: Literal['exact', 'avg'] = 'exact',
    dims: int | Sequence[int] = (-2, -1),
) -> Tensor:
    """Smoothed fractal Tanimoto similarity.

    ``T_d(p, l) = sum pl / (2^d (sum p^2 + sum l^2) - (2^{d+1} - 1) sum pl)``, sums over *dims*;
    ``mode="exact"`` returns ``T_depth``, ``mode="avg"`` the mean of ``T_0..T_depth``.

    Args:
        pred: predictions in [0, 1].
        label: labels in [0, 1], broadcastable to *pred*.
        depth: fractal depth d >= 0.
        mode: ``"exact"`` or ``"avg"``.
        dims: dimensions to sum over.

    Returns:
        similarity in [0, 1] with *dims* reduced (kept as size 1).
    """
    if depth < 0:
        raise ValueError(f'fractal_tanimoto: depth must be >= 0, got {depth}')
    if mode not in ('exact', 'avg'):
        raise ValueError(
            f"fractal_tanimoto: mode must be 'exact' or 'avg', got {mode!r}"
        )
    dims = _as_dims(dims)
    pl = (pred * label).sum(dim=dims, keepdim=True)
    pp_ll = (pred * pred + label * label).sum(dim=dims, keepdim=True)
    depths = range(depth + 1) if mode == 'avg' else (depth,)
    total = pred.new_zeros(())
    for d in depths:
        a = 2.0**d
        den = (a * pp_ll - (2.0 * a - 1.0) * pl).clamp_min(0.0)
        total = total + (pl + _EPS) / (den + _EPS)
    return total / len(depths)


def tanimoto_with_complement(
    pred: Tensor,
    label: Tensor,
    depth: int = 0,
    mode: Literal['exact', 'avg'] = 'exact',
    weight: Tensor | None = None,
    dims: int | Sequence[int] = (-2, -1),
) -> Tensor:
    """Fractal Tanimoto loss with complement, ``mean(1 - 0.5[T(p,l) + T(1-p,1-l)])``.

    Args:
        pred: predictions in [0, 1], e.g. BxCxHxW.
        label: labels in [0, 1], broadcastable to *pred*.
        depth: fractal depth d.
        mode: ``"exact"`` (``T_d``) or ``"avg"`` (mean of ``T_0..T_d``).
        weight: optional validity weight broadcastable to *pred* (e.g. Bx1xHxW);
            it multiplies p, l and both complements inside the sums, so pixels of
            weight 0 contribute nothing.
        dims: dimensions summed over; the result is averaged over all the others.

    Returns:
        scalar loss in [0, 1]; 0 for a perfect prediction.
    """
    work = torch.promote_types(pred.dtype, torch.float32)
    p = pred.to(work)
    lbl = label.to(work)
    if weight is None:
        pc, lc = 1 - p, 1 - lbl
    else:
        w = weight.to(work)
        pc, lc = (1 - p) * w, (1 - lbl) * w
        p, lbl = p * w, lbl * w
    sim = fractal_tanimoto(p, lbl, depth, mode, dims)
    sim_c = fractal_tanimoto(pc, lc, depth, mode, dims)
    return (1 - 0.5 * (sim + sim_c)).mean()


class MultitaskLoss(nn.Module):
    """Mean Tanimoto-with-complement loss over the segmentation, boundary and distance blocks.

    ``pred`` and ``label`` are Bx3Kx...xHxW multitask maps with blocks ``[0:K]``,
    ``[K:2K]``, ``[2K:3K]`` on dimension ``channel_dim``.
    """

    def __init__(
        self,
        depth: int = 0,
        mode: Literal['exact', 'avg'] = 'exact',
        channel_dim: int = 1,
    ) -> None:
        """Initialise the loss.

        Args:
            depth: fractal depth of the Tanimoto similarity.
            mode: ``"exact"`` or ``"avg"``.
            channel_dim: dimension holding the 3K channels.
        """
        super().__init__()
        self.depth = depth
        self.mode = mode
        self.channel_dim = channel_dim

    def forward(
        self, pred: Tensor, label: Tensor, weight: Tensor | None = None
    ) -> Tensor:
        """Compute the loss.

        Args:
            pred: predicted multitask maps, e.g. Bx3KxHxW.
            label: multitask labels, same shape.
            weight: optional validity mask broadcastable to *pred* (e.g. Bx1xHxW).

        Returns:
            scalar loss in [0, 1].
        """
        if pred.shape != label.shape:
            raise ValueError(
                f'MultitaskLoss: pred {tuple(pred.shape)} and label '
                f'{tuple(label.shape)} differ'
            )
        c = pred.shape[self.channel_dim]
        if c % 3:
            raise ValueError(
                f'MultitaskLoss: channel dimension {c} is not a multiple of 3'
            )
        k = c // 3
        losses = [
            tanimoto_with_complement(
                pred.narrow(self.channel_dim, i * k, k),
                label.narrow(self.channel_dim, i * k, k),
                self.depth,
                self.mode,
                weight,
            )
            for i in range(3)
        ]
        return (losses[0] + losses[1] + losses[2]) / 3


class SSG2Loss(nn.Module):
    """Total SSG2 loss, all terms equally weighted by ``1 / (5T + 2)``.

    ``(sum_t [mtsk(I_t, Y_inter_t) + mtsk(U_t, Y_union_t) + mtsk(D_t, Y_diff_t)
    + L(FT_t, y[:K]) + L(FN_t, 0)] + mtsk(P, y) + L_{T,H,W}(sigmoid(S), sigmoid(S)[:, perm]))
    / (5T + 2)``

    with L the Tanimoto loss with complement and S the sequence-model features. The
    set-operation terms are weighted by ``support_valid``, the target and fuzzy terms
    by ``valid``. In the symmetry term the permuted copy plays the label and carries no
    gradient (as in the official custom autograd, which differentiates the prediction
    only).
    """

    def __init__(
        self,
        depth: int = 0,
        mode: Literal['exact', 'avg'] = 'exact',
        generator: torch.Generator | None = None,
    ) -> None:
        """Initialise the loss.

        Args:
            depth: fractal depth of the Tanimoto similarity.
            mode: ``"exact"`` or ``"avg"``.
            generator: default generator for the support permutation of the symmetry
                term (a call's own *generator* takes precedence); None uses the global
                RNG.
        """
        super().__init__()
        self.depth = depth
        self.mode = mode
        self.generator = generator
        self.mtsk = MultitaskLoss(depth, mode, channel_dim=2)
        self.target_loss = MultitaskLoss(depth, mode)

    def _permutation(self, t: int, device: torch.device, gen: torch.Generator | None):
        if gen is None:
            perm = torch.randperm(t)
        else:
            perm = torch.randperm(t, generator=gen, device=gen.device)
        return perm.to(device)

    def forward(
        self,
        outputs: Mapping[str, Tensor],
        targets: Mapping[str, Tensor],
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Compute the loss.

        Args:
            outputs: model outputs: ``"target"`` Bx3KxHxW; ``"intersection"``,
                ``"union"``, ``"difference"`` BxTx3KxHxW; ``"fuzzy_target"``,
                ``"fuzzy_null"`` BxTxKxHxW; ``"sequence"`` BxTxFxHxW (pre-sigmoid).
            targets: from :func:`torchgeo_ssg2.targets.set_operation_targets`:
                ``"target"``, ``"intersection"``, ``"union"``, ``"difference"``,
                ``"valid"`` Bx1xHxW and ``"support_valid"`` BxTx1xHxW.
            generator: generator for the support permutation (overrides the one
                given at construction).

        Returns:
            ``"loss"`` (the weighted total) and the unweighted sums
            ``"intersection"``, ``"union"``, ``"difference"``, ``"fuzzy_target"``,
            ``"fuzzy_null"``, ``"target"``, ``"symmetry"``.
        """
        missing = [f'outputs[{k!r}]' for k in _OUTPUT_KEYS if k not in outputs]
        missing += [f'targets[{k!r}]' for k in _TARGET_KEYS if k not in targets]
        if missing:
            raise KeyError(f'SSG2Loss: missing {", ".join(missing)}')
        for key in ('target', 'intersection', 'union', 'difference'):
            if outputs[key].shape != targets[key].shape:
                raise ValueError(
                    f'SSG2Loss: outputs[{key!r}] {tuple(outputs[key].shape)} does not '
                    f'match targets[{key!r}] {tuple(targets[key].shape)}'
                )
        t, c3 = outputs['intersection'].shape[1:3]
        k = c3 // 3
        for key in ('fuzzy_target', 'fuzzy_null'):
            if outputs[key].shape[:3] != (outputs['intersection'].shape[0], t, k):
                raise ValueError(
                    f'SSG2Loss: outputs[{key!r}] {tuple(outputs[key].shape)} should be '
                    f'BxTxKxHxW with T={t}, K={k}'
                )
        valid = targets.get('valid')
        svalid = targets.get('support_valid')
        valid_t = None if valid is None else valid.unsqueeze(1)  # Bx1x1xHxW
        # sum_t of per-t means equals T times the mean over (b, t, c).
        terms = {
            key: t * self.mtsk(outputs[key], targets[key], svalid)
            for key in ('intersection', 'union', 'difference')
        }
        fuzzy_target = outputs['fuzzy_target']
        y = targets['target'][:, :k].unsqueeze(1).expand_as(fuzzy_target)
        terms['fuzzy_target'] = t * tanimoto_with_complement(
            fuzzy_target, y, self.depth, self.mode, valid_t
        )
        fuzzy_null = outputs['fuzzy_null']
        terms['fuzzy_null'] = t * tanimoto_with_complement(
            fuzzy_null, torch.zeros_like(fuzzy_null), self.depth, self.mode, valid_t
        )
        terms['target'] = self.target_loss(outputs['target'], targets['target'], valid)
        seq = torch.sigmoid(outputs['sequence'])
        perm = self._permutation(
            seq.shape[1],
            seq.device,
            generator if generator is not None else self.generator,
        )
        terms['symmetry'] = tanimoto_with_complement(
            seq, seq[:, perm].detach(), self.depth, self.mode, dims=(-4, -2, -1)
        )
        total = sum(terms.values()) / (5 * t + 2)
        return {'loss': total, **terms}
