"""The support-policy protocol: which T support keys accompany a target key.

An *episode* is one target sample plus T support samples. Every part of the
package that builds episodes (non-geo training, geo training, inference) splits
the work the same way:

* a **torch sampler** runs in the main process and yields
  :class:`EpisodeIndex` ``(target, epoch)`` pairs, so the epoch travels with
  every index to every DataLoader worker and DDP rank (the one way the epoch is
  carried);
* a **support policy** (:class:`SupportPolicy`) maps ``(target, epoch)`` to the
  keys of the supports, as a pure function of its seed, the epoch and the target;
* a **reader** turns a key into a sample.

A *key* is whatever the reader is indexed by: an item index of a map-style
dataset, a ``(slice(x0, x1), slice(y0, y1))`` GeoSlice window of a
:class:`~torchgeo.datasets.GeoDataset`, or a ``(row_off, col_off)`` pixel
offset of a raster.

Two keys *overlap* when their samples share pixels: their windows lie on the
same source and the gap between their edges is negative along both x and y
(windows whose edges touch do not overlap). :func:`window_gap` is that gap, and
:class:`Footprint` names the source and window of a key whose window is not the
key itself (a patch of a map-style dataset).
"""

from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

__all__ = (
    'EpisodeIndex',
    'Footprint',
    'SupportPolicy',
    'Window2D',
    'check_epoch',
    'footprints_overlap',
    'window_gap',
)

#: A 2D GeoSlice ``(slice(xmin, xmax), slice(ymin, ymax))`` in CRS units.
Window2D = tuple[slice, slice]

Key = TypeVar('Key')


class EpisodeIndex(NamedTuple):
    """Index of one episode: the target key and the epoch of its support draw."""

    #: Key of the target (an item index, a window, a pixel offset).
    target: Any
    #: Epoch used to draw the supports (and random patch positions).
    epoch: int


class Footprint(NamedTuple):
    """Where the sample of a key lies: its source and its window on that source."""

    #: Source of the sample (e.g. the index of an image in a map-style dataset).
    source: Hashable
    #: Window ``(slice(x0, x1), slice(y0, y1))`` on the source, in the source's
    #: units (columns and rows of pixels for an image).
    window: Window2D


def window_gap(a: Window2D, b: Window2D) -> float:
    """Gap between the edges of two windows.

    Args:
        a: A window ``(slice(x0, x1), slice(y0, y1))``.
        b: Another window, in the same units.

    Returns:
        The larger of the x and y gaps between the windows' edges: negative if
        the windows overlap, zero if their edges touch, positive if they are
        apart.
    """
    (ax, ay), (bx, by) = a, b
    gap_x = max(ax.start - bx.stop, bx.start - ax.stop)
    gap_y = max(ay.start - by.stop, by.start - ay.stop)
    return max(gap_x, gap_y)


def footprints_overlap(a: Footprint, b: Footprint) -> bool:
    """Whether two footprints share area.

    Args:
        a: A footprint.
        b: Another footprint.

    Returns:
        True if both lie on the same source and their windows overlap
        (:func:`window_gap` < 0); touching edges do not overlap.
    """
    return a.source == b.source and window_gap(a.window, b.window) < 0


def check_epoch(epoch: int) -> int:
    """Validate an epoch.

    Args:
        epoch: The epoch.

    Returns:
        The epoch as an int.

    Raises:
        ValueError: If the epoch is negative.
    """
    epoch = int(epoch)
    if epoch < 0:
        raise ValueError(f'epoch must be >= 0, got {epoch}')
    return epoch


@runtime_checkable
class SupportPolicy(Protocol[Key]):
    """Draws the support keys of one target key.

    Contract of every implementation:

    * **never overlap**: no returned key is, or overlaps, the target: no support
      sample shares a pixel of the target's source with the target sample
      (edges may touch);
    * **determinism**: the result is a pure function of the policy's seed, the
      epoch and the target (not of call order, global RNG state, worker or rank);
      with ``fixed`` the epoch is ignored (validation, test, prediction);
    * **length**: at least :attr:`sequence_length` keys. The first
      :attr:`sequence_length` are the supports; any further keys are spares, used
      in order by :class:`~torchgeo_ssg2.episodes.EpisodeDataset` to replace a
      support that reads as mostly nodata.

    Attributes:
        sequence_length: Number of supports T.
        seed: Base seed of all draws.
        fixed: Whether the draws ignore the epoch.
    """

    sequence_length: int
    seed: int
    fixed: bool

    def draw(self, target_key: Key, epoch: int = 0) -> Sequence[Key]:
        """Support keys of one target.

        Args:
            target_key: Key of the target.
            epoch: Training epoch (>= 0; ignored when ``fixed``).

        Returns:
            ``sequence_length`` support keys, then any spares.
        """
        ...
