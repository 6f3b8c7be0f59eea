"""Support-set samplers: which T support windows or items accompany each target.

* :mod:`.support`: :class:`SupportIndexSampler` (non-geo: 'random', 'same_source').
* :mod:`.episode`: :class:`EpisodeSampler` (targets split over DDP ranks; the epoch
  travels with every index to the DataLoader workers).
* :mod:`.geo`: :class:`SupportGeoSampler` (torchgeo 0.10 ``SpatialSampler``:
  'random', 'near', 'stratified'; never overlaps the target).
* :mod:`.inference`: supports at prediction time, ``support_source='raster'``
  (:class:`RasterSupportSelector`) or ``'bank'`` (:class:`SupportBank`).
"""

from .episode import EpisodeIndex, EpisodeSampler
from .geo import GeoEpisodeIndex, SupportGeoSampler
from .inference import SUPPORT_SOURCES, RasterSupportSelector, SupportBank
from .support import SupportIndexSampler

__all__ = (
    'SUPPORT_SOURCES',
    'EpisodeIndex',
    'EpisodeSampler',
    'GeoEpisodeIndex',
    'RasterSupportSelector',
    'SupportBank',
    'SupportGeoSampler',
    'SupportIndexSampler',
)
