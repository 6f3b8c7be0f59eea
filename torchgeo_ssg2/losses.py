"""Losses of SSG2: fractal Tanimoto with complement, multitask and total SSG2 loss.

Empty channels (``empty``): with ``'official'`` the similarity is the plain
``T = sum pl / den``, and a zero denominator (a channel empty in both prediction and
label) gives 0, as in the official code. A channel whose label is empty then always
has ``T(p, l) = 0`` with zero gradient, its loss floors at 0.5, and only the
complement ``T(1-p, 1-l)`` pulls the prediction towards 0. With ``'smoothed'`` the
similarity is ``(sum pl + eps) / (den + eps)`` with ``eps = 1e-5``: an empty label
predicted exactly empty scores 1 (loss 0), but the score falls to about 0 as soon as
``sum p^2`` exceeds a few eps, so the loss rewards collapsing an uncertain channel to
exactly zero (a cliff worth 0.5 per empty channel). Set-operation heads see many
empty channels, and under ``'smoothed'`` they learn to predict nothing.
``'official'`` is the default. Values and gradients stay finite for empty channels,
empty masks and all-ignore masks in both.

Ignored pixels: a validity weight multiplies p, l and both complements inside the
sums, so an ignored pixel contributes nothing; a sample or channel whose pixels are
all ignored has loss 0 and zero gradient (it still counts in the mean).

Inputs are promoted to at least float32 before the sums (safe under autocast).
"""

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    'EMPTY_CHANNELS',
    'FUZZY_TARGET_NULL',
    'MultitaskLoss',
    'SSG2Loss',
    'fractal_tanimoto',
    'tanimoto_with_complement',
]

_EPS = 1e-5

EmptyChannels = Literal['official', 'smoothed']
#: How the Tanimoto similarity treats a channel with an empty label.
EMPTY_CHANNELS: tuple[str, ...] = ('official', 'smoothed')

FuzzyTargetNull = Literal['official', 'one', 'drop']
#: What the fuzzy-target term compares the NULL channel of ``I_t u D_t`` with.
FUZZY_TARGET_NULL: tuple[str, ...] = ('official', 'one', 'drop')
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
    empty: EmptyChannels = 'official',
) -> Tensor:
    """Fractal Tanimoto similarity.

    ``T_d(p, l) = sum pl / (2^d (sum p^2 + sum l^2) - (2^{d+1} - 1) sum pl)``, sums over *dims*;
    ``mode="exact"`` returns ``T_depth``, ``mode="avg"`` the mean of ``T_0..T_depth``.

    Args:
        pred: predictions in [0, 1].
        label: labels in [0, 1], broadcastable to *pred*.
        depth: fractal depth d >= 0.
        mode: ``"exact"`` or ``"avg"``.
        dims: dimensions to sum over.
        empty: ``'official'`` (0/0 is 0) or ``'smoothed'`` (eps added to the
            numerator and denominator); see the module docstring.

    Returns:
        similarity in [0, 1] with *dims* reduced (kept as size 1).
    """
    if depth < 0:
        raise ValueError(f'fractal_tanimoto: depth must be >= 0, got {depth}')
    if mode not in ('exact', 'avg'):
        raise ValueError(
            f"fractal_tanimoto: mode must be 'exact' or 'avg', got {mode!r}"
        )
    if empty not in EMPTY_CHANNELS:
        raise ValueError(
            f'fractal_tanimoto: empty must be one of {EMPTY_CHANNELS}, got {empty!r}'
        )
    dims = _as_dims(dims)
    pl = (pred * label).sum(dim=dims, keepdim=True)
    pp_ll = (pred * pred + label * label).sum(dim=dims, keepdim=True)
    depths = range(depth + 1) if mode == 'avg' else (depth,)
    total = pred.new_zeros(())
    for d in depths:
        a = 2.0**d
        den = (a * pp_ll - (2.0 * a - 1.0) * pl).clamp_min(0.0)
        if empty == 'smoothed':
            total = total + (pl + _EPS) / (den + _EPS)
        else:
            # den >= 0, so this is den > 0, except that NaN (a diverged
            # prediction) stays NaN instead of passing for an empty channel
            nonzero = den != 0
            safe = torch.where(nonzero, den, torch.ones_like(den))
            total = total + torch.where(nonzero, pl / safe, torch.zeros_like(pl))
    return total / len(depths)


