"""datasets."""

from .dubai import DubaiAerial
from .episodes import (
    EpisodeDataset,
    EpisodeEpochCallback,
    GeoEpisodeDataset,
    set_episode_epoch,
)
from .images import UnreadableImageError
from .isic import ISIC2018
from .potsdam import Potsdam, PotsdamProtocol, PreparedPotsdam

__all__: tuple[str, ...] = (
    'ISIC2018',
    'DubaiAerial',
    'EpisodeDataset',
    'EpisodeEpochCallback',
    'GeoEpisodeDataset',
    'Potsdam',
    'PotsdamProtocol',
    'PreparedPotsdam',
    'UnreadableImageError',
    'set_episode_epoch',
)
