"""Support policy of map-style datasets: support item indices of a target index.

SSG2 conditions the segmentation of a target image on a sequence of T labelled
*support* images. The official code draws the T supports uniformly at random with
replacement from the whole pool, including the target itself. This module draws
them reproducibly and never returns the target, nor, when the items are patches
of larger images, a patch that overlaps the target on its image.

Every draw uses its own :class:`numpy.random.Generator` seeded from
``SeedSequence([seed, epoch, target])``. The supports of a target therefore depend
only on ``(seed, epoch, target)``: not on the order in which targets are visited,
on global RNG state, on the number of DataLoader workers, or on the DDP rank.
"""

import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import Literal

import numpy as np

from .protocol import Footprint, check_epoch, footprints_overlap

__all__ = (
    'FootprintOf',
    'IndexStrategy',
    'IndexSupportPolicy',
    'draw_without_target',
)

#: Names of the index support strategies.
IndexStrategy = Literal['random', 'same_source']

#: ``(item index, epoch) -> Footprint``: where an item's sample lies in an epoch,
#: e.g. :meth:`~torchgeo_ssg2.datasets.RandomPatchDataset.footprint`.
FootprintOf = Callable[[int, int], Footprint]


def draw_without_target(
    rng: np.random.Generator, pool_size: int, target_pos: int | None, count: int
) -> np.ndarray:
    """Draw *count* positions from ``range(pool_size)`` that are not *target_pos*.

    Draws without replacement when at least *count* positions are available, and
    with replacement only when the pool (without the target) is smaller than
    *count*.

    Args:
        rng: Generator to draw from.
        pool_size: Number of positions in the pool, target included.
        target_pos: Position of the target inside the pool, or None if the target
            is not part of the pool.
        count: Number of positions to draw.

    Returns:
        Integer array of shape (count,) with positions in ``[0, pool_size)``.

    Raises:
        ValueError: If the pool holds no position other than the target.
    """
    available = pool_size - (target_pos is not None)
    if available <= 0:
        raise ValueError(
            f'cannot draw supports: the pool holds {pool_size} item(s) and none '
            'besides the target'
        )
    replace = available < count
    pos = rng.choice(available, size=count, replace=replace)
    if target_pos is not None:
        # Skip over the target: positions >= target_pos move up by one.
        pos = pos + (pos >= target_pos)
    return pos.astype(np.int64)


