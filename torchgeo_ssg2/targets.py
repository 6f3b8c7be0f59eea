"""Training targets for SSG2: one-hot, multitask and set-operation labels.

Everything here is batched and runs on the device of its input with plain torch
operations (no per-sample Python loops, no OpenCV), so the targets can be built on the
accelerator inside the training step.

The multitask label of a one-hot map has three blocks of ``K`` channels each:

* ``[0:K]`` the one-hot map itself,
* ``[K:2K]`` the boundary map: the one-pixel inner contour of each channel (pixels of
  the channel with a 4-neighbour outside it; the image border is not an edge, as with
  the replicated border of ``cv2.Canny``), dilated with a 3x3 cross. This plays the
  role of ``cv2.Canny(mask, 0, 1)`` followed by ``cv2.dilate`` with a cross kernel in
  the official pipeline; Canny marks a one-pixel line at each transition too, though
  not always on the same side of it,
* ``[2K:3K]`` the distance map: the exact L1 (city-block) distance of every pixel of a
  channel to the nearest pixel outside the channel (``cv2.distanceTransform`` with
  ``DIST_L1``), min-max normalised to [0, 1] per sample and per channel. Pixels beyond
  the image border do not count as outside. A channel with no pixel at all is 0
  everywhere; a channel that covers the whole image is 1 everywhere (its distance to
  the complement is unbounded).

The exact L1 distance transform is separable and each 1D pass is a lower envelope of
cones of slope 1, ``f(i) = min_j g(j) + |i - j|``, which equals
``min(i + cummin_{j<=i}(g(j) - j), -i + cummin_{j>=i}(g(j) + j))``; four
:func:`torch.cummin` calls give the exact transform in O(H*W) per channel.
"""

import torch
from torch import Tensor

__all__ = [
    'boundary_map',
    'distance_map',
    'multitask_labels',
    'one_hot_with_ignore',
    'set_operation_targets',
]


def one_hot_with_ignore(
    mask: Tensor, num_classes: int, ignore_index: int | None = None
) -> tuple[Tensor, Tensor]:
    """One-hot encode a class-index mask, zeroing ignored pixels.

    Args:
        mask: class indices, BxHxW (any integer dtype).
        num_classes: number of classes C.
        ignore_index: index of pixels to ignore, or None.

    Returns:
        ``(onehot, valid)``: the float one-hot map BxCxHxW (all zeros at ignored
        pixels) and the validity mask Bx1xHxW (1 where the pixel is not ignored).

    Raises:
        ValueError: if *mask* is not 3D or holds values outside ``[0, num_classes)``
            other than *ignore_index*.
    """
    if mask.ndim != 3:
        raise ValueError(
            f'one_hot_with_ignore: mask must be BxHxW, got shape {tuple(mask.shape)}'
        )
    if num_classes < 1:
        raise ValueError(
            f'one_hot_with_ignore: num_classes must be >= 1, got {num_classes}'
        )
    if mask.is_floating_point() or mask.is_complex():
        raise ValueError(
            f'one_hot_with_ignore: mask must hold integer class indices, got {mask.dtype}'
        )
    mask = mask.long()
    if ignore_index is None:
        valid = torch.ones_like(mask, dtype=torch.bool)
    else:
        valid = mask != ignore_index
    bad = valid & ((mask < 0) | (mask >= num_classes))
    if bool(bad.any()):
        values = torch.unique(mask[bad]).tolist()[:10]
        raise ValueError(
            f'one_hot_with_ignore: mask holds values {values} outside [0, {num_classes})'
            f' (ignore_index={ignore_index})'
        )
    classes = torch.arange(num_classes, device=mask.device).view(1, -1, 1, 1)
    onehot = (mask.unsqueeze(1) == classes) & valid.unsqueeze(1)
    return onehot.float(), valid.unsqueeze(1).float()


