"""Episodes: a target and its T supports, built one way for every dataset.

* :mod:`.protocol`: :class:`SupportPolicy` (``draw(target_key, epoch) -> support
  keys``), :class:`EpisodeIndex` ``(target, epoch)``, the one carrier of the
  epoch, and :class:`Footprint` (where a key's sample lies, to keep supports off
  the target).
* :mod:`.index`: :class:`IndexSupportPolicy` (map-style datasets: ``'random'``,
  ``'same_source'``).
* :mod:`.geo`: :class:`GeoSupportPolicy` (GeoDataset windows: ``'random'``,
  ``'near'``, ``'stratified'``) and :class:`GeoEpisodeSampler` (target windows).
* :mod:`.sampler`: :class:`EpisodeSampler` (target indices, DDP shares).
* :mod:`.dataset`: :class:`EpisodeDataset` (target + supports through any
  :class:`EpisodeReader`).
* :mod:`.augmentation`: :class:`EpisodeAugmentation` (kornia, for ``train_aug``).
"""

from .augmentation import EpisodeAugmentation
from .dataset import (
    EpisodeDataset,
    EpisodeReader,
    GeoReader,
    ItemReader,
    infer_nodata,
)
from .geo import GeoEpisodeSampler, GeoStrategy, GeoSupportPolicy
from .index import FootprintOf, IndexStrategy, IndexSupportPolicy, draw_without_target
from .protocol import (
    EpisodeIndex,
    Footprint,
    SupportPolicy,
    Window2D,
    check_epoch,
    footprints_overlap,
    window_gap,
)
from .sampler import EpisodeSampler

__all__ = (
    'EpisodeAugmentation',
    'EpisodeDataset',
    'EpisodeIndex',
    'EpisodeReader',
    'EpisodeSampler',
    'Footprint',
    'FootprintOf',
    'GeoEpisodeSampler',
    'GeoReader',
    'GeoStrategy',
    'GeoSupportPolicy',
    'IndexStrategy',
    'IndexSupportPolicy',
    'ItemReader',
    'SupportPolicy',
    'Window2D',
    'check_epoch',
    'draw_without_target',
    'footprints_overlap',
    'infer_nodata',
    'window_gap',
)