class IndexSupportPolicy:
    """The :class:`~torchgeo_ssg2.episodes.SupportPolicy` of map-style datasets.

    Draws the T support indices of every target index.

    Strategies:

    * ``'random'``: uniform over all items except the target (the paper's rule,
      without the target leak).
    * ``'same_source'``: uniform over the items of the target's group (the same
      source image or tile, given by *groups*; for patches, other windows of the
      same image), except the target. **Fallback:** if the target has no
      admissible support in its group (it is the only member, or, with
      *footprints*, every other member overlaps it), the supports are drawn as
      for ``'random'`` (from the whole pool except the target);
      :meth:`falls_back` tells whether that happens for a target.

    **No overlap.** When items are patches of larger images (a
    :class:`~torchgeo_ssg2.datasets.RandomPatchDataset` or
    :class:`~torchgeo_ssg2.datasets.GridPatchDataset`), distinct items can share
    pixels. Given *footprints* (the patch dataset's ``footprint`` method), a
    candidate whose footprint overlaps the target's footprint in the episode's
    epoch (same image, windows sharing pixels; touching edges are allowed) is
    never drawn. If no item at all is admissible for a target (e.g. every item
    is a patch of one image smaller than two patches), :meth:`draw` raises
    :class:`ValueError`. Without *footprints*, items are taken to share no
    pixels.

    Supports are drawn without replacement unless the pool is smaller than T, in
    which case (and only then) they are drawn with replacement. That case is
    allowed (a small dataset can still be trained on) but not silent: the
    constructor warns (:class:`UserWarning`) when T exceeds the distinct supports
    available to some target, saying for how many targets and how many
    supports they have. With *footprints*, the admissible candidates are drawn
    in random order and, when fewer than T, all of them are used before the rest
    are drawn from them with replacement; the constructor's warning counts
    items, so it does not cover candidates left out by overlap.

    Args:
        num_items: Number of items in the dataset.
        sequence_length: Number of supports T per target (>= 1).
        strategy: ``'random'`` or ``'same_source'``.
        groups: One hashable group id per item (e.g. the source image or tile id);
            required for ``'same_source'``, ignored by ``'random'``.
        seed: Base seed of all draws.
        fixed: If True, the supports ignore the epoch (use for validation, test
            and predict, so that every evaluation sees the same supports). The
            footprints are still those of the episode's epoch, so with
            epoch-dependent footprints (random patches) only the overlap check
            depends on the epoch.
        footprints: Where each item's sample lies in an epoch (e.g. the
            ``footprint`` method of a patch dataset); candidates overlapping the
            target are rejected. None if items never share pixels.

    Raises:
        ValueError: If an argument is invalid or the dataset has fewer than two
            items.
    """

    def __init__(
        self,
        num_items: int,
        sequence_length: int,
        strategy: IndexStrategy = 'random',
        groups: Sequence[Hashable] | None = None,
        seed: int = 0,
        fixed: bool = False,
        footprints: FootprintOf | None = None,
    ) -> None:
        if num_items < 2:
            raise ValueError(
                f'IndexSupportPolicy needs at least 2 items (a target and a '
                f'support), got num_items={num_items}'
            )
        if sequence_length < 1:
            raise ValueError(f'sequence_length must be >= 1, got {sequence_length}')
        if strategy not in ('random', 'same_source'):
            raise ValueError(
                f"unknown support strategy {strategy!r}: use 'random' or 'same_source'"
            )
        if seed < 0:
            raise ValueError(f'seed must be >= 0, got {seed}')
        self.num_items = int(num_items)
        self.sequence_length = int(sequence_length)
        self.strategy = strategy
        self.seed = int(seed)
        self.fixed = fixed
        self.footprints = footprints

        self._group_of: np.ndarray | None = None
        self._members: list[np.ndarray] = []
        self._position: np.ndarray | None = None
        if strategy == 'same_source':
            if groups is None:
                raise ValueError("strategy 'same_source' needs groups (one per item)")
            if len(groups) != num_items:
                raise ValueError(
                    f'groups has {len(groups)} entries but num_items={num_items}'
                )
            ids: dict[Hashable, int] = {}
            group_of = np.array([ids.setdefault(g, len(ids)) for g in groups])
            order = np.argsort(group_of, kind='stable')
            starts = np.searchsorted(group_of[order], np.arange(len(ids) + 1))
            self._members = [order[starts[g] : starts[g + 1]] for g in range(len(ids))]
            position = np.empty(num_items, dtype=np.int64)
            for members in self._members:
                position[members] = np.arange(len(members))
            self._group_of = group_of
            self._position = position
        self._warn_repeats()

    def _warn_repeats(self) -> None:
        """Warn when some target has fewer distinct supports than T."""
        t = self.sequence_length
        if self._group_of is None:
            available = np.full(self.num_items, self.num_items - 1)
        else:
            sizes = np.array([len(m) for m in self._members])[self._group_of]
            # A target alone in its group falls back to the whole pool.
            available = np.where(sizes < 2, self.num_items, sizes) - 1
        short = available < t
        if short.any():
            warnings.warn(
                f'{self.strategy!r} supports: {int(short.sum())} of '
                f'{self.num_items} target(s) have as few as {int(available.min())} '
                f'distinct support(s) for sequence_length={t}, so their supports '
                'repeat; use a shorter sequence_length or more items',
                UserWarning,
                stacklevel=3,
            )

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}(num_items={self.num_items}, '
            f'sequence_length={self.sequence_length}, strategy={self.strategy!r}, '
            f'seed={self.seed}, fixed={self.fixed})'
        )

    def rng(self, target_index: int, epoch: int = 0) -> np.random.Generator:
        """The generator of one draw.

        Args:
            target_index: Index of the target item.
            epoch: Training epoch (ignored when ``fixed``).

        Returns:
            A new generator seeded from ``(seed, epoch, target_index)``.
        """
        epoch = check_epoch(epoch)
        epoch = 0 if self.fixed else epoch
        return np.random.default_rng(
            np.random.SeedSequence([self.seed, epoch, int(target_index)])
        )

    def falls_back(self, target_index: int, epoch: int = 0) -> bool:
        """Whether ``'same_source'`` falls back to ``'random'`` for this target.

        Args:
            target_index: Index of the target item in ``[0, num_items)``.
            epoch: Training epoch (used only through *footprints*).

        Returns:
            True if the strategy is ``'same_source'`` and no other member of the
            target's group is admissible: the target is alone in its group or,
            with *footprints*, every other member overlaps it in this epoch.

        Raises:
            IndexError: If *target_index* is out of range.
        """
        target_index = self._check_index(target_index)
        if self._group_of is None:
            return False
        members = self._members[self._group_of[target_index]]
        if self.footprints is None:
            return len(members) < 2
        epoch = check_epoch(epoch)
        target = self.footprints(target_index, epoch)
        return not any(
            j != target_index
            and not footprints_overlap(self.footprints(j, epoch), target)
            for j in members.tolist()
        )

    def _check_index(self, target_index: int) -> int:
        """Validate a target index.

        Args:
            target_index: Index of the target item.

        Returns:
            The index as an int.

        Raises:
            IndexError: If *target_index* is out of range.
        """
        target_index = int(target_index)
        if not 0 <= target_index < self.num_items:
            raise IndexError(
                f'target_index {target_index} out of range for {self.num_items} items'
            )
        return target_index

    def draw(self, target_index: int, epoch: int = 0) -> list[int]:
        """Support indices of one target.

        Args:
            target_index: Index of the target item in ``[0, num_items)``.
            epoch: Training epoch (ignored when ``fixed``, except by the
                footprints).

        Returns:
            T indices, none equal to *target_index* and, with *footprints*, none
            overlapping it.

        Raises:
            IndexError: If *target_index* is out of range.
            ValueError: If, with *footprints*, every other item overlaps the
                target.
        """
        target_index = self._check_index(target_index)
        rng = self.rng(target_index, epoch)
        if self.footprints is not None:
            return self._draw_clear(rng, target_index, check_epoch(epoch))
        t = self.sequence_length
        if self._group_of is not None and not self.falls_back(target_index):
            assert self._position is not None
            members = self._members[self._group_of[target_index]]
            pos = draw_without_target(
                rng, len(members), int(self._position[target_index]), t
            )
            return members[pos].tolist()
        return draw_without_target(rng, self.num_items, target_index, t).tolist()

    def _draw_clear(
        self, rng: np.random.Generator, target_index: int, epoch: int
    ) -> list[int]:
        """Supports whose footprints do not overlap the target's.

        The candidates (the target's group for ``'same_source'``, then the whole
        pool) are visited in a random order; the first T admissible ones are the
        supports. If fewer are admissible, all of them are used and the rest are
        drawn from them with replacement.

        Args:
            rng: Generator of the draw.
            target_index: Index of the target item.
            epoch: Epoch of the footprints.

        Returns:
            T indices.

        Raises:
            ValueError: If no item is admissible.
        """
        assert self.footprints is not None
        t = self.sequence_length
        target = self.footprints(target_index, epoch)
        pools: list[np.ndarray] = [np.arange(self.num_items)]
        if self._group_of is not None:
            pools.insert(0, self._members[self._group_of[target_index]])
        for pool in pools:
            chosen: list[int] = []
            for j in pool[rng.permutation(len(pool))].tolist():
                if j == target_index:
                    continue
                if not footprints_overlap(self.footprints(j, epoch), target):
                    chosen.append(j)
                    if len(chosen) == t:
                        return chosen
            if chosen:
                extra = rng.integers(len(chosen), size=t - len(chosen)).tolist()
                return chosen + [chosen[k] for k in extra]
        raise ValueError(
            f'cannot draw supports of target {target_index} (epoch {epoch}): every '
            f'other item overlaps it ({target}); use smaller patches or more images'
        )
