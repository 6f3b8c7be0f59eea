"""Plotting helpers: the one place where samples and episodes are drawn."""

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import Tensor
from torchgeo.datasets.utils import Sample, draw_semantic_segmentation_masks

__all__ = ('display_image', 'label_colormap', 'plot_episode', 'plot_segmentation')


def label_colormap(
    colormap: Sequence[Sequence[int]] | None, num_classes: int
) -> ListedColormap:
    """Colormap for class maps: classes, then NULL (grey); 255 is black.

    Args:
        colormap: RGB (0-255) per class, or None for matplotlib's tab10.
        num_classes: Number of real classes.

    Returns:
        A 256-entry colormap, to use with ``vmin=0, vmax=255``.
    """
    colors = np.zeros((256, 3))
    if colormap is None:
        tab = plt.get_cmap('tab10')
        colors[:num_classes] = [tab(i % 10)[:3] for i in range(num_classes)]
    else:
        colors[:num_classes] = np.asarray(colormap, dtype=float)[:num_classes] / 255
    colors[num_classes] = (0.6, 0.6, 0.6)
    return ListedColormap(colors)


def display_image(image: Tensor, stretch: bool = False) -> np.ndarray:
    """Scale a (C, H, W) image to an (H, W, 3) array in [0, 1] for display.

    Args:
        image: Image; its first three bands are shown (one band as grey).
        stretch: Stretch every band between its 2nd and 98th percentiles;
            otherwise values in [0, 255] are shown as they are and others are
            min-max scaled.

    Returns:
        Displayable RGB array.
    """
    x = image[:3].detach().float().cpu()
    if x.shape[0] == 1:
        x = x.expand(3, *x.shape[1:])
    if stretch:
        flat = x.flatten(1)
        lo = flat.quantile(0.02, dim=1)[:, None, None]
        hi = flat.quantile(0.98, dim=1)[:, None, None]
        x = (x - lo) / (hi - lo).clamp_min(1e-6)
    else:
        lo, hi = float(x.min()), float(x.max())
        x = x / 255 if lo >= 0 and 1 < hi <= 255 else (x - lo) / max(hi - lo, 1e-12)
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def plot_segmentation(
    image: Tensor,
    mask: Tensor | None,
    colormap: Sequence[Sequence[int]],
    prediction: Tensor | None = None,
    show_titles: bool = True,
    suptitle: str | None = None,
    alpha: float = 0.5,
    stretch: bool = False,
) -> Figure:
    """Plot an image with its mask and optional prediction overlaid.

    Args:
        image: (C, H, W) image; the first three bands are shown.
        mask: (H, W) class indices, or None; values outside the colormap (such as
            an ignore index) are not drawn.
        colormap: RGB (0-255) colour of each class.
        prediction: Optional (H, W) predicted class indices.
        show_titles: Whether to title the panels.
        suptitle: Optional figure title.
        alpha: Opacity of the overlays.
        stretch: Percentile stretch of the image (see :func:`display_image`).

    Returns:
        The figure: Image, then Mask and Prediction when given.
    """
    shown = display_image(image, stretch)
    rgb = torch.from_numpy(shown * 255).round().to(torch.uint8).permute(2, 0, 1)
    colors = [tuple(int(v) for v in c) for c in colormap]
    panels: list[tuple[str, np.ndarray]] = [('Image', shown)]
    for title, target in (('Mask', mask), ('Prediction', prediction)):
        if target is not None:
            overlay = draw_semantic_segmentation_masks(
                rgb, target.detach().cpu().long(), alpha=alpha, colors=colors
            )
            panels.append((title, overlay))
    fig, axs = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (title, array) in zip(axs[0], panels, strict=True):
        ax.imshow(array)
        ax.axis('off')
        if show_titles:
            ax.set_title(title)
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


def plot_episode(
    sample: Sample,
    colormap: Sequence[Sequence[int]] | None = None,
    classes: Sequence[str] | None = None,
    show_titles: bool = True,
    suptitle: str | None = None,
) -> Figure:
    """Plot an SSG2 episode: the target row and one row per support.

    Row 0: image | mask | prediction | uncertainty (those present).
    Row 1 + t: support image | support mask | intersection view | union view of
    step t: the predicted T-intersect-S_t and T-union-S_t class maps (NULL in grey, ignored pixels
    black). The intersections are the per-step "partial views" of the target: each
    shows the part of the target that support t confirms.

    Args:
        sample: ``image`` (C, H, W), ``mask`` (H, W), optional ``prediction``
            (H, W) and ``uncertainty`` (H, W); optional ``support_image``
            (T, C, H, W), ``support_mask`` (T, H, W) and the per-step
            ``intersection`` / ``union`` class maps (T, H, W) with the NULL
            class at index ``num_classes``.
        colormap: RGB (0-255) per class.
        classes: Class names (their number sets the NULL index); inferred from
            *colormap* if None.
        show_titles: Show panel titles.
        suptitle: Optional figure title.

    Returns:
        The figure.
    """
    if classes is not None:
        num_classes = len(classes)
    elif colormap is not None:
        num_classes = len(colormap)
    else:
        labels = [sample[k] for k in ('mask', 'prediction') if k in sample]
        num_classes = max([int(x[x != 255].max()) + 1 for x in labels if x.numel()])
    cmap = label_colormap(colormap, num_classes)

    def label(ax: Any, data: Tensor) -> None:
        ax.imshow(
            data.cpu().numpy(), cmap=cmap, vmin=0, vmax=255, interpolation='nearest'
        )

    rows: list[list[tuple[str, Any]]] = []
    top: list[tuple[str, Any]] = [
        ('Image', lambda ax: ax.imshow(display_image(sample['image'])))
    ]
    for key, title in (('mask', 'Mask'), ('prediction', 'Prediction')):
        if key in sample:
            top.append((title, lambda ax, k=key: label(ax, sample[k])))
    if 'uncertainty' in sample:
        top.append(
            (
                'Uncertainty',
                lambda ax: ax.imshow(
                    sample['uncertainty'].float().cpu().numpy(),
                    cmap='magma',
                    vmin=0,
                    vmax=1,
                ),
            )
        )
    rows.append(top)
    steps = sample['support_image'].shape[0] if 'support_image' in sample else 0
    for t in range(steps):
        row: list[tuple[str, Any]] = [
            (
                f'Support {t + 1}',
                lambda ax, t=t: ax.imshow(display_image(sample['support_image'][t])),
            )
        ]
        for key, title in (
            ('support_mask', f'Support mask {t + 1}'),
            ('intersection', f'T \u2229 S{t + 1}'),
            ('union', f'T \u222a S{t + 1}'),
        ):
            if key in sample:
                row.append((title, lambda ax, k=key, t=t: label(ax, sample[k][t])))
        rows.append(row)

    ncols = max(len(r) for r in rows)
    fig, axs = plt.subplots(
        len(rows), ncols, figsize=(3 * ncols, 3 * len(rows)), squeeze=False
    )
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axs[r][c]
            ax.axis('off')
            if c < len(row):
                title, draw = row[c]
                draw(ax)
                if show_titles:
                    ax.set_title(title, fontsize=9)
    if suptitle is not None:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