def _check_maps(x: Tensor, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f'{name}: expected a BxKxHxW tensor, got {tuple(x.shape)}')


def boundary_map(onehot: Tensor) -> Tensor:
    """Thick class boundaries of binary maps.

    The one-pixel inner contour of each channel (pixels > 0.5 with a 4-neighbour
    <= 0.5; replicated image border) dilated with a 3x3 cross.

    Args:
        onehot: binary (or soft, thresholded at 0.5) maps BxKxHxW.

    Returns:
        float boundary maps in {0, 1}, BxKxHxW, same dtype as *onehot* when floating.
    """
    _check_maps(onehot, 'boundary_map')
    dtype = onehot.dtype if onehot.is_floating_point() else torch.float32
    fg = onehot > 0.5
    # interior: all 4-neighbours inside too; a missing neighbour beyond the border
    # counts as equal to the pixel (replicated border).
    inner = fg.clone()
    inner[..., 1:, :] &= fg[..., :-1, :]
    inner[..., :-1, :] &= fg[..., 1:, :]
    inner[..., :, 1:] &= fg[..., :, :-1]
    inner[..., :, :-1] &= fg[..., :, 1:]
    edge = fg & ~inner
    out = edge.clone()  # dilation with a 3x3 cross
    out[..., 1:, :] |= edge[..., :-1, :]
    out[..., :-1, :] |= edge[..., 1:, :]
    out[..., :, 1:] |= edge[..., :, :-1]
    out[..., :, :-1] |= edge[..., :, 1:]
    return out.to(dtype)


def _cone_envelope(g: Tensor) -> Tensor:
    """Exact ``f(i) = min_j g(j) + |i - j|`` along the last dimension."""
    idx = torch.arange(g.shape[-1], device=g.device, dtype=g.dtype)
    left = torch.cummin(g - idx, dim=-1).values + idx
    right = torch.cummin((g + idx).flip(-1), dim=-1).values.flip(-1) - idx
    return torch.minimum(left, right)


def distance_map(onehot: Tensor) -> Tensor:
    """Min-max normalised L1 distance transform of binary maps.

    Args:
        onehot: binary (or soft, thresholded at 0.5) maps BxKxHxW.

    Returns:
        distances in [0, 1], BxKxHxW: the city-block distance of each pixel of a
        channel to the nearest pixel outside the channel, divided by its maximum over
        the chip (0 outside the channel; 1 everywhere for a channel covering the chip).
    """
    _check_maps(onehot, 'distance_map')
    dtype = onehot.dtype if onehot.is_floating_point() else torch.float32
    h, w = onehot.shape[-2:]
    fg = onehot > 0.5
    # Any finite value above the largest possible distance (H-1)+(W-1) acts as infinity
    # and keeps the cumulative minima free of inf - inf.
    big = h + w
    # Integer arithmetic is exact and int16 halves the memory traffic of the scans.
    itype = torch.int16 if 2 * big + max(h, w) < 2**15 else torch.int32
    g = fg.to(itype) * big
    d = _cone_envelope(_cone_envelope(g).transpose(-1, -2).contiguous())
    d = d.transpose(-1, -2)
    dmax = d.amax(dim=(-2, -1), keepdim=True)
    full = dmax >= big  # no pixel outside the channel: unbounded distance
    norm = d.to(dtype) / dmax.clamp_min(1).to(dtype)
    return torch.where(full, torch.ones_like(norm), norm)


def multitask_labels(onehot: Tensor) -> Tensor:
    """Stack one-hot, boundary and distance maps into a multitask label.

    Args:
        onehot: one-hot (or multi-hot) maps BxKxHxW.

    Returns:
        Bx3KxHxW: ``[0:K]`` *onehot*, ``[K:2K]`` boundaries, ``[2K:3K]`` distances.
    """
    _check_maps(onehot, 'multitask_labels')
    if not onehot.is_floating_point():
        onehot = onehot.float()
    return torch.cat([onehot, boundary_map(onehot), distance_map(onehot)], dim=1)


