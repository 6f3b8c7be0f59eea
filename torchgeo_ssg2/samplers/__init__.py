"""Support-set samplers: which T support windows or items accompany each target."""

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
