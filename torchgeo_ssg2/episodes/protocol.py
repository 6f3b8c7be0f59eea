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
"""

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

__all__ = ('EpisodeIndex', 'SupportPolicy', 'Window2D', 'check_epoch')

#: A 2D GeoSlice ``(slice(xmin, xmax), slice(ymin, ymax))`` in CRS units.
Window2D = tuple[slice, slice]

Key = TypeVar('Key')


class EpisodeIndex(NamedTuple):
    """Index of one episode: the target key and the epoch of its support draw."""

    #: Key of the target (an item index, a window, a pixel offset).
    target: Any
    #: Epoch used to draw the supports (and random patch positions).
    epoch: int


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

    * **never overlap**: no returned key is, or overlaps, the target;
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