def _append_null(onehot: Tensor, valid: Tensor) -> Tensor:
    """Append the NULL channel ``prod_k (1 - y_k)`` (0 at invalid pixels) last."""
    null = torch.prod(1 - onehot, dim=-3, keepdim=True) * valid
    return torch.cat([onehot, null], dim=-3)


def set_operation_targets(
    mask: Tensor,
    support_mask: Tensor,
    num_classes: int,
    ignore_index: int | None = None,
) -> dict[str, Tensor]:
    """Build the SSG2 training targets from target and support class masks.

    Per pixel and class, on the one-hot maps ``y_t`` (target) and ``y_s`` (support):
    intersection ``y_t*y_s``, union ``max(y_t, y_s)``, difference
    ``y_t - min(y_t, y_s)``. A NULL channel ``prod_k (1 - y_k)`` is appended last to
    each (K = num_classes + 1) and to the target one-hot, then the boundary and
    distance blocks are computed on the K channels (:func:`multitask_labels`).

    Ignored pixels are all-zero in every one-hot block, including NULL, and are
    flagged in ``valid`` (target pixel not ignored) and ``support_valid`` (target and
    support pixel both not ignored); losses must weight by these masks.

    Args:
        mask: target class indices, BxHxW.
        support_mask: support class indices, BxTxHxW.
        num_classes: number of real classes.
        ignore_index: class index to ignore, or None.

    Returns:
        dict of float tensors: ``"target"`` Bx3KxHxW; ``"intersection"``,
        ``"union"``, ``"difference"`` BxTx3KxHxW; ``"valid"`` Bx1xHxW;
        ``"support_valid"`` BxTx1xHxW.

    Raises:
        ValueError: on inconsistent shapes or out-of-range class indices.
    """
    if mask.ndim != 3 or support_mask.ndim != 4:
        raise ValueError(
            'set_operation_targets: expected mask BxHxW and support_mask BxTxHxW, got '
            f'{tuple(mask.shape)} and {tuple(support_mask.shape)}'
        )
    b, t, h, w = support_mask.shape
    if mask.shape != (b, h, w):
        raise ValueError(
            f'set_operation_targets: mask {tuple(mask.shape)} does not match '
            f'support_mask {tuple(support_mask.shape)} (batch and spatial sizes)'
        )
    if t < 1:
        raise ValueError('set_operation_targets: support_mask needs T >= 1')
    yt, valid = one_hot_with_ignore(mask, num_classes, ignore_index)
    ys, svalid = one_hot_with_ignore(
        support_mask.reshape(b * t, h, w), num_classes, ignore_index
    )
    ys = ys.view(b, t, num_classes, h, w)
    svalid = svalid.view(b, t, 1, h, w) * valid.unsqueeze(1)
    yt5 = yt.unsqueeze(1)
    # A pixel ignored in either mask has no set-operation label: zero it everywhere.
    inter = yt5 * ys
    union = torch.maximum(yt5, ys) * svalid
    diff = (yt5 - torch.minimum(yt5, ys)) * svalid
    k = num_classes + 1
    target = _append_null(yt, valid)  # BxKxHxW
    setops = torch.stack(
        [_append_null(x, svalid) for x in (inter, union, diff)], dim=0
    )  # 3xBxTxKxHxW
    # One batched call for the target and all set-operation maps.
    allmaps = torch.cat([target, setops.reshape(3 * b * t, k, h, w)], dim=0)
    labels = multitask_labels(allmaps)
    target_lbl = labels[:b]
    inter_lbl, union_lbl, diff_lbl = labels[b:].view(3, b, t, 3 * k, h, w).unbind(0)
    return {
        'target': target_lbl,
        'intersection': inter_lbl,
        'union': union_lbl,
        'difference': diff_lbl,
        'valid': valid,
        'support_valid': svalid,
    }
