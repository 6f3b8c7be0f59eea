"""ISPRS Potsdam: classes, tiles, bands and the two evaluation protocols.

Class indices follow :class:`torchgeo.datasets.Potsdam2D` (clutter is 0). Two
evaluation protocols are available by name (:data:`PROTOCOLS`):

* ``"geoseg"``: 5 classes, clutter excluded (mapped to the ignore index), tile 7_10
  dropped, evaluation on the eroded labels (``5_Labels_all_noBoundary``), as in
  GeoSeg/UNetFormer;
* ``"full"``: 6 classes including clutter, full labels (``5_Labels_all``) everywhere.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from torchgeo.datasets import (
    Potsdam2D,
)

__all__ = (
    'ALL_BANDS',
    'BAND_SETS',
    'CLASSES',
    'COLORMAP',
    'IGNORE_INDEX',
    'PROTOCOLS',
    'TEST_TILES',
    'TRAIN_TILES',
    'PotsdamProtocol',
    'get_protocol',
    'split_tiles',
)

#: Class names, in torchgeo's :class:`~torchgeo.datasets.Potsdam2D` order.
CLASSES: tuple[str, ...] = tuple(Potsdam2D.classes)

#: RGB label colours, in the same order as :data:`CLASSES`.
COLORMAP: tuple[tuple[int, int, int], ...] = tuple(
    (int(r), int(g), int(b)) for r, g, b in Potsdam2D.colormap
)

#: Colour of the boundary pixels of the eroded label set (``5_Labels_all_noBoundary``).
BOUNDARY_COLOR = (0, 0, 0)

#: Mask value for pixels excluded from losses and metrics (eroded boundaries, the
#: clutter class under the ``"geoseg"`` protocol, pixels outside every tile).
IGNORE_INDEX = 255

#: Every band of the SSG2 input, in the order of the prepared image stack.
ALL_BANDS: tuple[str, ...] = ('R', 'G', 'B', 'IR', 'DSM')

#: Named band selections.
BAND_SETS: dict[str, tuple[str, ...]] = {
    'RGB': ('R', 'G', 'B'),
    'IRRG': ('IR', 'R', 'G'),
    'RGBIR': ('R', 'G', 'B', 'IR'),
    'RGBIR+DSM': ('R', 'G', 'B', 'IR', 'DSM'),
}


def _tile_sort_key(tile: str) -> tuple[int, int]:
    a, b = tile.split('_')
    return int(a), int(b)


def _strip(names: Sequence[str]) -> tuple[str, ...]:
    return tuple(
        sorted((n.removeprefix('top_potsdam_') for n in names), key=_tile_sort_key)
    )


#: The 24 tiles of the official training split (``"2_10"`` … ``"7_12"``).
TRAIN_TILES: tuple[str, ...] = _strip(Potsdam2D.splits['train'])

#: The 14 tiles of the official test split.
TEST_TILES: tuple[str, ...] = _strip(Potsdam2D.splits['test'])

#: The tile GeoSeg drops for its "error annotations".
_BAD_TILE = '7_10'

LabelSet = Literal['full', 'eroded']


@dataclass(frozen=True)
class PotsdamProtocol:
    """An evaluation protocol: which classes are scored and which labels are used.

    Masks are stored in torchgeo's 6-class order (:data:`CLASSES`); :meth:`remap` maps
    them to the protocol's class indices.
    """

    #: The protocol's name, recorded with the metrics it produces.
    name: str
    #: Class names scored under the protocol, in index order.
    classes: tuple[str, ...]
    #: Label colours of those classes (for plotting).
    colormap: tuple[tuple[int, int, int], ...]
    #: For every stored value 0..255 the protocol's class index (or the ignore index).
    lookup: tuple[int, ...] = field(repr=False)
    #: Label set for training.
    train_labels: LabelSet
    #: Label set for validation and test.
    eval_labels: LabelSet
    #: Whether tile 7_10 is dropped from training by default.
    drop_7_10: bool
    #: Value of excluded pixels.
    ignore_index: int = IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        """Number of real classes scored under the protocol."""
        return len(self.classes)

    def labels_for(self, split: str) -> LabelSet:
        """Return the label set a split uses.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            ``"full"`` or ``"eroded"``.
        """
        return self.train_labels if split == 'train' else self.eval_labels

    def remap(self, mask: Tensor) -> Tensor:
        """Map a mask in torchgeo's class order to the protocol's indices.

        Args:
            mask: integer mask of any shape, values in 0..255.

        Returns:
            long tensor of the same shape on the same device.
        """
        lut = torch.tensor(self.lookup, dtype=torch.long, device=mask.device)
        return lut[mask.long()]


def _make_protocol(
    name: str,
    excluded: Sequence[str],
    train_labels: LabelSet,
    eval_labels: LabelSet,
    drop_7_10: bool,
) -> PotsdamProtocol:
    lookup = [IGNORE_INDEX] * 256
    classes: list[str] = []
    colors: list[tuple[int, int, int]] = []
    for i, (cls, color) in enumerate(zip(CLASSES, COLORMAP, strict=True)):
        if cls in excluded:
            continue
        lookup[i] = len(classes)
        classes.append(cls)
        colors.append(color)
    return PotsdamProtocol(
        name=name,
        classes=tuple(classes),
        colormap=tuple(colors),
        lookup=tuple(lookup),
        train_labels=train_labels,
        eval_labels=eval_labels,
        drop_7_10=drop_7_10,
    )


#: The evaluation protocols by name.
PROTOCOLS: dict[str, PotsdamProtocol] = {
    'geoseg': _make_protocol(
        'geoseg', ('Clutter/background',), 'full', 'eroded', drop_7_10=True
    ),
    'full': _make_protocol('full', (), 'full', 'full', drop_7_10=False),
}


def get_protocol(protocol: str | PotsdamProtocol) -> PotsdamProtocol:
    """Look a protocol up by name.

    Args:
        protocol: a name from :data:`PROTOCOLS` or a protocol.

    Returns:
        The protocol.

    Raises:
        ValueError: If the name is unknown.
    """
    if isinstance(protocol, PotsdamProtocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(
            f'unknown Potsdam protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}'
        )
    return PROTOCOLS[protocol]


def split_tiles(
    split: str, val_tiles: Sequence[str] = ('2_10',), drop_7_10: bool = False
) -> tuple[str, ...]:
    """Return the tiles of a split.

    Args:
        split: ``"train"`` (the official 24 training tiles less the validation tiles
            and, optionally, 7_10), ``"val"`` (the validation tiles) or ``"test"``
            (the official 14 test tiles).
        val_tiles: tiles taken out of the official training split for validation.
        drop_7_10: whether to drop tile 7_10 (erroneous annotations) from training.

    Returns:
        Tile ids such as ``"2_10"``.

    Raises:
        ValueError: If the split is unknown or a validation tile is not an official
            training tile.
    """
    unknown = [t for t in val_tiles if t not in TRAIN_TILES]
    if unknown:
        raise ValueError(
            f'validation tiles {unknown} are not official training tiles {TRAIN_TILES}'
        )
    if split == 'train':
        return tuple(
            t
            for t in TRAIN_TILES
            if t not in val_tiles and not (drop_7_10 and t == _BAD_TILE)
        )
    if split == 'val':
        return tuple(val_tiles)
    if split == 'test':
        return TEST_TILES
    raise ValueError(f"unknown split {split!r}; choose 'train', 'val' or 'test'")


def _resolve_bands(bands: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(bands, str):
        if bands not in BAND_SETS:
            raise ValueError(
                f'unknown band set {bands!r}; choose one of {sorted(BAND_SETS)} '
                f'or a sequence of {ALL_BANDS}'
            )
        return BAND_SETS[bands]
    bands = tuple(bands)
    bad = [b for b in bands if b not in ALL_BANDS]
    if bad or not bands:
        raise ValueError(f'invalid bands {bands!r}; each must be one of {ALL_BANDS}')
    return bands
