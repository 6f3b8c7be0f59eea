"""Episodes: a target and its T supports, built one way for every dataset.

* :mod:`.protocol`: :class:`SupportPolicy` (``draw(target_key, epoch) -> support
  keys``) and :class:`EpisodeIndex` ``(target, epoch)``, the one carrier of the
  epoch.
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
from .index import IndexStrategy, IndexSupportPolicy, draw_without_target
from .protocol import EpisodeIndex, SupportPolicy, Window2D, check_epoch
from .sampler import EpisodeSampler

__all__ = (
    'EpisodeAugmentation',
    'EpisodeDataset',
    'EpisodeIndex',
    'EpisodeReader',
    'EpisodeSampler',
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
    'infer_nodata',
)