def tanimoto_with_complement(
    pred: Tensor,
    label: Tensor,
    depth: int = 0,
    mode: Literal['exact', 'avg'] = 'exact',
    weight: Tensor | None = None,
    dims: int | Sequence[int] = (-2, -1),
    empty: EmptyChannels = 'official',
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
        empty: ``'official'`` or ``'smoothed'`` empty-channel similarity (see the
            module docstring).

    Returns:
        scalar loss in [0, 1]; 0 for a perfect prediction (0.5 for a perfectly
        predicted empty channel with ``'official'``).
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
    sim = fractal_tanimoto(p, lbl, depth, mode, dims, empty)
    sim_c = fractal_tanimoto(pc, lc, depth, mode, dims, empty)
    if weight is not None and empty == 'official':
        # no valid pixel: no label either way, so no loss (not the 0/0 floor)
        seen = w.sum(dim=_as_dims(dims), keepdim=True) > 0
        sim = torch.where(seen, sim, torch.ones_like(sim))
        sim_c = torch.where(seen, sim_c, torch.ones_like(sim_c))
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
        empty: EmptyChannels = 'official',
    ) -> None:
        """Initialise the loss.

        Args:
            depth: fractal depth of the Tanimoto similarity.
            mode: ``"exact"`` or ``"avg"``.
            channel_dim: dimension holding the 3K channels.
            empty: ``'official'`` or ``'smoothed'`` empty-channel similarity.
        """
        super().__init__()
        self.depth = depth
        self.mode = mode
        self.channel_dim = channel_dim
        self.empty = empty

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
                empty=self.empty,
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
    by ``valid``. In the symmetry term the permuted copy plays the label, and the
    gradient flows through both the features and their permuted copy, as in the
    official custom autograd (its backward returns a gradient for the label too).

    ``fuzzy_target_null`` chooses the label of the NULL channel in the fuzzy-target
    term ``L(FT_t, y[:K])``. At every valid pixel exactly one of the intersection's and
    the difference's NULL channels is 1 (the target's class is in the support there, or
    it is not), so the true Hamacher union of the two NULL channels is 1 everywhere,
    while the target's own NULL channel is 0 everywhere. ``'official'`` compares it
    with the target's NULL channel (0), as the official code does, and so trains both
    heads' NULL channels away from their own targets; ``'one'`` compares it with its
    true value 1; ``'drop'`` leaves the NULL channel out of the term.

    ``fuzzy_weight`` scales the fuzzy-target and fuzzy-null terms, and is 0 by
    default, a deviation from the official loss (``fuzzy_weight=1,
    fuzzy_target_null='official'``). Both terms are met by the true set operations,
    but the fuzzy-target term is met just as well when either head copies the
    target's classes, so it drags the intersection and difference heads towards
    the target instead of towards their own targets: on a small overfit batch the
    heads fit their targets only without it (``tests/test_losses.py``,
    ``TestHeadFit``), and on held-out Dubai images the loss without the fuzzy
    terms scores level with it (docs/evidence.md).
    """

    def __init__(
        self,
        depth: int = 0,
        mode: Literal['exact', 'avg'] = 'exact',
        generator: torch.Generator | None = None,
        empty: EmptyChannels = 'official',
        fuzzy_target_null: FuzzyTargetNull = 'one',
        fuzzy_weight: float = 0.0,
    ) -> None:
        """Initialise the loss.

        Args:
            depth: fractal depth of the Tanimoto similarity.
            mode: ``"exact"`` or ``"avg"``.
            generator: default generator for the support permutation of the symmetry
                term (a call's own *generator* takes precedence); None uses the global
                RNG.
            empty: ``'official'`` or ``'smoothed'`` empty-channel similarity (see the
                module docstring).
            fuzzy_target_null: label of the NULL channel in the fuzzy-target term:
                ``'official'`` (the target's NULL, 0), ``'one'`` (its true value) or
                ``'drop'``.
            fuzzy_weight: weight of the fuzzy-target and fuzzy-null terms in the
                total: 0 (the default) leaves them out, 1 is the official loss;
                the denominator stays ``5T + 2``. See the class docstring.

        Raises:
            ValueError: for an unknown *empty* or *fuzzy_target_null*.
        """
        super().__init__()
        if empty not in EMPTY_CHANNELS:
            raise ValueError(
                f'SSG2Loss: empty must be one of {EMPTY_CHANNELS}, got {empty!r}'
            )
        if fuzzy_target_null not in FUZZY_TARGET_NULL:
            raise ValueError(
                f'SSG2Loss: fuzzy_target_null must be one of {FUZZY_TARGET_NULL}, '
                f'got {fuzzy_target_null!r}'
            )
        self.depth = depth
        self.mode = mode
        self.generator = generator
        self.empty = empty
        self.fuzzy_target_null = fuzzy_target_null
        if fuzzy_weight < 0:
            raise ValueError(f'SSG2Loss: fuzzy_weight must be >= 0, got {fuzzy_weight}')
        self.fuzzy_weight = fuzzy_weight
        self.mtsk = MultitaskLoss(depth, mode, channel_dim=2, empty=empty)
        self.target_loss = MultitaskLoss(depth, mode, empty=empty)

    def _tanimoto(
        self,
        pred: Tensor,
        label: Tensor,
        weight: Tensor | None = None,
        dims: int | Sequence[int] = (-2, -1),
    ) -> Tensor:
        return tanimoto_with_complement(
            pred, label, self.depth, self.mode, weight, dims, self.empty
        )

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
        if self.fuzzy_target_null == 'drop':
            fuzzy_target, y = fuzzy_target[:, :, : k - 1], y[:, :, : k - 1]
        elif self.fuzzy_target_null == 'one':
            ones = torch.ones_like(y[:, :, -1:])
            y = torch.cat([y[:, :, : k - 1], ones], dim=2)
        terms['fuzzy_target'] = t * self._tanimoto(fuzzy_target, y, valid_t)
        fuzzy_null = outputs['fuzzy_null']
        terms['fuzzy_null'] = t * self._tanimoto(
            fuzzy_null, torch.zeros_like(fuzzy_null), valid_t
        )
        terms['target'] = self.target_loss(outputs['target'], targets['target'], valid)
        seq = torch.sigmoid(outputs['sequence'])
        perm = self._permutation(
            seq.shape[1],
            seq.device,
            generator if generator is not None else self.generator,
        )
        terms['symmetry'] = self._tanimoto(seq, seq[:, perm], dims=(-4, -2, -1))
        weights = {'fuzzy_target': self.fuzzy_weight, 'fuzzy_null': self.fuzzy_weight}
        total = sum(weights.get(k, 1.0) * v for k, v in terms.items()) / (5 * t + 2)
        return {'loss': total, **terms}
